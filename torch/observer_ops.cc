// Kernels of the observer ops (schemas in register_ops.cc): each call rebuilds the core observer
// (include/qkit/observers/*.h) from its state tensors (the Python module's buffers, validated by
// the core's state constructor), runs one core call, and returns the new state as fresh tensors.
// A call that throws returns nothing, so the caller's buffers are never half-updated. No formula
// here: every number comes from the core observer.
//
// State tensors, per `kind` (the order of Tensor[] state):
//   minmax:               min_val f32[n], max_val f32[n], num_batches i64[n], nonfinite_count i64[]
//   moving_average:       min_val f32[n], max_val f32[n], biased_min f32[n or 0],
//                         biased_max f32[n or 0], num_updates i64[n], nonfinite_count i64[]
//   histogram:            min_val f32[n], max_val f32[n], histogram i64[n, bins],
//                         num_batches i64[n], nonfinite_count i64[]
//   histogram_calibrator: hist i64[sum hist_len], hist_len i64[n], edges f64[sum edges_len],
//                         edges_len i64[n], edges_f64 u8[n], num_bins i64[n] (buffer
//                         hist_num_bins), nonfinite_count i64[], dropped_count i64[]
//   passive:              scale f32[n], zero_point f32[n], orig_scale f32[n or 0]
// Batch statistics (RangeStats): min f32[n], max f32[n], observed i64[n], nonfinite i64[].
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "errors.h"
#include "op_args.h"
#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#include "qkit/observers/minmax_observer.h"
#include "qkit/observers/moving_average_observer.h"
#include "qkit/observers/passive_observer.h"
#include "qkit/observers/range_stats.h"
#include "tensor_view.h"

namespace qkit::torch_ext {
namespace {

enum class ObsKind { kMinMax, kMovingAverage, kHistogram, kHistogramCalibrator, kPassive };

// ---- state tensors <-> vectors ---------------------------------------------------------------

// A state tensor of `dtype` with `dims` dims (-1: any), as a contiguous CPU tensor.
at::Tensor StateTensor(const at::TensorList& state, size_t i, const char* name,
                       at::ScalarType dtype, int64_t dims, const char* op) {
  TORCH_CHECK_VALUE(i < state.size(), op, ": `state` has ", state.size(),
                    " tensors; this observer kind needs more (missing `", name, "`)");
  const at::Tensor& t = state[i];
  CheckCpuDense(t, op, name);
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, op, ": state tensor `", name, "` has dtype ",
                    t.scalar_type(), "; expected ", dtype);
  TORCH_CHECK_VALUE(dims < 0 || t.dim() == dims, op, ": state tensor `", name, "` has ", t.dim(),
                    " dims (shape ", t.sizes(), "); expected ", dims);
  return t.contiguous();
}

template <class T>
std::vector<T> ToVec(const at::Tensor& t) {
  const T* p = t.data_ptr<T>();
  return std::vector<T>(p, p + t.numel());
}

std::vector<float> F32(const at::TensorList& s, size_t i, const char* name, const char* op) {
  return ToVec<float>(StateTensor(s, i, name, at::kFloat, 1, op));
}
std::vector<int64_t> I64(const at::TensorList& s, size_t i, const char* name, const char* op) {
  return ToVec<int64_t>(StateTensor(s, i, name, at::kLong, 1, op));
}
int64_t I64Scalar(const at::TensorList& s, size_t i, const char* name, const char* op) {
  return StateTensor(s, i, name, at::kLong, 0, op).item<int64_t>();
}

void CheckCount(const at::TensorList& s, size_t n, const char* kind, const char* op) {
  TORCH_CHECK_VALUE(s.size() == n, op, ": `state` has ", s.size(), " tensors; kind '", kind,
                    "' has ", n);
}

template <class T>
at::Tensor FromVec(const std::vector<T>& v, at::ScalarType dtype) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size())}, at::TensorOptions().dtype(dtype));
  if (!v.empty()) std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(T));
  return t;
}
at::Tensor Scalar64(int64_t v) {
  return at::scalar_tensor(v, at::TensorOptions().dtype(at::kLong));
}

// ---- options ---------------------------------------------------------------------------------

