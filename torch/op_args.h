// Keyword-argument parsing shared by the kernels in torch/: named option values, the QuantSpec
// keywords (kSpec in register_ops.cc), the NonFinite policy and the QParamsRule keywords of
// choose_qparams. Parsing only: no formula.
#ifndef QKIT_TORCH_OP_ARGS_H_
#define QKIT_TORCH_OP_ARGS_H_

#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>
#include <torch/autograd.h>

#include <cstdint>
#include <string>

#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"

namespace qkit::torch_ext {

using torch::autograd::AutogradContext;

// Named option values: `value` must be one of `names` (ValueError listing them otherwise).
template <class E, size_t N>
inline E Parse(c10::string_view value, const char* const (&names)[N], const E (&values)[N],
               const char* op, const char* arg) {
  for (size_t i = 0; i < N; ++i) {
    if (value == names[i]) return values[i];
  }
  std::string allowed;
  for (size_t i = 0; i < N; ++i) allowed += std::string(i ? ", '" : "'") + names[i] + "'";
  TORCH_CHECK_VALUE(false, op, ": `", arg, "`='", std::string(value), "' is not one of ", allowed);
  return values[0];  // not reached
}

// The QuantSpec keyword arguments shared by the fake-quant schemas (kSpec in register_ops.cc).
struct SpecArgs {
  int64_t bits;
  bool is_signed;
  bool narrow_range;
  c10::optional<int64_t> quant_min, quant_max;
  std::string rounding, scale_mode, zero_point_mode, nan_mode;
  c10::optional<int64_t> axis;
  int64_t group_size;
  bool allow_zero_point_outside_range = false;

  QuantSpec Spec(const char* op) const {
    QuantSpec s;
    s.bits = static_cast<int>(bits);
    s.is_signed = is_signed;
    s.narrow_range = narrow_range;
    if (quant_min.has_value()) s.quant_min_override = *quant_min;
    if (quant_max.has_value()) s.quant_max_override = *quant_max;
    s.rounding = Parse<Rounding>(
        rounding, {"half_to_even", "half_away_from_zero", "floor_add_half"},
        {Rounding::kHalfToEven, Rounding::kHalfAwayFromZero, Rounding::kFloorAddHalf}, op,
        "rounding");
    s.scale_mode = Parse<ScaleMode>(
        scale_mode, {"divide", "multiply_reciprocal", "multiplier"},
        {ScaleMode::kDivide, ScaleMode::kMultiplyReciprocal, ScaleMode::kMultiplier}, op,
        "scale_mode");
    s.zero_point_mode = Parse<ZeroPointMode>(
        zero_point_mode, {"add_after_round", "add_before_round"},
        {ZeroPointMode::kAddAfterRound, ZeroPointMode::kAddBeforeRound}, op, "zero_point_mode");
    s.nan_mode = Parse<NanMode>(nan_mode, {"propagate", "to_quant_min", "error"},
                                {NanMode::kPropagate, NanMode::kToQuantMin, NanMode::kError}, op,
                                "nan_mode");
    s.layout = Layout();
    s.allow_zero_point_outside_range = allow_zero_point_outside_range;
    return s;
  }
  ParamLayout Layout() const {
    if (!axis.has_value()) {
      TORCH_CHECK_VALUE(group_size == 0, "qkit: `group_size`=", group_size,
                        " needs an `axis` (per-group quantization)");
      return ParamLayout::PerTensor();
    }
    return group_size == 0 ? ParamLayout::PerChannel(*axis)
                           : ParamLayout::PerGroup(*axis, group_size);
  }

