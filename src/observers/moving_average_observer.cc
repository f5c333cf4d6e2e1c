#include "qkit/observers/moving_average_observer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "internal/check.h"
#include "observers/observer_io.h"

namespace qkit {
namespace {

using internal::Json;

constexpr std::pair<const char*, MovingAverageVariant> kVariants[] = {
    {"oneflow", MovingAverageVariant::kOneFlow},
    {"megengine_ema", MovingAverageVariant::kMegEngineEma},
    {"torch", MovingAverageVariant::kTorch},
    {"distiller", MovingAverageVariant::kDistiller}};
constexpr std::pair<const char*, RunningRange> kRanges[] = {{"min_max", RunningRange::kMinMax},
                                                            {"abs_max", RunningRange::kAbsMax}};

const char* RangeName(RunningRange r) { return r == RunningRange::kAbsMax ? "abs_max" : "min_max"; }

bool SameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// max(|a|, |b|) with NaN propagating (kPropagate).
float AbsMaxProp(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  const float x = std::fabs(a), y = std::fabs(b);
  return y > x ? y : x;
}

// ---- the four update rules, one slot, float32 (compiled with -ffp-contract=off) -------------

// OneFlow: re-initialise whenever the stored value is exactly 0, else old*m + cur*(1-m).
float OneFlowUpdate(float old, float cur, float m, float one_minus_m) {
  if (old == 0.0f) return cur;
  return old * m + cur * one_minus_m;
}

// MegEngine: old*rm + (1-rm)*cur with the runtime momentum rm (0 on the first update).
float MegEngineUpdate(float old, float cur, float rm) {
  const float one_minus_rm = 1.0f - rm;
  return old * rm + one_minus_rm * cur;
}

// PyTorch / Horizon: old + c*(cur - old) (not (1-c)*old + c*cur: they differ in the last bit).
float TorchUpdate(float old, float cur, float c) { return old + c * (cur - old); }

struct DistillerResult {
  float biased;
  float unbiased;
};
// Distiller update_ema: biased*d + (1-d)*cur, then Adam-style bias correction with the
// float32 pow of (d, step).
DistillerResult DistillerUpdate(float biased, float cur, float d, int64_t step) {
  const float one_minus_d = 1.0f - d;
  const float b = biased * d + one_minus_d * cur;
  const float correction = 1.0f - std::pow(d, static_cast<float>(step));  // powf
  return {b, b / correction};
}

void ValidateState(const MovingAverageObserverOptions& o, const MovingAverageObserverState& s,
                   const char* caller) {
  const size_t n = s.min_val.size();
  const bool distiller = o.variant == MovingAverageVariant::kDistiller;
  const size_t nb = distiller ? n : 0;
  QKIT_REQUIRE(s.max_val.size() == n && s.num_updates.size() == n && s.biased_min.size() == nb &&
                   s.biased_max.size() == nb,
               InvalidArgument,
               caller << ": inconsistent state: " << n << " `min_val`, " << s.max_val.size()
                      << " `max_val`, " << s.num_updates.size() << " `num_updates`, "
                      << s.biased_min.size() << " `biased_min`, " << s.biased_max.size()
                      << " `biased_max` (biased_* are " << (distiller ? "per slot" : "empty")
                      << " for variant " << MovingAverageVariantName(o.variant) << ")");
  QKIT_REQUIRE(s.nonfinite_count >= 0, InvalidArgument,
               caller << ": `nonfinite_count`=" << s.nonfinite_count << " is negative");
  for (size_t p = 0; p < n; ++p) {
    QKIT_REQUIRE(s.num_updates[p] >= 0, InvalidArgument,
                 caller << ": `num_updates[" << p << "]`=" << s.num_updates[p] << " is negative");
    if (s.num_updates[p] == 0) {
      const bool zeros = s.min_val[p] == 0.0f && s.max_val[p] == 0.0f &&
                         (!distiller || (s.biased_min[p] == 0.0f && s.biased_max[p] == 0.0f));
      QKIT_REQUIRE(zeros, InvalidArgument,
                   caller << ": slot " << p << " is empty (`num_updates`=0) but holds ["
                          << s.min_val[p] << ", " << s.max_val[p] << "] (expected 0)");
    }
    if (o.range == RunningRange::kAbsMax) {
      QKIT_REQUIRE(SameBits(s.min_val[p], s.max_val[p]), InvalidArgument,
                   caller << ": slot " << p << ": `range`=abs_max needs `min_val` == `max_val`, "
                          << "got " << s.min_val[p] << " and " << s.max_val[p]);
    }
  }
}

}  // namespace

const char* MovingAverageVariantName(MovingAverageVariant v) {
  for (const auto& [name, value] : kVariants) {
    if (value == v) return name;
  }
  return "unknown";
}

float MovingAverageObserverOptions::Momentum() const {
  if (momentum) return *momentum;
  switch (variant) {
    case MovingAverageVariant::kOneFlow: return 0.95f;
    case MovingAverageVariant::kMegEngineEma: return 0.9f;
    case MovingAverageVariant::kTorch: return 0.01f;
    case MovingAverageVariant::kDistiller: return 0.999f;
  }
  return 0.0f;
}

std::optional<int64_t> MovingAverageObserverOptions::StopUpdateAfterIters() const {
  if (stop_update_after_iters) return stop_update_after_iters;
  if (variant == MovingAverageVariant::kOneFlow) return int64_t{1};
  return std::nullopt;
}

MovingAverageObserverOptions MovingAverageObserverOptions::OneFlow(bool symmetric) {
  MovingAverageObserverOptions o;
  o.variant = MovingAverageVariant::kOneFlow;
  o.range = symmetric ? RunningRange::kAbsMax : RunningRange::kMinMax;
  return o;
}
MovingAverageObserverOptions MovingAverageObserverOptions::MegEngine() {
  MovingAverageObserverOptions o;
  o.variant = MovingAverageVariant::kMegEngineEma;
  return o;
}
MovingAverageObserverOptions MovingAverageObserverOptions::Torch() {
  MovingAverageObserverOptions o;
  o.variant = MovingAverageVariant::kTorch;
  return o;
}
MovingAverageObserverOptions MovingAverageObserverOptions::Distiller() {
  MovingAverageObserverOptions o;
  o.variant = MovingAverageVariant::kDistiller;
  return o;
}

void MovingAverageObserverOptions::Validate(const char* caller) const {
  QKIT_REQUIRE(static_cast<int>(variant) <= 3, InvalidArgument,
               caller << ": `variant`=" << static_cast<int>(variant)
                      << " is not a MovingAverageVariant");
  QKIT_REQUIRE(static_cast<int>(range) <= 1, InvalidArgument,
               caller << ": `range`=" << static_cast<int>(range) << " is not a RunningRange");
  if (momentum) {
    const float m = *momentum;
    const bool distiller = variant == MovingAverageVariant::kDistiller;
    QKIT_REQUIRE(m >= 0.0f && (distiller ? m < 1.0f : m <= 1.0f), InvalidArgument,
                 caller << ": `momentum`=" << m << " outside " << (distiller ? "[0, 1)" : "[0, 1]")
                        << " for variant " << MovingAverageVariantName(variant)
                        << (distiller ? " (the bias correction divides by 1 - momentum^step)"
                                      : ""));
  }
  QKIT_REQUIRE(range == RunningRange::kMinMax || variant == MovingAverageVariant::kOneFlow,
               InvalidArgument,
               caller << ": `range`=abs_max is OneFlow's symmetric rule; variant "
                      << MovingAverageVariantName(variant) << " tracks min_max");
  if (stop_update_after_iters) {
    QKIT_REQUIRE(*stop_update_after_iters > 0, InvalidArgument,
                 caller << ": `stop_update_after_iters`=" << *stop_update_after_iters
                        << " must be > 0");
  }
  QKIT_REQUIRE(static_cast<int>(layout.granularity) <= 2, InvalidArgument,
               caller << ": `layout.granularity`=" << static_cast<int>(layout.granularity)
                      << " is not a Granularity");
  QKIT_REQUIRE(layout.granularity != Granularity::kPerGroup || layout.group_size >= 1,
               InvalidArgument,
               caller << ": `layout.group_size`=" << layout.group_size << " must be >= 1");
  QKIT_REQUIRE(static_cast<int>(nonfinite) <= 2, InvalidArgument,
               caller << ": `nonfinite`=" << static_cast<int>(nonfinite)
                      << " is not a NonFinite policy");
}

MovingAverageObserver::MovingAverageObserver(const MovingAverageObserverOptions& options)
    : options_(options) {
  options_.Validate("qkit::MovingAverageObserver");
}

MovingAverageObserver::MovingAverageObserver(const MovingAverageObserverOptions& options,
                                             const MovingAverageObserverState& state)
    : options_(options), state_(state) {
  options_.Validate("qkit::MovingAverageObserver");
  ValidateState(options_, state_, "qkit::MovingAverageObserver");
}

bool MovingAverageObserver::empty() const {
  for (int64_t c : state_.num_updates) {
    if (c > 0) return false;
  }
  return true;
}

bool MovingAverageObserver::GateOpen(const UpdateGate& gate) const {
  if (!gate.training) return false;
  const auto stop = options_.StopUpdateAfterIters();
  return !stop || gate.current_train_step <= *stop;
}

RangeStats MovingAverageObserver::BatchRangeImpl(const TensorView& x, const Context& ctx,
                                                 const char* caller) const {
  // The slot count is checked before x is read; an empty x changes nothing and may have any.
  const int64_t n = NumParams(x, options_.layout, caller);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, caller);
  return ComputeBatchRange(x, options_.layout, options_.nonfinite, ctx, caller);
}