// The observer keywords (kObs in register_ops.cc) and the QuantSpec keywords without layout.
#define QKIT_OBS_PARAMS                                                                         \
  c10::string_view kind, c10::optional<int64_t> axis, int64_t group_size,                       \
      c10::string_view nonfinite, c10::string_view variant, c10::optional<double> momentum,     \
      c10::string_view running_range, c10::optional<int64_t> stop_update_after_iters,           \
      int64_t bins, int64_t upsample_rate, int64_t dst_nbins, bool error_on_nonfinite,          \
      int64_t num_bits, bool is_unsigned, bool skip_zeros, bool torch_hist,                     \
      c10::string_view torch_binning, int64_t bits, bool is_signed, bool narrow_range,          \
      c10::optional<int64_t> quant_min, c10::optional<int64_t> quant_max,                       \
      c10::string_view rounding, c10::string_view scale_mode, c10::string_view zero_point_mode, \
      c10::string_view nan_mode
#define QKIT_OBS_ARGS                                                                            \
  ObsArgs {                                                                                      \
    std::string(kind), axis, group_size, std::string(nonfinite), std::string(variant), momentum, \
        std::string(running_range), stop_update_after_iters, bins, upsample_rate, dst_nbins,     \
        error_on_nonfinite, num_bits, is_unsigned, skip_zeros, torch_hist,                       \
        std::string(torch_binning), SpecArgs {                                                   \
      bits, is_signed, narrow_range, quant_min, quant_max, std::string(rounding),                \
          std::string(scale_mode), std::string(zero_point_mode), std::string(nan_mode), axis,    \
          group_size                                                                             \
    }                                                                                            \
  }

struct ObsArgs {
  std::string kind;
  c10::optional<int64_t> axis;
  int64_t group_size;
  std::string nonfinite, variant;
  c10::optional<double> momentum;
  std::string running_range;
  c10::optional<int64_t> stop_update_after_iters;
  int64_t bins, upsample_rate, dst_nbins;
  bool error_on_nonfinite;
  int64_t num_bits;
  bool is_unsigned, skip_zeros, torch_hist;
  std::string torch_binning;
  SpecArgs spec;

  ObsKind Kind(const char* op) const {
    return Parse<ObsKind>(
        kind, {"minmax", "moving_average", "histogram", "histogram_calibrator", "passive"},
        {ObsKind::kMinMax, ObsKind::kMovingAverage, ObsKind::kHistogram,
         ObsKind::kHistogramCalibrator, ObsKind::kPassive},
        op, "kind");
  }
  ParamLayout Layout() const { return spec.Layout(); }
  QuantSpec Spec(const char* op) const { return spec.Spec(op); }

  MinMaxObserverOptions MinMax(const char* op) const {
    MinMaxObserverOptions o;
    o.layout = Layout();
    o.nonfinite = ParseNonFinite(nonfinite, op);
    return o;
  }
  MovingAverageObserverOptions MovingAverage(const char* op) const {
    MovingAverageObserverOptions o;
    o.variant = Parse<MovingAverageVariant>(
        variant, {"oneflow", "megengine", "torch", "distiller"},
        {MovingAverageVariant::kOneFlow, MovingAverageVariant::kMegEngineEma,
         MovingAverageVariant::kTorch, MovingAverageVariant::kDistiller},
        op, "variant");
    if (momentum.has_value()) o.momentum = static_cast<float>(*momentum);
    o.range = Parse<RunningRange>(running_range, {"minmax", "absmax"},
                                  {RunningRange::kMinMax, RunningRange::kAbsMax}, op, "range");
    if (stop_update_after_iters.has_value()) o.stop_update_after_iters = *stop_update_after_iters;
    o.layout = Layout();
    o.nonfinite = ParseNonFinite(nonfinite, op);
    return o;
  }
  HistogramObserverOptions Histogram(const char* op) const {
    HistogramObserverOptions o;
    o.layout = Layout();
    o.bins = bins;
    o.upsample_rate = upsample_rate;
    o.dst_nbins = dst_nbins;
    o.error_on_nonfinite = error_on_nonfinite;
    return o;
  }
  HistogramCalibratorOptions Calibrator(const char* op) const {
    HistogramCalibratorOptions o;
    o.layout = Layout();
    o.num_bins = bins;
    o.num_bits = static_cast<int>(num_bits);
    o.is_unsigned = is_unsigned;
    o.skip_zeros = skip_zeros;
    o.torch_hist = torch_hist;
    o.torch_binning = Parse<HistogramBinning>(
        torch_binning, {"histc", "histc_divide_first"},
        {HistogramBinning::kTorchHistc, HistogramBinning::kTorchHistcDivideFirst}, op,
        "torch_binning");
    o.error_on_nonfinite = error_on_nonfinite;
    return o;
  }
  PassiveObserverOptions Passive(const char* op) const {
    PassiveObserverOptions o;
    o.spec = Spec(op);
    return o;
  }
};

