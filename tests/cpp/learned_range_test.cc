// Learned-range ops (LSQ both variants, TQT, PACT, Clip) against the scalar references of
// tests/reference/learned_range_ref.h, bit for bit (the parameter-gradient sums too: the
// reference follows the documented reduction order), on every SIMD target, for 1 and 2
// threads, odd sizes, strided / negative-stride / broadcast views, float16 / bfloat16, per
// tensor and per channel; plus the SPEC §10.5 / §10.6 goldens and the argument checks.
#include "qkit/ops/learned_range.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qkit/context.h"
#include "qkit/error.h"
#include "reference/learned_range_ref.h"
#include "util/compare.h"
#include "util/seeded_rng.h"
#include "util/special_values.h"
#include "util/sweeps.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::SameFloat;

// ---- test tensors: any dtype, any strides, read / written by logical index -------------------

uint16_t Bf16Bits(float f) {  // round to nearest-even, NaN kept quiet
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float FromBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Rounds f to what a tensor of `dtype` stores.
float RoundTo(DType dtype, float f) {
  if (dtype == DType::kFloat16) return static_cast<float>(static_cast<_Float16>(f));
  if (dtype == DType::kBFloat16) return FromBf16(Bf16Bits(f));
  return f;
}

enum class Layout { kContiguous, kPadded, kReversed, kColumnMajor, kBroadcast };
const char* LayoutName(Layout l) {
  switch (l) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kPadded:
      return "padded";
    case Layout::kReversed:
      return "reversed";
    case Layout::kColumnMajor:
      return "column-major";
    case Layout::kBroadcast:
      return "broadcast";
  }
  return "?";
}

class TestTensor {
 public:
  TestTensor(std::vector<int64_t> shape, DType dtype, Layout layout) : shape_(std::move(shape)) {
    const int nd = static_cast<int>(shape_.size());
    view_.dtype = dtype;
    view_.ndim = nd;
    int64_t numel = 1;
    for (int d = 0; d < nd; ++d) {
      view_.shape[d] = shape_[d];
      numel *= shape_[d];
    }
    int64_t span = 1;
    int64_t offset = 0;
    switch (layout) {
      case Layout::kContiguous:
      case Layout::kReversed:
      case Layout::kBroadcast:
        for (int d = nd - 1; d >= 0; --d) {
          view_.strides[d] = span;
          span *= shape_[d];
        }
        if (layout == Layout::kReversed && nd > 0 && shape_[nd - 1] > 0) {
          view_.strides[nd - 1] = -1;
          offset = shape_[nd - 1] - 1;  // each row runs backwards
        }
        if (layout == Layout::kBroadcast && nd > 0) {
          view_.strides[0] = 0;  // every index along dim 0 reads the same row
          span = shape_[0] > 0 ? span / shape_[0] : 0;
        }
        break;
      case Layout::kPadded:
        for (int d = nd - 1; d >= 0; --d) {
          view_.strides[d] = span;
          span *= shape_[d] + (d == nd - 1 ? 3 : 0);  // inner rows padded by 3
        }
        if (nd == 1) {
          view_.strides[0] = 2;
          span = 2 * shape_[0];
        }
        break;
      case Layout::kColumnMajor:
        for (int d = 0; d < nd; ++d) {
          view_.strides[d] = span;
          span *= shape_[d];
        }
        break;
    }
    if (numel == 0) span = 0;
    storage_.assign(static_cast<size_t>(std::max<int64_t>(span, 1)) * 4, 0xAB);
    view_.data = storage_.data() + offset * static_cast<int64_t>(DTypeSize(dtype));
  }

  int64_t numel() const { return view_.numel(); }
  const TensorView& view() const { return view_; }

  float Get(int64_t i) const {
    const char* p = Address(i);
    switch (view_.dtype) {
      case DType::kFloat16: {
        _Float16 h;
        std::memcpy(&h, p, 2);
        return static_cast<float>(h);
      }
      case DType::kBFloat16: {
        uint16_t b;
        std::memcpy(&b, p, 2);
        return FromBf16(b);
      }
      default: {
        float f;
        std::memcpy(&f, p, 4);
        return f;
      }
    }
  }
  void Set(int64_t i, float v) {
    char* p = const_cast<char*>(Address(i));
    switch (view_.dtype) {
      case DType::kFloat16: {
        const _Float16 h = static_cast<_Float16>(v);
        std::memcpy(p, &h, 2);
        break;
      }
      case DType::kBFloat16: {
        const uint16_t b = Bf16Bits(v);
        std::memcpy(p, &b, 2);
        break;
      }
      default:
        std::memcpy(p, &v, 4);
    }
  }

 private:
  const char* Address(int64_t i) const {
    int64_t off = 0;
    for (int d = view_.ndim - 1; d >= 0; --d) {
      off += (i % view_.shape[d]) * view_.strides[d];
      i /= view_.shape[d];
    }
    return static_cast<const char*>(view_.data) +
           off * static_cast<int64_t>(DTypeSize(view_.dtype));
  }
  std::vector<int64_t> shape_;
  std::vector<unsigned char> storage_;
  TensorView view_;
};

// Slot of logical element i (per tensor: 0; per channel: the coordinate along `axis`).
int64_t SlotOf(const std::vector<int64_t>& shape, int64_t axis, int64_t i) {
  if (axis < 0) return 0;
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis) + 1; d < shape.size(); ++d) inner *= shape[d];
  return (i / inner) % shape[static_cast<size_t>(axis)];
}