RangeStats MovingAverageObserver::BatchRange(const TensorView& x, const Context& ctx) const {
  return BatchRangeImpl(x, ctx, "qkit::MovingAverageObserver::BatchRange");
}

void MovingAverageObserver::Observe(const TensorView& x, const Context& ctx,
                                    const UpdateGate& gate) {
  constexpr const char* kCaller = "qkit::MovingAverageObserver::Observe";
  if (!GateOpen(gate)) {
    // Commit(BatchRange(x), gate) would not change the state: validate x without reading it.
    QKIT_REQUIRE(IsFloating(x.dtype), InvalidArgument,
                 kCaller << ": `x` has dtype " << DTypeName(x.dtype)
                         << "; observers take float32, float16 or bfloat16");
    const int64_t n = NumParams(x, options_.layout, kCaller);
    if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, kCaller);
    return;
  }
  CommitImpl(BatchRangeImpl(x, ctx, kCaller), gate, kCaller);
}

void MovingAverageObserver::Commit(const RangeStats& merged, const UpdateGate& gate) {
  CommitImpl(merged, gate, "qkit::MovingAverageObserver::Commit");
}

void MovingAverageObserver::CommitImpl(const RangeStats& merged, const UpdateGate& gate,
                                       const char* caller) {
  merged.Validate(caller);
  bool any = merged.nonfinite > 0;
  for (int64_t c : merged.observed) any = any || c > 0;
  if (!any) return;  // an empty batch leaves the state unchanged, whatever its slot count
  internal::CheckSlotCount(merged.num_slots(), num_slots(), options_.layout, nullptr, caller);
  if (!GateOpen(gate)) return;

  MovingAverageObserverState next = state_;
  const size_t n = merged.min.size();
  const bool distiller = options_.variant == MovingAverageVariant::kDistiller;
  if (next.min_val.empty()) {
    next.min_val.assign(n, 0.0f);
    next.max_val.assign(n, 0.0f);
    next.num_updates.assign(n, 0);
    if (distiller) {
      next.biased_min.assign(n, 0.0f);
      next.biased_max.assign(n, 0.0f);
    }
  }
  const float m = options_.Momentum();
  for (size_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) continue;
    const float cur_min = merged.min[p];
    const float cur_max = merged.max[p];
    float& mn = next.min_val[p];
    float& mx = next.max_val[p];
    const bool first = next.num_updates[p] == 0;
    switch (options_.variant) {
      case MovingAverageVariant::kOneFlow: {
        const float one_minus_m = 1.0f - m;
        if (options_.range == RunningRange::kAbsMax) {
          mx = OneFlowUpdate(mx, AbsMaxProp(cur_min, cur_max), m, one_minus_m);
          mn = mx;
        } else {
          mx = OneFlowUpdate(mx, cur_max, m, one_minus_m);
          mn = OneFlowUpdate(mn, cur_min, m, one_minus_m);
        }
        break;
      }
      case MovingAverageVariant::kMegEngineEma: {
        const float rm = first ? 0.0f : m;
        mn = MegEngineUpdate(mn, cur_min, rm);
        mx = MegEngineUpdate(mx, cur_max, rm);
        break;
      }
      case MovingAverageVariant::kTorch:
        if (first) {
          mn = cur_min;
          mx = cur_max;
        } else {
          mn = TorchUpdate(mn, cur_min, m);
          mx = TorchUpdate(mx, cur_max, m);
        }
        break;
      case MovingAverageVariant::kDistiller: {
        const int64_t step = next.num_updates[p] + 1;
        const DistillerResult rmin = DistillerUpdate(next.biased_min[p], cur_min, m, step);
        const DistillerResult rmax = DistillerUpdate(next.biased_max[p], cur_max, m, step);
        next.biased_min[p] = rmin.biased;
        next.biased_max[p] = rmax.biased;
        mn = rmin.unbiased;
        mx = rmax.unbiased;
        break;
      }
    }
    ++next.num_updates[p];
  }
  next.nonfinite_count += merged.nonfinite;
  state_ = std::move(next);
}