// ---- the observer, rebuilt from its state ----------------------------------------------------

using AnyObserver = std::variant<MinMaxObserver, MovingAverageObserver, HistogramObserver,
                                 HistogramCalibrator, PassiveObserver>;

AnyObserver Build(const ObsArgs& a, const at::TensorList& s, const char* op) {
  switch (a.Kind(op)) {
    case ObsKind::kMinMax: {
      CheckCount(s, 4, "minmax", op);
      MinMaxObserverState st{F32(s, 0, "min_val", op), F32(s, 1, "max_val", op),
                             I64(s, 2, "num_batches", op), I64Scalar(s, 3, "nonfinite_count", op)};
      const auto o = a.MinMax(op);
      return Translate([&] { return AnyObserver(MinMaxObserver(o, st)); });
    }
    case ObsKind::kMovingAverage: {
      CheckCount(s, 6, "moving_average", op);
      MovingAverageObserverState st{
          F32(s, 0, "min_val", op),     F32(s, 1, "max_val", op),
          F32(s, 2, "biased_min", op),  F32(s, 3, "biased_max", op),
          I64(s, 4, "num_updates", op), I64Scalar(s, 5, "nonfinite_count", op)};
      const auto o = a.MovingAverage(op);
      return Translate([&] { return AnyObserver(MovingAverageObserver(o, st)); });
    }
    case ObsKind::kHistogram: {
      CheckCount(s, 5, "histogram", op);
      const at::Tensor h = StateTensor(s, 2, "histogram", at::kLong, 2, op);
      TORCH_CHECK_VALUE(h.size(1) == a.bins, op, ": state tensor `histogram` has shape ", h.sizes(),
                        "; expected [slots, ", a.bins, "] (bins=", a.bins, ")");
      HistogramObserverState st{F32(s, 0, "min_val", op), F32(s, 1, "max_val", op),
                                ToVec<int64_t>(h), I64(s, 3, "num_batches", op),
                                I64Scalar(s, 4, "nonfinite_count", op)};
      const auto o = a.Histogram(op);
      return Translate([&] { return AnyObserver(HistogramObserver(o, st)); });
    }
    case ObsKind::kHistogramCalibrator: {
      CheckCount(s, 8, "histogram_calibrator", op);
      const std::vector<int64_t> hist = I64(s, 0, "hist", op);
      const std::vector<int64_t> hist_len = I64(s, 1, "hist_len", op);
      const std::vector<double> edges =
          ToVec<double>(StateTensor(s, 2, "edges", at::kDouble, 1, op));
      const std::vector<int64_t> edges_len = I64(s, 3, "edges_len", op);
      const std::vector<uint8_t> edges_f64 =
          ToVec<uint8_t>(StateTensor(s, 4, "edges_f64", at::kByte, 1, op));
      HistogramCalibratorState st;
      const size_t n = hist_len.size();
      TORCH_CHECK_VALUE(edges_len.size() == n, op, ": state tensors `hist_len` (", n,
                        " slots) and `edges_len` (", edges_len.size(), ") differ in length");
      size_t ho = 0, eo = 0;
      for (size_t p = 0; p < n; ++p) {
        TORCH_CHECK_VALUE(hist_len[p] >= 0 && hist_len[p] <= static_cast<int64_t>(hist.size() - ho),
                          op, ": state tensor `hist_len`[", p, "]=", hist_len[p],
                          " does not fit `hist` (", hist.size(), " counts)");
        TORCH_CHECK_VALUE(
            edges_len[p] >= 0 && edges_len[p] <= static_cast<int64_t>(edges.size() - eo), op,
            ": state tensor `edges_len`[", p, "]=", edges_len[p], " does not fit `edges` (",
            edges.size(), " values)");
        st.hist.emplace_back(hist.begin() + ho, hist.begin() + ho + hist_len[p]);
        st.edges.emplace_back(edges.begin() + eo, edges.begin() + eo + edges_len[p]);
        ho += hist_len[p];
        eo += edges_len[p];
      }
      TORCH_CHECK_VALUE(ho == hist.size() && eo == edges.size(), op,
                        ": state tensors `hist` / `edges` hold ", hist.size(), " / ", edges.size(),
                        " values but `hist_len` / `edges_len` sum to ", ho, " / ", eo);
      st.edges_f64 = edges_f64;
      st.num_bins = I64(s, 5, "num_bins", op);
      st.nonfinite_count = I64Scalar(s, 6, "nonfinite_count", op);
      st.dropped_count = I64Scalar(s, 7, "dropped_count", op);
      const auto o = a.Calibrator(op);
      return Translate([&] { return AnyObserver(HistogramCalibrator(o, st)); });
    }
    case ObsKind::kPassive: {
      CheckCount(s, 3, "passive", op);
      PassiveObserverState st{F32(s, 0, "scale", op), F32(s, 1, "zero_point", op),
                              F32(s, 2, "orig_scale", op)};
      const auto o = a.Passive(op);
      return Translate([&] { return AnyObserver(PassiveObserver(o, st)); });
    }
  }
  TORCH_CHECK(false, op, ": unreachable observer kind");
}