// ---- one op, seen through a common interface -------------------------------------------------

enum class Op { kLsqMegEngine, kLsqPyTorch, kLsqPyTorchFused, kTqt, kPact, kClip };
const char* OpName(Op op) {
  switch (op) {
    case Op::kLsqMegEngine:
      return "LsqMegEngine";
    case Op::kLsqPyTorch:
      return "LsqPyTorch";
    case Op::kLsqPyTorchFused:
      return "LsqPyTorchFused";
    case Op::kTqt:
      return "Tqt";
    case Op::kPact:
      return "Pact";
    case Op::kClip:
      return "Clip";
  }
  return "?";
}
bool IsLsq(Op op) {
  return op == Op::kLsqMegEngine || op == Op::kLsqPyTorch || op == Op::kLsqPyTorchFused;
}
int NumTerms(Op op) { return IsLsq(op) && op != Op::kLsqMegEngine ? 2 : op == Op::kClip ? 2 : 1; }

struct OpSetup {
  Op op;
  ParamLayout layout;
  int64_t qmin = -128, qmax = 127;
  float grad_scale = 1.0f;
  int bits = 8;
  StepTransform transform = StepTransform::kIdentity;
  float eps = 0.0f;
  std::vector<float> p0, p1;  // step / log2_t / alpha / cmin;  zero_point / cmax

  LsqOptions Lsq() const {
    LsqOptions o;
    o.variant = op == Op::kLsqMegEngine ? LsqVariant::kMegEngine : LsqVariant::kPyTorch;
    o.quant_min = qmin;
    o.quant_max = qmax;
    o.layout = layout;
    o.grad_scale = grad_scale;
    o.step_transform = transform;
    o.step_eps = eps;
    o.fused = op == Op::kLsqPyTorchFused;
    return o;
  }
  int64_t count() const { return static_cast<int64_t>(p0.size()); }

  void Forward(const TensorView& x, const TensorView& out, const Context& ctx) const {
    switch (op) {
      case Op::kLsqMegEngine:
      case Op::kLsqPyTorch:
      case Op::kLsqPyTorchFused:
        LsqForward(x, p0.data(), p1.data(), count(), Lsq(), out, ctx);
        break;
      case Op::kTqt:
        TqtForward(x, p0.data(), count(), TqtOptions{qmin, qmax, layout}, out, ctx);
        break;
      case Op::kPact:
        PactForward(x, p0.data(), count(), PactOptions{bits, layout}, out, ctx);
        break;
      case Op::kClip:
        LearnedClipForward(x, p0.data(), p1.data(), count(), ClipOptions{layout}, out, ctx);
        break;
    }
  }
  void Backward(const TensorView& dy, const TensorView& x, const TensorView& dx, float* g0,
                float* g1, const Context& ctx) const {
    switch (op) {
      case Op::kLsqMegEngine:
      case Op::kLsqPyTorch:
      case Op::kLsqPyTorchFused:
        LsqBackward(dy, x, p0.data(), p1.data(), count(), Lsq(), dx, g0, g1, ctx);
        break;
      case Op::kTqt:
        TqtBackward(dy, x, p0.data(), count(), TqtOptions{qmin, qmax, layout}, dx, g0, ctx);
        break;
      case Op::kPact:
        PactBackward(dy, x, p0.data(), count(), PactOptions{bits, layout}, dx, g0, ctx);
        break;
      case Op::kClip:
        LearnedClipBackward(dy, x, p0.data(), p1.data(), count(), ClipOptions{layout}, dx, g0, g1,
                            ctx);
        break;
    }
  }

  // Reference for element x of slot c.
  float RefForward(float x, int64_t c) const {
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    switch (op) {
      case Op::kLsqMegEngine:
        return ref::LsqMegEngineForward(x, Step(c), p1[c], lo, hi);
      case Op::kLsqPyTorch:
      case Op::kLsqPyTorchFused:
        return ref::LsqPyTorchForward(x, Step(c), ref::ForwardZeroPoint(p1[c], lo, hi), lo, hi);
      case Op::kTqt:
        return ref::TqtForward(x, p0[c], lo, hi);
      case Op::kPact:
        return ref::PactForward(x, p0[c], bits);
      case Op::kClip:
        return ref::ClipForward(x, p0[c], p1[c]);
    }
    return 0.0f;
  }
  ref::ElemGrad RefBackward(float dy, float x, int64_t c) const {
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    const bool per_tensor = layout.granularity == Granularity::kPerTensor;
    switch (op) {
      case Op::kLsqMegEngine:
        return ref::LsqMegEngineBackward(dy, x, Step(c), p1[c], lo, hi, grad_scale);
      case Op::kLsqPyTorch:
      case Op::kLsqPyTorchFused:
        return ref::LsqPyTorchBackward(dy, x, Step(c),
                                       ref::BackwardZeroPoint(p1[c], lo, hi, per_tensor), lo, hi,
                                       grad_scale, op == Op::kLsqPyTorchFused);
      case Op::kTqt:
        return ref::TqtBackward(dy, x, p0[c], lo, hi);
      case Op::kPact:
        return ref::PactBackward(dy, x, p0[c]);
      case Op::kClip:
        return ref::ClipBackward(dy, x, p0[c], p1[c]);
    }
    return {};
  }
  // The step the LSQ formulas use, and the chain factor back to the parameter.
  float Step(int64_t c) const {
    return transform == StepTransform::kAbsPlusEps ? std::fabs(p0[c]) + eps : p0[c];
  }
  float StepChain(int64_t c, float ds) const {
    if (transform != StepTransform::kAbsPlusEps) return ds;
    return p0[c] > 0.0f ? ds : (p0[c] < 0.0f ? -ds : 0.0f);
  }
};