void MovingAverageObserver::ComputeQParams(const QuantSpec& spec, const QParamsRule& rule,
                                           float* scale, float* zero_point) const {
  QKIT_REQUIRE(options_.range == RunningRange::kMinMax || spec.symmetric, InvalidArgument,
               "qkit::MovingAverageObserver::ComputeQParams: `range`=abs_max tracks the abs "
               "max only (min_val == max_val > 0); it needs a symmetric spec (`symmetric`=false)");
  internal::ComputeQParamsFromRanges(options_.layout, state_.min_val, state_.max_val,
                                     state_.num_updates, spec, rule, scale, zero_point,
                                     "qkit::MovingAverageObserver::ComputeQParams");
}

void MovingAverageObserver::Reset() { state_ = MovingAverageObserverState{}; }

std::vector<uint8_t> MovingAverageObserver::Save() const {
  BlobWriter w(kKind, kStateVersion);
  w.U8(static_cast<uint8_t>(options_.variant));
  w.Bool(options_.momentum.has_value());
  w.F32(options_.momentum.value_or(0.0f));
  w.U8(static_cast<uint8_t>(options_.range));
  w.Bool(options_.stop_update_after_iters.has_value());
  w.I64(options_.stop_update_after_iters.value_or(0));
  internal::WriteLayout(w, options_.layout);
  internal::WriteNonFinite(w, options_.nonfinite);
  w.F32Vector(state_.min_val);
  w.F32Vector(state_.max_val);
  w.F32Vector(state_.biased_min);
  w.F32Vector(state_.biased_max);
  w.I64Vector(state_.num_updates);
  w.I64(state_.nonfinite_count);
  return w.Finish();
}