std::vector<at::Tensor> StateOf(const AnyObserver& obs) {
  if (auto* o = std::get_if<MinMaxObserver>(&obs)) {
    const auto& s = o->state();
    return {FromVec(s.min_val, at::kFloat), FromVec(s.max_val, at::kFloat),
            FromVec(s.num_batches, at::kLong), Scalar64(s.nonfinite_count)};
  }
  if (auto* o = std::get_if<MovingAverageObserver>(&obs)) {
    const auto& s = o->state();
    return {FromVec(s.min_val, at::kFloat),    FromVec(s.max_val, at::kFloat),
            FromVec(s.biased_min, at::kFloat), FromVec(s.biased_max, at::kFloat),
            FromVec(s.num_updates, at::kLong), Scalar64(s.nonfinite_count)};
  }
  if (auto* o = std::get_if<HistogramObserver>(&obs)) {
    const auto& s = o->state();
    const int64_t n = o->num_slots();
    return {FromVec(s.min_val, at::kFloat), FromVec(s.max_val, at::kFloat),
            FromVec(s.histogram, at::kLong).reshape({n, o->options().bins}),
            FromVec(s.num_batches, at::kLong), Scalar64(s.nonfinite_count)};
  }
  if (auto* o = std::get_if<HistogramCalibrator>(&obs)) {
    const auto& s = o->state();
    std::vector<int64_t> hist, hist_len, edges_len;
    std::vector<double> edges;
    for (size_t p = 0; p < s.hist.size(); ++p) {
      hist.insert(hist.end(), s.hist[p].begin(), s.hist[p].end());
      hist_len.push_back(static_cast<int64_t>(s.hist[p].size()));
      edges.insert(edges.end(), s.edges[p].begin(), s.edges[p].end());
      edges_len.push_back(static_cast<int64_t>(s.edges[p].size()));
    }
    return {FromVec(hist, at::kLong),        FromVec(hist_len, at::kLong),
            FromVec(edges, at::kDouble),     FromVec(edges_len, at::kLong),
            FromVec(s.edges_f64, at::kByte), FromVec(s.num_bins, at::kLong),
            Scalar64(s.nonfinite_count),     Scalar64(s.dropped_count)};
  }
  const auto& s = std::get<PassiveObserver>(obs).state();
  return {FromVec(s.scale, at::kFloat), FromVec(s.zero_point, at::kFloat),
          FromVec(s.orig_scale, at::kFloat)};
}

// ---- RangeStats <-> tensors ----------------------------------------------------------------

using StatsTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

StatsTuple FromStats(const RangeStats& r) {
  return {FromVec(r.min, at::kFloat), FromVec(r.max, at::kFloat), FromVec(r.observed, at::kLong),
          Scalar64(r.nonfinite)};
}

RangeStats ToStats(const at::Tensor& mn, const at::Tensor& mx, const at::Tensor& observed,
                   const at::Tensor& nonfinite, const char* op) {
  const std::vector<at::Tensor> v{mn, mx, observed, nonfinite};
  const at::TensorList l(v);
  RangeStats r;
  r.min = F32(l, 0, "min", op);
  r.max = F32(l, 1, "max", op);
  r.observed = I64(l, 2, "observed", op);
  r.nonfinite = I64Scalar(l, 3, "nonfinite", op);
  Translate([&] { r.Validate(op); });
  return r;
}