// Parameters for `slots` slots, chosen so that a good part of x ~ N(0, spread) falls outside
// the range. `pow2` picks power-of-two steps, so that x / s lands exactly on ties.
OpSetup MakeSetup(Op op, ParamLayout layout, int64_t slots, std::mt19937_64& rng, bool pow2) {
  OpSetup s;
  s.op = op;
  s.layout = layout;
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t c = 0; c < slots; ++c) {
    switch (op) {
      case Op::kLsqMegEngine:
      case Op::kLsqPyTorch:
      case Op::kLsqPyTorchFused:
        s.p0.push_back(pow2 ? std::ldexp(1.0f, -5 - static_cast<int>(c % 3))
                            : 0.005f + 0.03f * u(rng));
        s.p1.push_back(op == Op::kLsqMegEngine
                           ? std::round(-20.0f + 40.0f * u(rng)) + (c % 4 == 1 ? 0.3f : 0.0f)
                           : -30.0f + 60.0f * u(rng));
        break;
      case Op::kTqt:
        s.p0.push_back(pow2 ? -5.0f - static_cast<float>(c % 3) : -6.0f + 2.0f * u(rng));
        break;
      case Op::kPact:
        s.p0.push_back(pow2 ? 2.0f : 0.5f + 3.0f * u(rng));
        break;
      case Op::kClip: {
        const float a = 0.2f + 2.0f * u(rng);
        s.p0.push_back(-a * (0.5f + u(rng)));
        s.p1.push_back(a);
        break;
      }
    }
  }
  if (op == Op::kLsqMegEngine) s.grad_scale = 0.75f;
  if (op == Op::kLsqPyTorch || op == Op::kLsqPyTorchFused) s.grad_scale = 0.3f;
  if (op == Op::kTqt) {
    s.qmin = -127;
    s.qmax = 127;
  }
  if ((op == Op::kLsqPyTorch || op == Op::kLsqPyTorchFused) &&
      slots % 2 == 1) {  // unsigned range for some cases
    s.qmin = 0;
    s.qmax = 255;
  }
  return s;
}

struct CaseShape {
  std::vector<int64_t> shape;
  ParamLayout layout;
};