MovingAverageObserver MovingAverageObserver::Load(const uint8_t* data, size_t size) {
  constexpr const char* kCaller = "qkit::MovingAverageObserver::Load";
  BlobReader r(data, size, kKind, kStateVersion, kCaller);
  MovingAverageObserverOptions o;
  o.variant = static_cast<MovingAverageVariant>(internal::ReadEnum(r, 4, "variant", kCaller));
  const bool has_m = r.Bool();
  const float m = r.F32();
  if (has_m) o.momentum = m;
  o.range = static_cast<RunningRange>(internal::ReadEnum(r, 2, "range", kCaller));
  const bool has_stop = r.Bool();
  const int64_t stop = r.I64();
  if (has_stop) o.stop_update_after_iters = stop;
  o.layout = internal::ReadLayout(r, kCaller);
  o.nonfinite = internal::ReadNonFinite(r, kCaller);
  MovingAverageObserverState s;
  s.min_val = r.F32Vector();
  const auto n = static_cast<int64_t>(s.min_val.size());
  s.max_val = r.F32Vector(n);
  s.biased_min = r.F32Vector();
  s.biased_max = r.F32Vector();
  s.num_updates = r.I64Vector(n);
  s.nonfinite_count = r.I64();
  r.ExpectEnd();
  try {
    return MovingAverageObserver(o, s);
  } catch (const InvalidArgument& e) {
    throw DataLoss(std::string(kCaller) + ": state blob holds an invalid observer: " + e.what());
  }
}