std::vector<int64_t> CountsVec(const at::Tensor& c, const char* op) {
  const std::vector<at::Tensor> v{c};
  return I64(at::TensorList(v), 0, "counts", op);
}

// x converted for the core (float64 computed in float32) and viewed.
struct Input {
  at::Tensor t;
  TensorView v;
};
Input InputOf(const at::Tensor& x, const char* op) {
  Input in;
  in.t = AsComputeDtype(x, op, "x");
  in.v = ToView(in.t, Kind::kFloating, op, "x");
  return in;
}

[[noreturn]] void Unsupported(const ObsArgs& a, const char* what, const char* op) {
  TORCH_CHECK_VALUE(false, op, ": observer kind '", a.kind, "' has no ", what);
  std::abort();
}

// ---- kernels ---------------------------------------------------------------------------------

// One Observe call on whichever observer `obs` holds (the moving average takes the gate).
void ObserveAny(AnyObserver& obs, const Input& in, bool training, int64_t current_train_step) {
  const Context ctx = MakeContext();
  std::visit(
      [&](auto& o) {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, MovingAverageObserver>) {
          o.Observe(in.v, ctx, UpdateGate{training, current_train_step});
        } else {
          o.Observe(in.v, ctx);
        }
      },
      obs);
}

std::vector<at::Tensor> ObserveOp(const at::Tensor& x, at::TensorList state, bool training,
                                  int64_t current_train_step, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_observe";
  const ObsArgs a = QKIT_OBS_ARGS;
  AnyObserver obs = Build(a, state, op);
  const Input in = InputOf(x, op);
  Translate([&] { ObserveAny(obs, in, training, current_train_step); });
  return StateOf(obs);
}

StatsTuple BatchRangeOp(const at::Tensor& x, at::TensorList state, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_batch_range";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver obs = Build(a, state, op);
  const Input in = InputOf(x, op);
  return Translate([&]() -> StatsTuple {
    const Context ctx = MakeContext();
    return std::visit(
        [&](const auto& o) -> StatsTuple {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, PassiveObserver>) {
            Unsupported(a, "batch_range (a passive observer observes nothing)", op);
          } else {
            return FromStats(o.BatchRange(in.v, ctx));
          }
        },
        obs);
  });
}

at::Tensor BatchCountsOp(const at::Tensor& x, at::TensorList state, const at::Tensor& r_min,
                         const at::Tensor& r_max, const at::Tensor& r_observed,
                         const at::Tensor& r_nonfinite, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_batch_counts";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver obs = Build(a, state, op);
  const RangeStats merged = ToStats(r_min, r_max, r_observed, r_nonfinite, op);
  const Input in = InputOf(x, op);
  return Translate([&]() -> at::Tensor {
    const Context ctx = MakeContext();
    if (auto* o = std::get_if<HistogramObserver>(&obs)) {
      return FromVec(o->BatchCounts(in.v, merged, ctx), at::kLong);
    }
    if (auto* o = std::get_if<HistogramCalibrator>(&obs)) {
      return FromVec(o->BatchCounts(in.v, merged, ctx), at::kLong);
    }
    Unsupported(a, "batch_counts (only histogram observers and calibrators need counts)", op);
  });
}

std::vector<at::Tensor> CommitOp(at::TensorList state, const at::Tensor& r_min,
                                 const at::Tensor& r_max, const at::Tensor& r_observed,
                                 const at::Tensor& r_nonfinite,
                                 const c10::optional<at::Tensor>& counts, bool training,
                                 int64_t current_train_step, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_commit";
  const ObsArgs a = QKIT_OBS_ARGS;
  AnyObserver obs = Build(a, state, op);
  const RangeStats merged = ToStats(r_min, r_max, r_observed, r_nonfinite, op);
  const bool has_counts = counts.has_value() && counts->defined();
  const bool needs_counts = std::holds_alternative<HistogramObserver>(obs) ||
                            std::holds_alternative<HistogramCalibrator>(obs);
  TORCH_CHECK_VALUE(has_counts == needs_counts, op, ": kind '", a.kind, "' ",
                    needs_counts ? "needs the merged `counts` of batch_counts"
                                 : "takes no `counts` (only histogram kinds do)");
  const std::vector<int64_t> c = has_counts ? CountsVec(*counts, op) : std::vector<int64_t>();
  Translate([&] {
    std::visit(
        [&](auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, MovingAverageObserver>) {
            o.Commit(merged, UpdateGate{training, current_train_step});
          } else if constexpr (std::is_same_v<T, MinMaxObserver>) {
            o.Commit(merged);
          } else if constexpr (std::is_same_v<T, PassiveObserver>) {
            Unsupported(a, "commit (a passive observer observes nothing)", op);
          } else {
            o.Commit(merged, c);
          }
        },
        obs);
  });
  return StateOf(obs);
}