// Runs forward and backward of `setup` on x / dy of `shape` and compares everything with the
// reference. specials: inject edge values into x (NaN only where `allow_nan`).
void CheckCase(const OpSetup& setup, const std::vector<int64_t>& shape, DType x_dtype,
               Layout x_layout, DType dy_dtype, Layout dy_layout, DType out_dtype, int threads,
               std::mt19937_64& rng, bool allow_nan, bool alias_dx_dy = false) {
  SCOPED_TRACE(testing::Message() << OpName(setup.op) << " " << setup.layout.ToString() << " x "
                                  << DTypeName(x_dtype) << " " << LayoutName(x_layout) << ", dy "
                                  << DTypeName(dy_dtype) << " " << LayoutName(dy_layout) << ", out "
                                  << DTypeName(out_dtype) << ", threads " << threads
                                  << (alias_dx_dy ? ", dx aliases dy" : "") << ", target "
                                  << CurrentTarget());
  TestTensor x(shape, x_dtype, x_layout);
  TestTensor dy(shape, dy_dtype, dy_layout);
  TestTensor out(shape, out_dtype, Layout::kContiguous);
  TestTensor dx_own(shape, out_dtype, Layout::kPadded);
  const int64_t n = x.numel();
  const int64_t axis =
      setup.layout.granularity == Granularity::kPerTensor
          ? -1
          : (setup.layout.axis < 0 ? setup.layout.axis + static_cast<int64_t>(shape.size())
                                   : setup.layout.axis);

  // Values spanning the range and beyond, at the scale of each slot's parameter.
  std::vector<float> xs(static_cast<size_t>(n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = SlotOf(shape, axis, i);
    float scale = 1.0f;
    switch (setup.op) {
      case Op::kLsqMegEngine:
      case Op::kLsqPyTorch:
      case Op::kLsqPyTorchFused:
        scale = setup.Step(c) * 100.0f;
        break;
      case Op::kTqt:
        scale = ref::TqtThreshold(setup.p0[c]) * 100.0f;
        break;
      case Op::kPact:
        scale = setup.p0[c];
        break;
      case Op::kClip:
        scale = setup.p1[c];
        break;
    }
    xs[i] = normal(rng) * scale;
  }
  if (n > 0) {
    test::InjectSpecials(xs, rng, 0.01);
    // Exact ties for power-of-two steps: x / s = k + 0.5.
    for (int64_t i = 3; i < n; i += 17) {
      const int64_t c = SlotOf(shape, axis, i);
      float s = 0.0f;
      if (IsLsq(setup.op)) s = setup.Step(c);
      if (setup.op == Op::kTqt) s = ref::TqtThreshold(setup.p0[c]);
      if (s > 0.0f) xs[i] = (std::round(xs[i] / s) + 0.5f) * s;
    }
    if (!allow_nan) {
      for (auto& v : xs) {
        if (std::isnan(v)) v = 0.25f;
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) x.Set(i, xs[i]);
  for (int64_t i = 0; i < n; ++i) dy.Set(i, normal(rng));  // broadcast rows share storage

  Context ctx;
  ctx.num_threads = threads;
  setup.Forward(x.view(), out.view(), ctx);

  // dx either its own padded tensor or dy's memory (only when dy has out's dtype and layout).
  TestTensor* dx = &dx_own;
  std::vector<float> dy_values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) dy_values[i] = dy.Get(i);
  if (alias_dx_dy) dx = &dy;
  const int terms = NumTerms(setup.op);
  std::vector<float> g0(setup.p0.size(), 12345.0f), g1(setup.p0.size(), 12345.0f);
  setup.Backward(dy.view(), x.view(), dx->view(), g0.data(), terms >= 2 ? g1.data() : nullptr, ctx);

  std::vector<std::vector<float>> t0(setup.p0.size()), t1(setup.p0.size());
  int shown = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = SlotOf(shape, axis, i);
    const float xv = x.Get(i);
    const float want_out = RoundTo(out_dtype, setup.RefForward(xv, c));
    const ref::ElemGrad g = setup.RefBackward(dy_values[i], xv, c);
    const float want_dx = RoundTo(dx->view().dtype, g.dx);
    const float got_out = out.Get(i), got_dx = dx->Get(i);
    if ((!SameFloat(want_out, got_out) || !SameFloat(want_dx, got_dx)) && shown++ < 5) {
      ADD_FAILURE() << "element " << i << " (slot " << c << ") x=" << xv << " dy=" << dy_values[i]
                    << ": out want " << want_out << " got " << got_out << "; dx want " << want_dx
                    << " got " << got_dx;
    }
    t0[c].push_back(g.t0);
    t1[c].push_back(g.t1);
  }
  for (size_t c = 0; c < setup.p0.size(); ++c) {
    const float want0 = IsLsq(setup.op)
                            ? setup.StepChain(static_cast<int64_t>(c), ref::OrderedSum(t0[c]))
                            : ref::OrderedSum(t0[c]);
    EXPECT_TRUE(SameFloat(want0, g0[c]))
        << "gradient 0 of slot " << c << ": want " << want0 << " got " << g0[c];
    if (terms >= 2) {
      const float want1 = ref::OrderedSum(t1[c]);
      EXPECT_TRUE(SameFloat(want1, g1[c]))
          << "gradient 1 of slot " << c << ": want " << want1 << " got " << g1[c];
    }
  }
}

constexpr Op kAllOps[] = {Op::kLsqMegEngine, Op::kLsqPyTorch, Op::kLsqPyTorchFused,
                          Op::kTqt,          Op::kPact,       Op::kClip};

class LearnedRangeTest : public test::PerTargetTest {};

// Per tensor, contiguous float32, every count 0..49, pot +-1, a few random counts, and sizes
// spanning several reduction chunks (the chunk-ordered fold), on 1 and 2 threads.
TEST_P(LearnedRangeTest, PerTensorCountsMatchReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const auto counts = test::Counts(rng, /*include_large=*/false);
  for (Op op : kAllOps) {
    for (int64_t n : counts) {
      const OpSetup setup = MakeSetup(op, ParamLayout::PerTensor(), 1, rng, n % 2 == 0);
      CheckCase(setup, {n}, DType::kFloat32, Layout::kContiguous, DType::kFloat32,
                Layout::kContiguous, DType::kFloat32, 1 + static_cast<int>(n % 2), rng,
                /*allow_nan=*/false);
    }
  }
}

TEST_P(LearnedRangeTest, ManyChunksSameForOneAndTwoThreads) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  // 2 chunks + a ragged tail (a multiple of no lane count), and a padded 2-D view whose runs
  // start at every lane offset.
  for (Op op : kAllOps) {
    const OpSetup setup = MakeSetup(op, ParamLayout::PerTensor(), 1, rng, false);
    for (int threads : {1, 2}) {
      CheckCase(setup, {2 * kReductionChunk + 13}, DType::kFloat32, Layout::kContiguous,
                DType::kFloat32, Layout::kContiguous, DType::kFloat32, threads, rng, false);
      CheckCase(setup, {1031, 37}, DType::kFloat32, Layout::kPadded, DType::kFloat32,
                Layout::kContiguous, DType::kFloat32, threads, rng, false);
    }
  }
}

// Non-contiguous, negative-stride and broadcast views, half types, aliasing dx with dy.
TEST_P(LearnedRangeTest, LayoutsAndDtypes) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const std::vector<int64_t> shape = {5, 3, 67};
  for (Op op : kAllOps) {
    const OpSetup setup = MakeSetup(op, ParamLayout::PerTensor(), 1, rng, true);
    for (Layout xl : {Layout::kPadded, Layout::kReversed, Layout::kColumnMajor}) {
      CheckCase(setup, shape, DType::kFloat32, xl, DType::kFloat32, Layout::kContiguous,
                DType::kFloat32, 2, rng, false);
    }
    CheckCase(setup, shape, DType::kFloat32, Layout::kContiguous, DType::kFloat32,
              Layout::kBroadcast, DType::kFloat32, 1, rng, false);
    for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
      CheckCase(setup, shape, dt, Layout::kReversed, dt, Layout::kColumnMajor, dt, 2, rng, false);
      CheckCase(setup, shape, dt, Layout::kContiguous, DType::kFloat32, Layout::kContiguous,
                DType::kFloat32, 1, rng, false);
    }
    CheckCase(setup, shape, DType::kFloat32, Layout::kContiguous, DType::kFloat32,
              Layout::kContiguous, DType::kFloat32, 1, rng, false, /*alias_dx_dy=*/true);
  }
}