std::string MovingAverageObserver::ToJson() const {
  Json j = internal::ObserverJsonHeader(kKind, kStateVersion);
  Json o = Json::object();
  o["variant"] = MovingAverageVariantName(options_.variant);
  o["momentum"] = options_.momentum ? internal::FloatToJson(*options_.momentum) : Json(nullptr);
  o["range"] = RangeName(options_.range);
  o["stop_update_after_iters"] =
      options_.stop_update_after_iters ? Json(*options_.stop_update_after_iters) : Json(nullptr);
  o["layout"] = internal::LayoutToJson(options_.layout);
  o["nonfinite"] = NonFiniteName(options_.nonfinite);
  j["options"] = o;
  j["state"] = {{"min_val", internal::FloatsToJson(state_.min_val)},
                {"max_val", internal::FloatsToJson(state_.max_val)},
                {"biased_min", internal::FloatsToJson(state_.biased_min)},
                {"biased_max", internal::FloatsToJson(state_.biased_max)},
                {"num_updates", state_.num_updates},
                {"nonfinite_count", state_.nonfinite_count}};
  return j.dump();
}

MovingAverageObserver MovingAverageObserver::FromJson(std::string_view json) {
  constexpr const char* kCaller = "qkit::MovingAverageObserver::FromJson";
  using internal::JsonField;
  const Json j = internal::ParseObserverJson(json, kKind, kStateVersion, kCaller);
  const Json& jo = JsonField(j, "options", "", kCaller);
  const Json& js = JsonField(j, "state", "", kCaller);
  MovingAverageObserverOptions o;
  {
    const std::string v = internal::StringFromJson(JsonField(jo, "variant", "options", kCaller),
                                                   "options.variant", kCaller);
    bool found = false;
    for (const auto& [name, value] : kVariants) {
      if (v == name) {
        o.variant = value;
        found = true;
      }
    }
    QKIT_REQUIRE(found, InvalidArgument,
                 kCaller << ": JSON field `options.variant`=\"" << v
                         << "\" is not one of oneflow, megengine_ema, torch, distiller");
  }
  const Json& jm = JsonField(jo, "momentum", "options", kCaller);
  if (!jm.is_null()) o.momentum = internal::FloatFromJson(jm, "options.momentum", kCaller);
  {
    const std::string r = internal::StringFromJson(JsonField(jo, "range", "options", kCaller),
                                                   "options.range", kCaller);
    bool found = false;
    for (const auto& [name, value] : kRanges) {
      if (r == name) {
        o.range = value;
        found = true;
      }
    }
    QKIT_REQUIRE(found, InvalidArgument,
                 kCaller << ": JSON field `options.range`=\"" << r
                         << "\" is not one of min_max, abs_max");
  }
  const Json& jstop = JsonField(jo, "stop_update_after_iters", "options", kCaller);
  if (!jstop.is_null()) {
    o.stop_update_after_iters =
        internal::Int64FromJson(jstop, "options.stop_update_after_iters", kCaller);
  }
  o.layout = internal::LayoutFromJson(JsonField(jo, "layout", "options", kCaller),
                                      "options.layout", kCaller);
  o.nonfinite = internal::NonFiniteFromJson(JsonField(jo, "nonfinite", "options", kCaller),
                                            "options.nonfinite", kCaller);
  MovingAverageObserverState s;
  s.min_val = internal::FloatsFromJson(JsonField(js, "min_val", "state", kCaller),
                                       "state.min_val", kCaller);
  s.max_val = internal::FloatsFromJson(JsonField(js, "max_val", "state", kCaller),
                                       "state.max_val", kCaller);
  s.biased_min = internal::FloatsFromJson(JsonField(js, "biased_min", "state", kCaller),
                                          "state.biased_min", kCaller);
  s.biased_max = internal::FloatsFromJson(JsonField(js, "biased_max", "state", kCaller),
                                          "state.biased_max", kCaller);
  s.num_updates = internal::Int64sFromJson(JsonField(js, "num_updates", "state", kCaller),
                                           "state.num_updates", kCaller);
  s.nonfinite_count = internal::Int64FromJson(JsonField(js, "nonfinite_count", "state", kCaller),
                                              "state.nonfinite_count", kCaller);
  return MovingAverageObserver(o, s);
}

}  // namespace qkit