#define QKIT_RULE_PARAMS                                                                     \
  bool symmetric, c10::string_view divisor, bool widen_to_zero, c10::string_view degenerate, \
      double eps, c10::string_view zero_point_rounding, bool integral_zero_point,            \
      bool clamp_zero_point, c10::string_view restriction,                                   \
      c10::string_view symmetric_zero_point, bool reciprocal_multiplier
#define QKIT_RULE_ARGS                                                                         \
  ParseRule(divisor, widen_to_zero, degenerate, eps, zero_point_rounding, integral_zero_point, \
            clamp_zero_point, restriction, symmetric_zero_point, reciprocal_multiplier, op)

std::tuple<at::Tensor, at::Tensor> QParamsOf(const AnyObserver& obs, const ObsArgs& a,
                                             QuantSpec spec, const QParamsRule& rule,
                                             const char* op) {
  return Translate([&]() -> std::tuple<at::Tensor, at::Tensor> {
    return std::visit(
        [&](const auto& o) -> std::tuple<at::Tensor, at::Tensor> {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, HistogramCalibrator>) {
            Unsupported(a, "qparams (a calibrator gives amax: use observer_amax)", op);
          } else {
            const int64_t n = o.num_slots();
            at::Tensor scale = at::empty({n}, at::TensorOptions().dtype(at::kFloat));
            at::Tensor zp = at::empty({n}, at::TensorOptions().dtype(at::kFloat));
            o.ComputeQParams(spec, rule, scale.data_ptr<float>(), zp.data_ptr<float>());
            return {scale, zp};
          }
        },
        obs);
  });
}

std::tuple<at::Tensor, at::Tensor> QParamsOp(at::TensorList state, QKIT_OBS_PARAMS,
                                             QKIT_RULE_PARAMS) {
  const char* op = "qkit.observer_qparams";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver obs = Build(a, state, op);
  QuantSpec spec = a.Spec(op);
  spec.symmetric = symmetric;
  return QParamsOf(obs, a, spec, QKIT_RULE_ARGS, op);
}

// The fused path of FakeQuantize: observe x, then choose the parameters, in one call.
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> ObserveQParamsOp(
    const at::Tensor& x, at::TensorList state, bool training, int64_t current_train_step,
    QKIT_OBS_PARAMS, QKIT_RULE_PARAMS) {
  const char* op = "qkit.observer_observe_qparams";
  const ObsArgs a = QKIT_OBS_ARGS;
  AnyObserver obs = Build(a, state, op);
  QuantSpec spec = a.Spec(op);
  spec.symmetric = symmetric;
  const QParamsRule rule = QKIT_RULE_ARGS;
  const Input in = InputOf(x, op);
  Translate([&] { ObserveAny(obs, in, training, current_train_step); });
  auto [scale, zp] = QParamsOf(obs, a, spec, rule, op);
  return {StateOf(obs), scale, zp};
}