// Per channel on every axis, channel counts 1 / 3 / 64 / 1000, including short channels (many
// slots per work unit) and channels longer than a chunk.
TEST_P(LearnedRangeTest, PerChannelMatchesReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const std::vector<CaseShape> cases = {
      {{3, 4, 5}, ParamLayout::PerChannel(0)},
      {{3, 4, 5}, ParamLayout::PerChannel(1)},
      {{3, 4, 5}, ParamLayout::PerChannel(-1)},
      {{1, 7}, ParamLayout::PerChannel(0)},
      {{64, 33}, ParamLayout::PerChannel(0)},
      {{2, 64, 9}, ParamLayout::PerChannel(1)},
      {{1000}, ParamLayout::PerChannel(0)},
      {{7, 1000}, ParamLayout::PerChannel(1)},
      {{2, kReductionChunk + 5}, ParamLayout::PerChannel(0)},
  };
  for (Op op : kAllOps) {
    for (const auto& cs : cases) {
      const int64_t axis = cs.layout.axis < 0 ? cs.layout.axis + cs.shape.size() : cs.layout.axis;
      const int64_t slots = cs.shape[axis];
      const OpSetup setup = MakeSetup(op, cs.layout, slots, rng, slots % 3 == 0);
      for (int threads : {1, 2}) {
        CheckCase(setup, cs.shape, DType::kFloat32, Layout::kContiguous, DType::kFloat32,
                  Layout::kContiguous, DType::kFloat32, threads, rng, false);
      }
      CheckCase(setup, cs.shape, DType::kBFloat16, Layout::kColumnMajor, DType::kFloat32,
                Layout::kReversed, DType::kFloat16, 2, rng, false);
    }
  }
}

// NaN inputs: outputs and dx per SPEC (MegEngine / TQT propagate NaN into the sum; PyTorch
// treats NaN as below the range; PACT maps it to alpha; Clip propagates it in the forward).
TEST_P(LearnedRangeTest, NaNInputs) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (Op op : kAllOps) {
    const OpSetup setup = MakeSetup(op, ParamLayout::PerTensor(), 1, rng, false);
    CheckCase(setup, {131}, DType::kFloat32, Layout::kContiguous, DType::kFloat32,
              Layout::kContiguous, DType::kFloat32, 1, rng, /*allow_nan=*/true);
  }
}

// dx only: null gradient outputs skip the sums and leave dx unchanged.
TEST_P(LearnedRangeTest, NullGradientsStillWriteDx) {
  const float x[5] = {-3.0f, -0.26f, 0.05f, 12.74f, 20.0f};
  const float dy[5] = {1, 2, 3, 4, 5};
  float dx[5] = {9, 9, 9, 9, 9};
  const float step = 0.1f, zp = 0.0f;
  LsqOptions o;
  o.variant = LsqVariant::kMegEngine;
  LsqBackward(TensorView::Contiguous(const_cast<float*>(dy), DType::kFloat32, {5}),
              TensorView::Contiguous(const_cast<float*>(x), DType::kFloat32, {5}), &step, &zp, 1, o,
              TensorView::Vector(dx, 5), nullptr, nullptr, Context{});
  const float want[5] = {1, 2, 3, 0, 0};  // 12.74 / 0.1 = 127.4 > 127: clipped (unrounded)
  EXPECT_TRUE(test::BitwiseEqual(want, dx, 5, x));
}

QKIT_INSTANTIATE_PER_TARGET(LearnedRangeTest);

// ---- goldens from SPEC.md §10 (values printed by shared/compute_examples.py) -----------------

struct Golden {
  float x, out, gx, gs;
};

void RunLsqGolden(LsqVariant variant, const std::vector<Golden>& rows) {
  for (const auto& r : rows) {
    SCOPED_TRACE(testing::Message() << "x=" << r.x);
    float x = r.x, out = 0, dy = 1.0f, dx = 0, ds = 0, dz = 0;
    const float s = 0.1f, z = 0.0f;
    LsqOptions o;
    o.variant = variant;
    o.quant_min = -128;
    o.quant_max = 127;
    LsqForward(TensorView::Vector(&x, 1), &s, &z, 1, o, TensorView::Vector(&out, 1), Context{});
    LsqBackward(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1), &s, &z, 1, o,
                TensorView::Vector(&dx, 1), &ds, &dz, Context{});
    EXPECT_TRUE(SameFloat(r.out, out)) << "out " << out;
    EXPECT_TRUE(SameFloat(r.gx, dx)) << "dx " << dx;
    EXPECT_TRUE(SameFloat(r.gs, ds)) << "ds " << ds;
  }
}

// SPEC §10.5, MegEngine columns: RHAZ (0.05 -> 0.1), unrounded range test (12.74 -> clipped).
TEST(LearnedRangeGoldenTest, MegEngineLsqSpec10_5) {
  RunLsqGolden(LsqVariant::kMegEngine, {
                                           {-13.0f, -12.8f, 0.0f, -128.0f},
                                           {-0.26f, -0.3f, 1.0f, -0.40000009536743164f},
                                           {0.04f, 0.0f, 1.0f, -0.3999999761581421f},
                                           {0.05f, 0.1f, 1.0f, 0.5f},
                                           {0.15f, 0.2f, 1.0f, 0.5f},
                                           {12.74f, 12.7f, 0.0f, 127.0f},
                                           {12.8f, 12.7f, 0.0f, 127.0f},
                                       });
}