  void Save(AutogradContext* ctx) const {
    auto& d = ctx->saved_data;
    d["bits"] = bits;
    d["is_signed"] = is_signed;
    d["narrow_range"] = narrow_range;
    d["quant_min"] = quant_min.has_value() ? c10::IValue(*quant_min) : c10::IValue();
    d["quant_max"] = quant_max.has_value() ? c10::IValue(*quant_max) : c10::IValue();
    d["rounding"] = rounding;
    d["scale_mode"] = scale_mode;
    d["zero_point_mode"] = zero_point_mode;
    d["nan_mode"] = nan_mode;
    d["axis"] = axis.has_value() ? c10::IValue(*axis) : c10::IValue();
    d["group_size"] = group_size;
    d["allow_zero_point_outside_range"] = allow_zero_point_outside_range;
  }
  static SpecArgs Load(AutogradContext* ctx) {
    auto& d = ctx->saved_data;
    auto opt = [&](const char* k) {
      return d[k].isNone() ? c10::optional<int64_t>() : c10::optional<int64_t>(d[k].toInt());
    };
    return {d["bits"].toInt(),
            d["is_signed"].toBool(),
            d["narrow_range"].toBool(),
            opt("quant_min"),
            opt("quant_max"),
            d["rounding"].toStringRef(),
            d["scale_mode"].toStringRef(),
            d["zero_point_mode"].toStringRef(),
            d["nan_mode"].toStringRef(),
            opt("axis"),
            d["group_size"].toInt(),
            d["allow_zero_point_outside_range"].toBool()};
  }
};

#define QKIT_SPEC_PARAMS                                                                        \
  int64_t bits, bool is_signed, bool narrow_range, c10::optional<int64_t> quant_min,            \
      c10::optional<int64_t> quant_max, c10::string_view rounding, c10::string_view scale_mode, \
      c10::string_view zero_point_mode, c10::string_view nan_mode, c10::optional<int64_t> axis, \
      int64_t group_size, bool allow_zero_point_outside_range
#define QKIT_SPEC_ARGS                                                                      \
  SpecArgs {                                                                                \
    bits, is_signed, narrow_range, quant_min, quant_max, std::string(rounding),             \
        std::string(scale_mode), std::string(zero_point_mode), std::string(nan_mode), axis, \
        group_size, allow_zero_point_outside_range                                          \
  }

inline NonFinite ParseNonFinite(c10::string_view v, const char* op) {
  return Parse<NonFinite>(v, {"skip", "skip_nan", "propagate"},
                          {NonFinite::kSkip, NonFinite::kSkipNaN, NonFinite::kPropagate}, op,
                          "nonfinite");
}

// The QParamsRule keywords of choose_qparams (and of observer_qparams).
inline QParamsRule ParseRule(c10::string_view divisor, bool widen_to_zero,
                             c10::string_view degenerate, double eps,
                             c10::string_view zero_point_rounding, bool integral_zero_point,
                             bool clamp_zero_point, c10::string_view restriction,
                             c10::string_view symmetric_zero_point, bool reciprocal_multiplier,
                             const char* op) {
  QParamsRule rule;
  rule.divisor = Parse<SymmetricDivisor>(
      divisor, {"half_range", "quant_max", "half_full_range"},
      {SymmetricDivisor::kHalfRange, SymmetricDivisor::kQuantMax, SymmetricDivisor::kHalfFullRange},
      op, "divisor");
  rule.widen_to_zero = widen_to_zero;
  rule.degenerate = Parse<DegenerateRule>(
      degenerate,
      {"floor_at_eps", "none", "zero_below_eps", "one_if_zero_range", "one_if_step_at_most_eps"},
      {DegenerateRule::kFloorAtEps, DegenerateRule::kNone, DegenerateRule::kZeroBelowEps,
       DegenerateRule::kOneIfZeroRange, DegenerateRule::kOneIfStepAtMostEps},
      op, "degenerate");
  rule.eps = static_cast<float>(eps);
  rule.zero_point_rounding = Parse<Rounding>(
      zero_point_rounding, {"half_to_even", "half_away_from_zero", "floor_add_half"},
      {Rounding::kHalfToEven, Rounding::kHalfAwayFromZero, Rounding::kFloorAddHalf}, op,
      "zero_point_rounding");
  rule.integral_zero_point = integral_zero_point;
  rule.clamp_zero_point = clamp_zero_point;
  rule.restriction =
      Parse<ScaleRestriction>(restriction, {"none", "pow2_floor_log2_amax", "pow2_bernoulli"},
                              {ScaleRestriction::kNone, ScaleRestriction::kPow2FloorLog2Amax,
                               ScaleRestriction::kPow2Bernoulli},
                              op, "restriction");
  rule.symmetric_zero_point =
      Parse<SymmetricZeroPoint>(symmetric_zero_point, {"zero", "midpoint_up", "midpoint_down"},
                                {SymmetricZeroPoint::kZero, SymmetricZeroPoint::kMidpointUp,
                                 SymmetricZeroPoint::kMidpointDown},
                                op, "symmetric_zero_point");
  rule.reciprocal_multiplier = reciprocal_multiplier;
  return rule;
}

}  // namespace qkit::torch_ext

#endif  // QKIT_TORCH_OP_ARGS_H_
