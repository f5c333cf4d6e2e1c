// Learned-range ops: validation, per-slot constants, the work plan (parameter axis moved to
// the front, chunks of kReductionChunk), ParallelFor over work units with one dynamic dispatch
// per unit, and the chunk-ordered fold of the gradient partial sums.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/learned_range.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "ops/learned_range-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkit::HWY_NAMESPACE {

// One exported entry per op and direction (dispatched once per work unit).
#define QKIT_LEARNED_RANGE_ENTRIES(Name, Op, Slot)                                        \
  void Name##ForwardUnit(const internal::LearnedPlan& plan, const internal::Slot* slots,  \
                         int64_t unit) {                                                  \
    ForwardUnitT<Op>(plan, slots, unit);                                                  \
  }                                                                                       \
  void Name##BackwardUnit(const internal::LearnedPlan& plan, const internal::Slot* slots, \
                          int64_t unit, float* partial0, float* partial1) {               \
    BackwardUnitT<Op>(plan, slots, unit, partial0, partial1);                             \
  }

QKIT_LEARNED_RANGE_ENTRIES(LsqMegEngine, LsqMegEngineOp, LsqMegEngineSlot)
QKIT_LEARNED_RANGE_ENTRIES(LsqPyTorch, LsqPyTorchOp, LsqPyTorchSlot)
// The fused variant differs only in its backward.
void LsqPyTorchFusedBackwardUnit(const internal::LearnedPlan& plan,
                                 const internal::LsqPyTorchSlot* slots, int64_t unit,
                                 float* partial0, float* partial1) {
  BackwardUnitT<LsqPyTorchFusedOp>(plan, slots, unit, partial0, partial1);
}
QKIT_LEARNED_RANGE_ENTRIES(Tqt, TqtOp, TqtSlot)
QKIT_LEARNED_RANGE_ENTRIES(Pact, PactOp, PactSlot)
QKIT_LEARNED_RANGE_ENTRIES(Clip, ClipOp, ClipSlot)
#undef QKIT_LEARNED_RANGE_ENTRIES

}  // namespace qkit::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "internal/check.h"
#include "internal/parallel.h"
#include "qkit/ops/learned_range.h"