// SPEC §10.5, PyTorch learnable columns: RNE (0.05 -> 0), rounded test (12.74 in range).
TEST(LearnedRangeGoldenTest, PyTorchLearnableSpec10_5) {
  RunLsqGolden(LsqVariant::kPyTorch, {
                                         {-13.0f, -12.8f, 0.0f, -128.0f},
                                         {-0.26f, -0.3f, 1.0f, -0.4000002145767212f},
                                         {0.04f, 0.0f, 1.0f, -0.3999999761581421f},
                                         {0.05f, 0.0f, 1.0f, -0.5f},
                                         {0.15f, 0.2f, 1.0f, 0.4999999701976776f},
                                         {12.74f, 12.7f, 1.0f, -0.39999961853027344f},
                                         {12.8f, 12.7f, 0.0f, 127.0f},
                                     });
}

// SPEC §10.6: TQT with log2 t = -3 on qint8_narrow, dy = 1.
TEST(LearnedRangeGoldenTest, TqtSpec10_6) {
  const std::vector<Golden> rows = {
      {-16.0f, -15.875f, 0.0f, -11.003711700439453f}, {-0.3f, -0.25f, 1.0f, 0.03465736657381058f},
      {0.1f, 0.125f, 1.0f, 0.01732867769896984f},     {15.9f, 15.875f, 1.0f, -0.0173284150660038f},
      {15.95f, 15.875f, 0.0f, 11.003711700439453f},   {16.0f, 15.875f, 0.0f, 11.003711700439453f},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(testing::Message() << "x=" << r.x);
    float x = r.x, out = 0, dy = 1.0f, dx = 0, g = 0;
    const float log2_t = -3.0f;
    TqtOptions o{-127, 127, ParamLayout::PerTensor()};
    TqtForward(TensorView::Vector(&x, 1), &log2_t, 1, o, TensorView::Vector(&out, 1), Context{});
    TqtBackward(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1), &log2_t, 1, o,
                TensorView::Vector(&dx, 1), &g, Context{});
    EXPECT_TRUE(SameFloat(r.out, out)) << "out " << out;
    EXPECT_TRUE(SameFloat(r.gx, dx)) << "dx " << dx;
    EXPECT_TRUE(SameFloat(r.gs, g)) << "dlog2t " << g;
  }
}

// In the spirit of MegEngine's test_lsq (SPEC §3.4): every |x/s| > 127 with s = 0.02918224,
// z = 1, grad_scale = 2, [-127, 127]: out = 126 s above, -128 s below, dx = 0, and
// sum ds = (11 above - 13 below) * 127 * 2 = -508 (integers: exact in any order).
TEST(LearnedRangeGoldenTest, MegEngineAllClippedSum) {
  std::vector<float> x = {-121, -100, -90, -77, -64, -50, -33, -20, -15, -9, -7, -6,
                          -5,   5,    8,   13,  21,  34,  55,  60,  71,  88, 99, 109};
  ASSERT_EQ(x.size(), 24u);
  std::vector<float> out(24), dy(24, 1.0f), dx(24, 7.0f);
  const float s = 0.02918224f, z = 1.0f;
  LsqOptions o;
  o.variant = LsqVariant::kMegEngine;
  o.quant_min = -127;
  o.quant_max = 127;
  o.grad_scale = 2.0f;
  LsqForward(TensorView::Vector(x.data(), 24), &s, &z, 1, o, TensorView::Vector(out.data(), 24),
             Context{});
  float ds = 0.0f;
  LsqBackward(TensorView::Vector(dy.data(), 24), TensorView::Vector(x.data(), 24), &s, &z, 1, o,
              TensorView::Vector(dx.data(), 24), &ds, nullptr, Context{});
  for (int i = 0; i < 24; ++i) {
    const float want = x[i] > 0 ? (127.0f - 1.0f) * s : (-127.0f - 1.0f) * s;
    EXPECT_TRUE(SameFloat(want, out[i])) << i;
    EXPECT_EQ(dx[i], 0.0f) << i;
  }
  EXPECT_EQ(ds, -508.0f);
}

// PACT with alpha = 4, 8 bits: m = (1/4) * 255 = 63.75 exactly. Hand-computed from SPEC §5.3:
// y = clip(relu(x)); q = RNE(63.75 y); out = q / 63.75; dx = dy on (0, alpha); dalpha counts
// y >= alpha and NaN (torch.where's false branch).
TEST(LearnedRangeGoldenTest, PactAlpha4) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float x[8] = {-1.0f, 0.0f, 1.0f, 2.0f, 3.99f, 4.0f, 5.0f, nan};
  float dy[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  float out[8], dx[8], da = 0;
  const float alpha = 4.0f;
  PactOptions o{8, ParamLayout::PerTensor()};
  PactForward(TensorView::Vector(x, 8), &alpha, 1, o, TensorView::Vector(out, 8), Context{});
  PactBackward(TensorView::Vector(dy, 8), TensorView::Vector(x, 8), &alpha, 1, o,
               TensorView::Vector(dx, 8), &da, Context{});
  // 63.75 * 1 = 63.75 -> 64; 127.5 -> 128 (tie to even); 254.3625 -> 254; 255 at alpha.
  const float want_out[8] = {0.0f, 0.0f, 64.0f / 63.75f, 128.0f / 63.75f, 254.0f / 63.75f, 4.0f,
                             4.0f, 4.0f};
  const float want_dx[8] = {0, 0, 1, 1, 1, 0, 0, 0};
  EXPECT_TRUE(test::BitwiseEqual(want_out, out, 8, x));
  EXPECT_TRUE(test::BitwiseEqual(want_dx, dx, 8, x));
  EXPECT_EQ(da, 3.0f);
}