std::tuple<at::Tensor, at::Tensor> RangeOp(at::TensorList state, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_range";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver obs = Build(a, state, op);
  const auto* o = std::get_if<HistogramObserver>(&obs);
  if (o == nullptr) Unsupported(a, "range search (only kind 'histogram' has one)", op);
  const QuantSpec spec = a.Spec(op);
  const int64_t n = o->num_slots();
  at::Tensor mn = at::empty({n}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor mx = at::empty({n}, at::TensorOptions().dtype(at::kFloat));
  Translate([&] { o->ComputeRange(spec, mn.data_ptr<float>(), mx.data_ptr<float>()); });
  return {mn, mx};
}

// NVIDIA compute_amax; an empty tensor when nothing was collected (upstream: None).
at::Tensor AmaxOp(at::TensorList state, c10::string_view method, int64_t stride, int64_t start_bin,
                  double percentile, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_amax";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver obs = Build(a, state, op);
  const auto* o = std::get_if<HistogramCalibrator>(&obs);
  if (o == nullptr) Unsupported(a, "amax (only kind 'histogram_calibrator' has one)", op);
  const auto amax = Translate([&] {
    return o->ComputeAmax(std::string_view(method.data(), method.size()), stride, start_bin,
                          percentile);
  });
  if (!amax.has_value()) return at::empty({0}, at::TensorOptions().dtype(at::kFloat));
  return FromVec(*amax, at::kFloat);
}

// Rebuilds the observer from `state` (the core's validation) and returns its slot count.
int64_t ValidateOp(at::TensorList state, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_validate";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver obs = Build(a, state, op);
  return std::visit([](const auto& o) { return o.num_slots(); }, obs);
}

std::vector<at::Tensor> SetQParamsOp(at::TensorList state, const at::Tensor& scale,
                                     const c10::optional<at::Tensor>& zero_point, bool scale_only,
                                     QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_set_qparams";
  const ObsArgs a = QKIT_OBS_ARGS;
  AnyObserver obs = Build(a, state, op);
  auto* o = std::get_if<PassiveObserver>(&obs);
  if (o == nullptr) Unsupported(a, "set_qparams (only kind 'passive' holds set parameters)", op);
  CheckCpuDense(scale, op, "scale");
  const at::Tensor s = ParamAsFloat(scale, scale.numel(), op, "scale");
  at::Tensor z;
  if (zero_point.has_value() && zero_point->defined()) {
    TORCH_CHECK_VALUE(!scale_only, op, ": `zero_point` given with scale_only=True");
    CheckCpuDense(*zero_point, op, "zero_point");
    z = ParamAsFloat(*zero_point, s.numel(), op, "zero_point");
  }
  Translate([&] {
    if (scale_only) {
      o->SetScale(s.data_ptr<float>(), s.numel());
    } else {
      o->SetQParams(s.data_ptr<float>(), z.defined() ? z.data_ptr<float>() : nullptr, s.numel());
    }
  });
  return StateOf(obs);
}

// State-level Merge (exact; minmax, histogram and histogram_calibrator only).
std::vector<at::Tensor> MergeOp(at::TensorList a_state, at::TensorList b_state, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_merge";
  const ObsArgs a = QKIT_OBS_ARGS;
  const AnyObserver x = Build(a, a_state, op);
  const AnyObserver y = Build(a, b_state, op);
  return Translate([&]() -> std::vector<at::Tensor> {
    if (auto* p = std::get_if<MinMaxObserver>(&x)) {
      return StateOf(MinMaxObserver::Merge(*p, std::get<MinMaxObserver>(y)));
    }
    if (auto* p = std::get_if<HistogramObserver>(&x)) {
      return StateOf(HistogramObserver::Merge(*p, std::get<HistogramObserver>(y)));
    }
    if (auto* p = std::get_if<HistogramCalibrator>(&x)) {
      return StateOf(HistogramCalibrator::Merge(*p, std::get<HistogramCalibrator>(y)));
    }
    Unsupported(a,
                "state-level merge (a moving average depends on the batch order: merge batch "
                "ranges with the protocol instead; docs/observers.md)",
                op);
  });
}

at::Tensor MergeCountsOp(const at::Tensor& a, const at::Tensor& b, c10::string_view kind) {
  const char* op = "qkit.observer_merge_counts";
  const std::vector<int64_t> va = CountsVec(a, op), vb = CountsVec(b, op);
  return Translate([&]() -> at::Tensor {
    if (kind == "histogram") return FromVec(HistogramObserver::MergeCounts(va, vb), at::kLong);
    if (kind == "histogram_calibrator") {
      return FromVec(HistogramCalibrator::MergeCounts(va, vb), at::kLong);
    }
    TORCH_CHECK_VALUE(false, op, ": `kind`='", std::string(kind),
                      "' has no counts (expected 'histogram' or 'histogram_calibrator')");
    return at::Tensor();
  });
}

StatsTuple RangeStatsMergeOp(const at::Tensor& amin, const at::Tensor& amax, const at::Tensor& aobs,
                             const at::Tensor& anf, const at::Tensor& bmin, const at::Tensor& bmax,
                             const at::Tensor& bobs, const at::Tensor& bnf) {
  const char* op = "qkit.range_stats_merge";
  const RangeStats a = ToStats(amin, amax, aobs, anf, op);
  const RangeStats b = ToStats(bmin, bmax, bobs, bnf, op);
  return Translate([&] { return FromStats(MergeRange(a, b)); });
}

std::tuple<at::Tensor, at::Tensor> RangeStatsFlattenOp(const at::Tensor& mn, const at::Tensor& mx,
                                                       const at::Tensor& observed,
                                                       const at::Tensor& nonfinite) {
  const char* op = "qkit.range_stats_flatten";
  const RangeStats r = ToStats(mn, mx, observed, nonfinite, op);
  return Translate([&]() -> std::tuple<at::Tensor, at::Tensor> {
    return {FromVec(r.FlattenFloats(), at::kFloat), FromVec(r.FlattenCounts(), at::kLong)};
  });
}

StatsTuple RangeStatsUnflattenOp(const at::Tensor& floats, const at::Tensor& counts) {
  const char* op = "qkit.range_stats_unflatten";
  const at::Tensor f = StateTensor(at::TensorList(floats), 0, "floats", at::kFloat, 1, op);
  const at::Tensor c = StateTensor(at::TensorList(counts), 0, "counts", at::kLong, 1, op);
  return Translate([&] {
    return FromStats(
        RangeStats::Unflatten(f.data_ptr<float>(), f.numel(), c.data_ptr<int64_t>(), c.numel()));
  });
}

// MovingAverageObserver::GateOpen for the given gate (other kinds: always open).
bool GateOpenOp(bool training, int64_t current_train_step, QKIT_OBS_PARAMS) {
  const char* op = "qkit.observer_gate_open";
  const ObsArgs a = QKIT_OBS_ARGS;
  if (a.Kind(op) != ObsKind::kMovingAverage) return true;
  const auto o = a.MovingAverage(op);
  return Translate([&] {
    return MovingAverageObserver(o).GateOpen(UpdateGate{training, current_train_step});
  });
}

}  // namespace