namespace qkit {

HWY_EXPORT(LsqMegEngineForwardUnit);
HWY_EXPORT(LsqMegEngineBackwardUnit);
HWY_EXPORT(LsqPyTorchForwardUnit);
HWY_EXPORT(LsqPyTorchBackwardUnit);
HWY_EXPORT(LsqPyTorchFusedBackwardUnit);
HWY_EXPORT(TqtForwardUnit);
HWY_EXPORT(TqtBackwardUnit);
HWY_EXPORT(PactForwardUnit);
HWY_EXPORT(PactBackwardUnit);
HWY_EXPORT(ClipForwardUnit);
HWY_EXPORT(ClipBackwardUnit);

namespace {

using internal::LearnedPlan;
using internal::Walk;

constexpr int64_t kMaxCode = int64_t{1} << 24;  // integer codes must be exact in float32

void RequireFloating(const TensorView& v, const char* caller, const char* name) {
  QKIT_REQUIRE(IsFloating(v.dtype), InvalidArgument,
               caller << ": `" << name << "` must be float32, float16 or bfloat16; got "
                      << DTypeName(v.dtype));
}

void RequireRange(int64_t qmin, int64_t qmax, const char* caller) {
  QKIT_REQUIRE(qmin < qmax, InvalidArgument,
               caller << ": `quant_min`=" << qmin << " must be < `quant_max`=" << qmax);
  QKIT_REQUIRE(qmin >= -kMaxCode && qmax <= kMaxCode, InvalidArgument,
               caller << ": [`quant_min`, `quant_max`]=[" << qmin << ", " << qmax
                      << "] outside [-2^24, 2^24] (codes must be exact in float32)");
}

void RequireFinite(const float* p, int64_t count, const char* caller, const char* name) {
  for (int64_t i = 0; i < count; ++i) {
    QKIT_REQUIRE(std::isfinite(p[i]), InvalidArgument,
                 caller << ": `" << name << "`[" << i << "]=" << p[i] << " is not finite");
  }
}

// Moves `axis` to the front of v (a permutation of shape and strides, no data movement).
TensorView AxisFirst(const TensorView& v, int64_t axis) {
  if (axis <= 0) return v;
  TensorView p = v;
  p.shape[0] = v.shape[axis];
  p.strides[0] = v.strides[axis];
  for (int64_t d = 0; d < axis; ++d) {
    p.shape[d + 1] = v.shape[d];
    p.strides[d + 1] = v.strides[d];
  }
  return p;
}

// Validates the layout and `count` against x, and returns the normalized axis (-1 per tensor)
// and the number of slots.
int64_t CheckLayout(const TensorView& x, const ParamLayout& layout, int64_t count,
                    const void* params, const char* caller, int64_t* num_slots) {
  QKIT_REQUIRE(layout.granularity != Granularity::kPerGroup, InvalidArgument,
               caller << ": per-group parameters (" << layout.ToString()
                      << ") are not supported by learned-range ops; use per tensor or per "
                         "channel");
  QKIT_REQUIRE(x.ndim >= 0 && x.ndim <= kMaxDims, InvalidArgument,
               caller << ": tensors may have at most " << kMaxDims << " dims; got ndim=" << x.ndim);
  const int64_t axis = internal::NormalizeLayoutAxis(x, layout, caller);
  const int64_t slots = axis < 0 ? 1 : x.shape[axis];
  QKIT_REQUIRE(count == slots, InvalidArgument,
               caller << ": " << count << " parameter value(s) given, but " << layout.ToString()
                      << " of a tensor of shape " << x.ShapeString() << " needs " << slots);
  QKIT_REQUIRE(params != nullptr || count == 0, InvalidArgument,
               caller << ": null parameter array for " << count << " value(s)");
  *num_slots = slots;
  return axis;
}

// The walk over the given views (axis moved to the front) and the chunk plan.
struct Planned {
  Walk walk;
  LearnedPlan plan;
};

Planned MakePlan(const TensorView* const* views, int n, int64_t axis, int64_t num_slots,
                 const char* caller) {
  TensorView permuted[internal::kMaxOperands];
  const TensorView* ptrs[internal::kMaxOperands];
  for (int i = 0; i < n; ++i) {
    permuted[i] = AxisFirst(*views[i], axis);
    ptrs[i] = &permuted[i];
  }
  Planned p{Walk(ptrs, n, ParamLayout::PerTensor(), caller), {}};
  LearnedPlan& plan = p.plan;
  const int64_t numel = p.walk.numel();
  if (numel == 0 || num_slots == 0) return p;
  plan.slot_numel = numel / num_slots;
  plan.chunks_per_slot = (plan.slot_numel + kReductionChunk - 1) / kReductionChunk;
  plan.num_chunks = num_slots * plan.chunks_per_slot;
  // Small slots (short channels): several whole slots per work unit, about one chunk of work.
  plan.chunks_per_unit = plan.slot_numel >= kReductionChunk ? 1 : kReductionChunk / plan.slot_numel;
  plan.num_units = (plan.num_chunks + plan.chunks_per_unit - 1) / plan.chunks_per_unit;
  return p;
}

template <class Slot>
using ForwardFn = void (*)(const LearnedPlan&, const Slot*, int64_t);
template <class Slot>
using BackwardFn = void (*)(const LearnedPlan&, const Slot*, int64_t, float*, float*);

template <class Slot>
void RunForward(const TensorView& x, const TensorView& out, int64_t axis, int64_t num_slots,
                const std::vector<Slot>& slots, ForwardFn<Slot> (*pick)(), const Context& ctx,
                const char* caller) {
  RequireFloating(x, caller, "x");
  RequireFloating(out, caller, "out");
  const TensorView* views[2] = {&x, &out};
  Planned p = MakePlan(views, 2, axis, num_slots, caller);
  p.plan.walk = &p.walk;
  if (p.plan.num_units == 0) return;
  internal::ParallelFor(p.plan.num_units, ctx.num_threads,
                        [&](int64_t unit, int) { pick()(p.plan, slots.data(), unit); });
}

// Runs the backward and folds the per-chunk partial sums in chunk order into grad0 / grad1
// (either may be null; num_terms says how many the op produces).
template <class Slot>
void RunBackward(const TensorView& dy, const TensorView& x, const TensorView& dx, int64_t axis,
                 int64_t num_slots, const std::vector<Slot>& slots, int num_terms,
                 BackwardFn<Slot> (*pick)(), float* grad0, float* grad1, const Context& ctx,
                 const char* caller) {
  RequireFloating(dy, caller, "dy");
  RequireFloating(x, caller, "x");
  RequireFloating(dx, caller, "dx");
  const TensorView* views[3] = {&dy, &x, &dx};
  Planned p = MakePlan(views, 3, axis, num_slots, caller);
  p.plan.walk = &p.walk;
  const LearnedPlan& plan = p.plan;
  const bool want = grad0 != nullptr || (num_terms >= 2 && grad1 != nullptr);
  std::vector<float> partial0, partial1;
  if (want) {
    partial0.assign(static_cast<size_t>(plan.num_chunks), 0.0f);
    if (num_terms >= 2) partial1.assign(static_cast<size_t>(plan.num_chunks), 0.0f);
  }
  if (plan.num_units > 0) {
    float* p0 = want ? partial0.data() : nullptr;
    float* p1 = want && num_terms >= 2 ? partial1.data() : nullptr;
    internal::ParallelFor(plan.num_units, ctx.num_threads,
                          [&](int64_t unit, int) { pick()(plan, slots.data(), unit, p0, p1); });
  }
  auto fold = [&](const std::vector<float>& partial, float* grad) {
    if (grad == nullptr) return;
    for (int64_t c = 0; c < num_slots; ++c) {
      float sum = 0.0f;
      for (int64_t j = 0; j < plan.chunks_per_slot; ++j) {
        sum += partial[static_cast<size_t>(c * plan.chunks_per_slot + j)];
      }
      grad[c] = sum;
    }
  };
  if (want) {
    fold(partial0, grad0);
    if (num_terms >= 2) fold(partial1, grad1);
  }
}

// Function-pointer pickers (HWY_DYNAMIC_DISPATCH yields the current target's function).
#define QKIT_PICKERS(Name, Slot)                      \
  ForwardFn<internal::Slot> Pick##Name##Forward() {   \
    return &HWY_DYNAMIC_DISPATCH(Name##ForwardUnit);  \
  }                                                   \
  BackwardFn<internal::Slot> Pick##Name##Backward() { \
    return &HWY_DYNAMIC_DISPATCH(Name##BackwardUnit); \
  }
QKIT_PICKERS(LsqMegEngine, LsqMegEngineSlot)
QKIT_PICKERS(LsqPyTorch, LsqPyTorchSlot)
BackwardFn<internal::LsqPyTorchSlot> PickLsqPyTorchFusedBackward() {
  return &HWY_DYNAMIC_DISPATCH(LsqPyTorchFusedBackwardUnit);
}
QKIT_PICKERS(Tqt, TqtSlot)
QKIT_PICKERS(Pact, PactSlot)
QKIT_PICKERS(Clip, ClipSlot)
#undef QKIT_PICKERS

// ---- LSQ constants -------------------------------------------------------------------------

float EffectiveStep(float step, const LsqOptions& o) {
  return o.step_transform == StepTransform::kAbsPlusEps ? std::fabs(step) + o.step_eps : step;
}

void ValidateLsq(const float* step, const float* zero_point, int64_t count, const LsqOptions& o,
                 const char* caller) {
  RequireRange(o.quant_min, o.quant_max, caller);
  QKIT_REQUIRE(std::isfinite(o.grad_scale), InvalidArgument,
               caller << ": `grad_scale`=" << o.grad_scale << " is not finite");
  if (o.step_transform == StepTransform::kAbsPlusEps) {
    QKIT_REQUIRE(std::isfinite(o.step_eps) && o.step_eps >= 0.0f, InvalidArgument,
                 caller << ": `step_eps`=" << o.step_eps << " must be finite and >= 0");
  }
  RequireFinite(step, count, caller, "step");
  if (zero_point != nullptr) RequireFinite(zero_point, count, caller, "zero_point");
  for (int64_t i = 0; i < count; ++i) {
    const float s = EffectiveStep(step[i], o);
    QKIT_REQUIRE(
        s > 0.0f && std::isfinite(s) && std::isfinite(1.0f / s), InvalidArgument,
        caller << ": step " << s << " (from `step`[" << i << "]=" << step[i]
               << (o.step_transform == StepTransform::kAbsPlusEps ? " as |step| + eps" : "")
               << ") must be > 0 with a finite reciprocal");
  }
}

std::vector<internal::LsqMegEngineSlot> MegEngineSlots(const float* step, const float* zp,
                                                       int64_t count, const LsqOptions& o) {
  std::vector<internal::LsqMegEngineSlot> slots(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    slots[i] = {EffectiveStep(step[i], o), zp ? zp[i] : 0.0f, static_cast<float>(o.quant_min),
                static_cast<float>(o.quant_max), o.grad_scale};
  }
  return slots;
}

std::vector<internal::LsqPyTorchSlot> PyTorchSlots(const float* step, const float* zp,
                                                   int64_t count, const LsqOptions& o) {
  std::vector<internal::LsqPyTorchSlot> slots(static_cast<size_t>(count));
  const float qmin = static_cast<float>(o.quant_min), qmax = static_cast<float>(o.quant_max);
  const bool per_tensor = o.layout.granularity == Granularity::kPerTensor;
  for (int64_t i = 0; i < count; ++i) {
    const float s = EffectiveStep(step[i], o);
    const float z = zp ? zp[i] : 0.0f;
    // Forward: clamp(RNE(z)) (per tensor _get_zero_point_from_tensor(is_forward=true); per
    // channel zero_point.round().clamp()).
    const float zf = std::min(std::max(std::nearbyint(z), qmin), qmax);
    // Backward per tensor: int64(clamp(f32(z + 0.5f))) truncates toward zero; per channel the
    // rounded forward value is used.
    const float zb = per_tensor ? std::trunc(std::min(std::max(z + 0.5f, qmin), qmax)) : zf;
    slots[i] = {s, 1.0f / s, zf, zb, qmin, qmax, o.grad_scale, qmin - zb, qmax - zb};
  }
  return slots;
}

}  // namespace

float LsqGradScale(int64_t numel, int64_t quant_max) {
  QKIT_REQUIRE(numel >= 1, InvalidArgument,
               "qkit::LsqGradScale: `numel`=" << numel << " must be >= 1");
  QKIT_REQUIRE(quant_max >= 1, InvalidArgument,
               "qkit::LsqGradScale: `quant_max`=" << quant_max << " must be >= 1");
  return static_cast<float>(1.0 /
                            std::sqrt(static_cast<double>(numel) * static_cast<double>(quant_max)));
}

void LsqForward(const TensorView& x, const float* step, const float* zero_point, int64_t count,
                const LsqOptions& options, const TensorView& out, const Context& ctx) {
  const char* caller = "qkit::LsqForward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, step, caller, &slots);
  ValidateLsq(step, zero_point, count, options, caller);
  if (options.variant == LsqVariant::kMegEngine) {
    RunForward(x, out, axis, slots, MegEngineSlots(step, zero_point, count, options),
               &PickLsqMegEngineForward, ctx, caller);
  } else {
    RunForward(x, out, axis, slots, PyTorchSlots(step, zero_point, count, options),
               &PickLsqPyTorchForward, ctx, caller);
  }
}

void LsqBackward(const TensorView& dy, const TensorView& x, const float* step,
                 const float* zero_point, int64_t count, const LsqOptions& options,
                 const TensorView& dx, float* dstep, float* dzero_point, const Context& ctx) {
  const char* caller = "qkit::LsqBackward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, step, caller, &slots);
  ValidateLsq(step, zero_point, count, options, caller);
  if (options.variant == LsqVariant::kMegEngine) {
    RunBackward(dy, x, dx, axis, slots, MegEngineSlots(step, zero_point, count, options), 1,
                &PickLsqMegEngineBackward, dstep, nullptr, ctx, caller);
  } else {
    RunBackward(dy, x, dx, axis, slots, PyTorchSlots(step, zero_point, count, options), 2,
                options.fused ? &PickLsqPyTorchFusedBackward : &PickLsqPyTorchBackward, dstep,
                dzero_point, ctx, caller);
  }
  if (dstep != nullptr && options.step_transform == StepTransform::kAbsPlusEps) {
    // Chain rule through |step|: times sgn(step), exact (0 at step == 0, as torch.abs).
    for (int64_t i = 0; i < count; ++i) {
      dstep[i] = step[i] > 0.0f ? dstep[i] : step[i] < 0.0f ? -dstep[i] : 0.0f;
    }
  }
}

// ---- TQT ---------------------------------------------------------------------------------------

namespace {
std::vector<internal::TqtSlot> TqtSlots(const float* log2_t, int64_t count, const TqtOptions& o,
                                        const char* caller) {
  RequireRange(o.quant_min, o.quant_max, caller);
  RequireFinite(log2_t, count, caller, "log2_t");
  std::vector<internal::TqtSlot> slots(static_cast<size_t>(count));
  const float qmin = static_cast<float>(o.quant_min), qmax = static_cast<float>(o.quant_max);
  for (int64_t i = 0; i < count; ++i) {
    // MegEngine: pow(2, scale) in double (naive kernel), stored as float.
    const float t = static_cast<float>(std::pow(2.0, static_cast<double>(log2_t[i])));
    QKIT_REQUIRE(t > 0.0f && std::isfinite(t), InvalidArgument,
                 caller << ": `log2_t`[" << i << "]=" << log2_t[i] << " gives t=" << t
                        << ", not a positive finite float32");
    slots[i] = {t, qmin, qmax, qmin - 0.5f, qmax + 0.5f};
  }
  return slots;
}
}  // namespace

void TqtForward(const TensorView& x, const float* log2_t, int64_t count, const TqtOptions& options,
                const TensorView& out, const Context& ctx) {
  const char* caller = "qkit::TqtForward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, log2_t, caller, &slots);
  RunForward(x, out, axis, slots, TqtSlots(log2_t, count, options, caller), &PickTqtForward, ctx,
             caller);
}

void TqtBackward(const TensorView& dy, const TensorView& x, const float* log2_t, int64_t count,
                 const TqtOptions& options, const TensorView& dx, float* dlog2_t,
                 const Context& ctx) {
  const char* caller = "qkit::TqtBackward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, log2_t, caller, &slots);
  RunBackward(dy, x, dx, axis, slots, TqtSlots(log2_t, count, options, caller), 1, &PickTqtBackward,
              dlog2_t, nullptr, ctx, caller);
}

// ---- PACT --------------------------------------------------------------------------------------

namespace {
std::vector<internal::PactSlot> PactSlots(const float* alpha, int64_t count, const PactOptions& o,
                                          const char* caller) {
  QKIT_REQUIRE(o.bits >= 2 && o.bits <= 16, InvalidArgument,
               caller << ": `bits`=" << o.bits << " outside [2, 16]");
  RequireFinite(alpha, count, caller, "alpha");
  const float n = static_cast<float>((int64_t{1} << o.bits) - 1);
  std::vector<internal::PactSlot> slots(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    // Distiller: sat_max = max(alpha, 0), sat_min = 0, diff = sat_max - sat_min, a zero diff
    // replaced by n; scale = n / diff, which torch evaluates as reciprocal(diff) * n.
    float diff = std::max(alpha[i], 0.0f) - 0.0f;
    if (diff == 0.0f) diff = n;
    const float m = (1.0f / diff) * n;
    QKIT_REQUIRE(std::isfinite(m) && m > 0.0f, InvalidArgument,
                 caller << ": `alpha`[" << i << "]=" << alpha[i] << " gives multiplier " << m
                        << ", not a positive finite float32");
    slots[i] = {alpha[i], m};
  }
  return slots;
}
}  // namespace

void PactForward(const TensorView& x, const float* alpha, int64_t count, const PactOptions& options,
                 const TensorView& out, const Context& ctx) {
  const char* caller = "qkit::PactForward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, alpha, caller, &slots);
  RunForward(x, out, axis, slots, PactSlots(alpha, count, options, caller), &PickPactForward, ctx,
             caller);
}

void PactBackward(const TensorView& dy, const TensorView& x, const float* alpha, int64_t count,
                  const PactOptions& options, const TensorView& dx, float* dalpha,
                  const Context& ctx) {
  const char* caller = "qkit::PactBackward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, alpha, caller, &slots);
  RunBackward(dy, x, dx, axis, slots, PactSlots(alpha, count, options, caller), 1,
              &PickPactBackward, dalpha, nullptr, ctx, caller);
}

// ---- Clip ---------------------------------------------------------------------------------------

namespace {
std::vector<internal::ClipSlot> ClipSlots(const float* cmin, const float* cmax, int64_t count,
                                          const char* caller) {
  QKIT_REQUIRE(cmax != nullptr || count == 0, InvalidArgument,
               caller << ": null `cmax` array for " << count << " value(s)");
  RequireFinite(cmin, count, caller, "cmin");
  RequireFinite(cmax, count, caller, "cmax");
  std::vector<internal::ClipSlot> slots(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) slots[i] = {cmin[i], cmax[i]};
  return slots;
}
}  // namespace

void LearnedClipForward(const TensorView& x, const float* cmin, const float* cmax, int64_t count,
                        const ClipOptions& options, const TensorView& out, const Context& ctx) {
  const char* caller = "qkit::LearnedClipForward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, cmin, caller, &slots);
  RunForward(x, out, axis, slots, ClipSlots(cmin, cmax, count, caller), &PickClipForward, ctx,
             caller);
}

void LearnedClipBackward(const TensorView& dy, const TensorView& x, const float* cmin,
                         const float* cmax, int64_t count, const ClipOptions& options,
                         const TensorView& dx, float* dcmin, float* dcmax, const Context& ctx) {
  const char* caller = "qkit::LearnedClipBackward";
  int64_t slots = 0;
  const int64_t axis = CheckLayout(x, options.layout, count, cmin, caller, &slots);
  RunBackward(dy, x, dx, axis, slots, ClipSlots(cmin, cmax, count, caller), 2, &PickClipBackward,
              dcmin, dcmax, ctx, caller);
}

}  // namespace qkit
#endif  // HWY_ONCE