// NVIDIA Clip, cmin = -1, cmax = 2 (SPEC §4.3): strict masks; values on a bound feed that
// bound's gradient; NaN feeds both (dy * (1 - mask) upstream).
TEST(LearnedRangeGoldenTest, ClipStrictMasks) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float x[6] = {-3.0f, -1.0f, 0.5f, 2.0f, 5.0f, nan};
  float dy[6] = {1, 2, 3, 4, 5, 6};
  float out[6], dx[6], dmin = 0, dmax = 0;
  const float cmin = -1.0f, cmax = 2.0f;
  LearnedClipForward(TensorView::Vector(x, 6), &cmin, &cmax, 1, ClipOptions{},
                     TensorView::Vector(out, 6), Context{});
  LearnedClipBackward(TensorView::Vector(dy, 6), TensorView::Vector(x, 6), &cmin, &cmax, 1,
                      ClipOptions{}, TensorView::Vector(dx, 6), &dmin, &dmax, Context{});
  const float want_out[6] = {-1.0f, -1.0f, 0.5f, 2.0f, 2.0f, nan};
  const float want_dx[6] = {0, 0, 3, 0, 0, 0};
  EXPECT_TRUE(test::BitwiseEqual(want_out, out, 6, x));
  EXPECT_TRUE(test::BitwiseEqual(want_dx, dx, 6, x));
  EXPECT_EQ(dmin, 9.0f);   // -3, -1, NaN
  EXPECT_EQ(dmax, 15.0f);  // 2, 5, NaN
}

// PyTorch's backward zero point (SPEC §7.5): z = 2.5 rounds to 2 forward (RNE) but 3 backward
// (trunc(z + 0.5)) per tensor; per channel both are 2.
TEST(LearnedRangeGoldenTest, PyTorchZeroPointRoundingRules) {
  float x = -2.5f, out = 0, dy = 1, dx = 0, ds = 0, dz = 0;
  const float s = 1.0f, z = 2.5f;
  LsqOptions o;
  o.quant_min = 0;
  o.quant_max = 255;
  LsqForward(TensorView::Vector(&x, 1), &s, &z, 1, o, TensorView::Vector(&out, 1), Context{});
  EXPECT_EQ(out, -2.0f);  // RNE(-2.5) = -2; -2 + 2 = 0 in range; (0 - 2) * 1
  LsqBackward(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1), &s, &z, 1, o,
              TensorView::Vector(&dx, 1), &ds, &dz, Context{});
  EXPECT_EQ(dx, 1.0f);   // xq = RNE(3 - 2.5) = 0: in range
  EXPECT_EQ(ds, -0.5f);  // xfq = (0 - 3) * 1 = -3; -3 - (-2.5)
  EXPECT_EQ(dz, 0.0f);
  o.layout = ParamLayout::PerChannel(0);
  LsqBackward(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1), &s, &z, 1, o,
              TensorView::Vector(&dx, 1), &ds, &dz, Context{});
  // zb = 2: xq = RNE(2 - 2.5) = RNE(-0.5) = -0, in [0, 255]; xfq = (-0 - 2) = -2; ds = 0.5.
  EXPECT_EQ(dx, 1.0f);
  EXPECT_EQ(ds, 0.5f);
}

// LsqOptions::fused: values observed from Debian's torch 1.13 on this machine
// (_fake_quantize_learnable_per_tensor_affine, s = 0.0173, z = 3, [-128, 127], grad_factor 0.7,
// dy = 1, x = 1.3339108228683472): -0.07326899468898773 with its AVX-512 kernels (FMA
// contraction) and -0.07326892018318176 with ATEN_CPU_CAPABILITY=default.
TEST(LearnedRangeGoldenTest, PyTorchFusedMatchesTorchFmaBuild) {
  float x = 1.3339108228683472f, dy = 1.0f, dx = 0, ds = 0, dz = 0;
  const float s = 0.0173f, z = 3.0f;
  LsqOptions o;
  o.grad_scale = 0.7f;
  for (bool fused : {false, true}) {
    o.fused = fused;
    LsqBackward(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1), &s, &z, 1, o,
                TensorView::Vector(&dx, 1), &ds, &dz, Context{});
    EXPECT_EQ(ds, fused ? -0.07326899468898773f : -0.07326892018318176f) << "fused " << fused;
  }
}

// MegEngine module's step: s = |step| + eps; the step's gradient flips sign for step < 0.
TEST(LearnedRangeGoldenTest, AbsPlusEpsChainRule) {
  float x = 12.8f, dy = 1.0f, dx = 0, ds = 0;  // far above the range: ds_s = qmax * g
  const float z = 0.0f;
  LsqOptions o;
  o.variant = LsqVariant::kMegEngine;
  o.step_transform = StepTransform::kAbsPlusEps;
  o.step_eps = 1e-5f;
  for (float step : {0.05f, -0.05f, 0.0f}) {
    LsqBackward(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1), &step, &z, 1, o,
                TensorView::Vector(&dx, 1), &ds, nullptr, Context{});
    EXPECT_EQ(ds, step > 0 ? 127.0f : step < 0 ? -127.0f : 0.0f) << "step " << step;
  }
}