// No tensor argument: a catch-all kernel.
TORCH_LIBRARY_IMPL(qkit, CatchAll, m) { m.impl("observer_gate_open", GateOpenOp); }

TORCH_LIBRARY_IMPL(qkit, CompositeExplicitAutograd, m) {
  m.impl("observer_observe", ObserveOp);
  m.impl("observer_batch_range", BatchRangeOp);
  m.impl("observer_batch_counts", BatchCountsOp);
  m.impl("observer_commit", CommitOp);
  m.impl("observer_qparams", QParamsOp);
  m.impl("observer_observe_qparams", ObserveQParamsOp);
  m.impl("observer_range", RangeOp);
  m.impl("observer_amax", AmaxOp);
  m.impl("observer_validate", ValidateOp);
  m.impl("observer_set_qparams", SetQParamsOp);
  m.impl("observer_merge", MergeOp);
  m.impl("observer_merge_counts", MergeCountsOp);
  m.impl("range_stats_merge", RangeStatsMergeOp);
  m.impl("range_stats_flatten", RangeStatsFlattenOp);
  m.impl("range_stats_unflatten", RangeStatsUnflattenOp);
}

// No autograd kernels here: torch 1.13 registers an autograd fallthrough for CPU, CUDA and other
// backends but not for Meta, so without these a meta tensor got NotImplementedError ("... from
// the 'AutogradMeta' backend") instead of the device check's ValueError (as in core_ops.cc;
// tests/python/test_bad_input_matrix.py, "wrong device").
TORCH_LIBRARY_IMPL(qkit, AutogradMeta, m) {
  for (const char* op :
       {"observer_observe", "observer_batch_range", "observer_batch_counts", "observer_commit",
        "observer_qparams", "observer_observe_qparams", "observer_range", "observer_amax",
        "observer_validate", "observer_set_qparams", "observer_merge", "observer_merge_counts",
        "range_stats_merge", "range_stats_flatten", "range_stats_unflatten"}) {
    m.impl(op, torch::CppFunction::makeFallthrough());
  }
}

}  // namespace qkit::torch_ext