TEST(LearnedRangeGoldenTest, LsqGradScale) {
  // 1 / sqrt(100 * 127) rounded once.
  EXPECT_EQ(LsqGradScale(100, 127), static_cast<float>(1.0 / std::sqrt(12700.0)));
  EXPECT_THROW(LsqGradScale(0, 127), InvalidArgument);
  EXPECT_THROW(LsqGradScale(10, 0), InvalidArgument);
}

// ---- argument checks: every one names the function, the argument and the value --------------

template <class F>
void ExpectError(F&& f, const std::string& fragment, bool out_of_range = false) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning `" << fragment << "`";
  } catch (const OutOfRange& e) {
    EXPECT_TRUE(out_of_range) << "OutOfRange: " << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  } catch (const InvalidArgument& e) {
    EXPECT_FALSE(out_of_range) << "InvalidArgument: " << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(LearnedRangeErrorTest, BadArgumentsAreRefused) {
  float xs[6] = {1, 2, 3, 4, 5, 6}, out[6], dx[6], g[3];
  const TensorView x = TensorView::Contiguous(xs, DType::kFloat32, {2, 3});
  const TensorView o = TensorView::Contiguous(out, DType::kFloat32, {2, 3});
  const TensorView d = TensorView::Contiguous(dx, DType::kFloat32, {2, 3});
  const float step = 0.1f, zero = 0.0f, bad_step = -0.1f, inf = INFINITY;
  const float steps3[3] = {0.1f, 0.1f, 0.1f};
  const Context ctx;
  LsqOptions lsq;
  ExpectError([&] { LsqForward(x, &bad_step, &zero, 1, lsq, o, ctx); }, "qkit::LsqForward");
  ExpectError([&] { LsqForward(x, &inf, &zero, 1, lsq, o, ctx); }, "`step`[0]=inf");
  ExpectError([&] { LsqForward(x, &step, &inf, 1, lsq, o, ctx); }, "`zero_point`[0]=inf");
  LsqOptions bad_range = lsq;
  bad_range.quant_min = 5;
  bad_range.quant_max = 5;
  ExpectError([&] { LsqForward(x, &step, &zero, 1, bad_range, o, ctx); }, "`quant_min`=5");
  LsqOptions per_channel = lsq;
  per_channel.layout = ParamLayout::PerChannel(1);
  ExpectError([&] { LsqForward(x, &step, &zero, 1, per_channel, o, ctx); }, "needs 3");
  LsqBackward(x, x, steps3, steps3, 3, per_channel, d, g, g, ctx);  // 3 channels: accepted
  per_channel.layout = ParamLayout::PerChannel(2);
  ExpectError([&] { LsqForward(x, steps3, steps3, 3, per_channel, o, ctx); }, "`axis`=2",
              /*out_of_range=*/true);
  LsqOptions per_group = lsq;
  per_group.layout = ParamLayout::PerGroup(1, 2);
  ExpectError([&] { LsqForward(x, &step, &zero, 1, per_group, o, ctx); }, "per-group");
  LsqOptions bad_eps = lsq;
  bad_eps.step_transform = StepTransform::kAbsPlusEps;
  bad_eps.step_eps = -1.0f;
  ExpectError([&] { LsqForward(x, &step, &zero, 1, bad_eps, o, ctx); }, "`step_eps`=-1");
  int8_t ints[6] = {};
  const TensorView xi = TensorView::Contiguous(ints, DType::kInt8, {2, 3});
  ExpectError([&] { LsqForward(xi, &step, &zero, 1, lsq, o, ctx); }, "`x` must be float32");
  const TensorView wrong_shape = TensorView::Contiguous(out, DType::kFloat32, {3, 2});
  ExpectError([&] { LsqBackward(wrong_shape, x, &step, &zero, 1, lsq, d, g, g, ctx); },
              "shape mismatch");
  const float huge_log2 = 200.0f;
  ExpectError([&] { TqtForward(x, &huge_log2, 1, TqtOptions{}, o, ctx); }, "`log2_t`[0]=200");
  const float alpha = 1.0f;
  ExpectError([&] { PactForward(x, &alpha, 1, PactOptions{17, {}}, o, ctx); }, "`bits`=17");
  ExpectError([&] { LearnedClipForward(x, &inf, &alpha, 1, ClipOptions{}, o, ctx); },
              "`cmin`[0]=inf");
}

// Empty tensors: nothing written, sums are +0.
TEST(LearnedRangeErrorTest, EmptyTensorGivesZeroSums) {
  const TensorView x = TensorView::Contiguous(nullptr, DType::kFloat32, {0, 3});
  const float steps[3] = {0.1f, 0.2f, 0.3f}, zps[3] = {0, 0, 0};
  float g0[3] = {7, 7, 7}, g1[3] = {7, 7, 7};
  LsqOptions o;
  o.layout = ParamLayout::PerChannel(1);
  LsqBackward(x, x, steps, zps, 3, o, x, g0, g1, Context{});
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(SameFloat(g0[i], 0.0f));
    EXPECT_TRUE(SameFloat(g1[i], 0.0f));
  }
}

}  // namespace
}  // namespace qkit
