// ChooseQParams / ValidateQParams: one formula for every system's (scale, zero_point) choice,
// selected by QuantSpec + QParamsRule. The operation order is the one of docs/qparams.md; every
// line below is a float32 operation (the library builds with -ffp-contract=off, so nothing is
// fused), and that order is what the per-system references in tests/reference/qparams_ref.h
// reproduce bit for bit.
#include "qkit/qparams.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <string>
#include <vector>

#include "internal/check.h"

namespace qkit {
namespace {

// "`min`" for the scalar form, "`min`[3]" for element 3 of the array form.
std::string Arg(const char* name, int64_t index) {
  std::ostringstream os;  // (not string operator+: GCC 12 warns -Wrestrict falsely on it)
  os << '`' << name << '`';
  if (index >= 0) os << '[' << index << ']';
  return os.str();
}

float RoundWith(Rounding mode, float v) {
  switch (mode) {
    case Rounding::kHalfToEven:
      return std::nearbyint(v);  // default FP environment: ties to even
    case Rounding::kHalfAwayFromZero:
      return std::round(v);
    case Rounding::kFloorAddHalf:
      return std::floor(v + 0.5f);  // the add is a float32 op: 0.5 - 2^-25 gives 1
  }
  return v;  // unreachable: the rule was validated
}

// Everything that depends only on (spec, rule): checked and computed once per call.
struct Plan {
  bool multiplier = false;  // scale holds m = 1/step
  float qmin = 0.0f;
  float qmax = 0.0f;
  float divisor = 1.0f;  // symmetric d
  float levels = 1.0f;   // affine qmax - qmin
  float symmetric_zero_point = 0.0f;
};

Plan MakePlan(const QuantSpec& spec, const QParamsRule& rule, const char* caller) {
  spec.Validate(caller);
  QKIT_REQUIRE(static_cast<int>(rule.divisor) <= static_cast<int>(SymmetricDivisor::kHalfFullRange),
               InvalidArgument,
               caller << ": `rule.divisor`=" << static_cast<int>(rule.divisor) << " is not a "
                      << "SymmetricDivisor");
  QKIT_REQUIRE(
      static_cast<int>(rule.degenerate) <= static_cast<int>(DegenerateRule::kOneIfStepAtMostEps),
      InvalidArgument,
      caller << ": `rule.degenerate`=" << static_cast<int>(rule.degenerate)
             << " is not a DegenerateRule");
  QKIT_REQUIRE(
      static_cast<int>(rule.zero_point_rounding) <= static_cast<int>(Rounding::kFloorAddHalf),
      InvalidArgument,
      caller << ": `rule.zero_point_rounding`=" << static_cast<int>(rule.zero_point_rounding)
             << " is not a Rounding");
  QKIT_REQUIRE(
      static_cast<int>(rule.restriction) <= static_cast<int>(ScaleRestriction::kPow2Bernoulli),
      InvalidArgument,
      caller << ": `rule.restriction`=" << static_cast<int>(rule.restriction)
             << " is not a ScaleRestriction");
  QKIT_REQUIRE(
      static_cast<int>(rule.symmetric_zero_point) <=
          static_cast<int>(SymmetricZeroPoint::kMidpointDown),
      InvalidArgument,
      caller << ": `rule.symmetric_zero_point`=" << static_cast<int>(rule.symmetric_zero_point)
             << " is not a SymmetricZeroPoint");
  QKIT_REQUIRE(
      static_cast<int>(spec.scale_mode) <= static_cast<int>(ScaleMode::kMultiplier),
      InvalidArgument,
      caller << ": `scale_mode`=" << static_cast<int>(spec.scale_mode) << " is not a ScaleMode");

  Plan p;
  p.multiplier = spec.scale_mode == ScaleMode::kMultiplier;
  QKIT_REQUIRE(
      std::isfinite(rule.eps) && rule.eps >= 0.0f, InvalidArgument,
      caller << ": `rule.eps`=" << std::setprecision(9) << rule.eps << " must be finite and >= 0");
  QKIT_REQUIRE(rule.degenerate != DegenerateRule::kFloorAtEps || rule.eps > 0.0f, InvalidArgument,
               caller << ": `rule.eps`=" << rule.eps << " must be > 0 with kFloorAtEps");
  QKIT_REQUIRE(rule.degenerate != DegenerateRule::kZeroBelowEps || p.multiplier, InvalidArgument,
               caller << ": `rule.degenerate`=kZeroBelowEps needs `scale_mode`=multiplier (got "
                      << ScaleModeName(spec.scale_mode) << ")");
  QKIT_REQUIRE(rule.degenerate != DegenerateRule::kOneIfStepAtMostEps || !p.multiplier,
               InvalidArgument,
               caller << ": `rule.degenerate`=kOneIfStepAtMostEps is defined on a step and "
                         "cannot be used with `scale_mode`=multiplier");
  QKIT_REQUIRE(!rule.reciprocal_multiplier || p.multiplier, InvalidArgument,
               caller << ": `rule.reciprocal_multiplier`=true needs `scale_mode`=multiplier (got "
                      << ScaleModeName(spec.scale_mode) << ")");
  QKIT_REQUIRE(rule.restriction != ScaleRestriction::kPow2FloorLog2Amax || spec.symmetric,
               InvalidArgument,
               caller << ": `rule.restriction`=kPow2FloorLog2Amax (cambricon) needs a symmetric "
                         "spec (got `symmetric`=false)");
  const bool uses_bits =
      spec.symmetric && (rule.restriction == ScaleRestriction::kPow2FloorLog2Amax ||
                         rule.divisor == SymmetricDivisor::kHalfFullRange);
  QKIT_REQUIRE(!uses_bits || (spec.bits >= 2 && spec.bits <= 16), InvalidArgument,
               caller << ": `bits`=" << spec.bits << " outside [2, 16]");

  const int64_t qmin = spec.QuantMin();
  const int64_t qmax = spec.QuantMax();
  p.qmin = static_cast<float>(qmin);
  p.qmax = static_cast<float>(qmax);
  p.levels = static_cast<float>(qmax - qmin);  // <= 2^24 (QuantSpec::Validate): exact
  // Each divisor is an integer or a half-integer below 2^24: exact in float32, so converting
  // it once here equals the systems' f32(python_float) / T(pow(2.0, b - 1)) - 1 forms.
  switch (rule.divisor) {
    case SymmetricDivisor::kHalfRange:
      p.divisor = static_cast<float>(static_cast<double>(qmax - qmin) / 2.0);
      break;
    case SymmetricDivisor::kQuantMax:
      p.divisor = static_cast<float>(qmax);
      break;
    case SymmetricDivisor::kHalfFullRange:
      // Uses spec.bits even with a quant_min/max override (found by qparams_fuzzer: a shift by
      // a negative `bits` was undefined behaviour).
      QKIT_REQUIRE(spec.bits >= 2 && spec.bits <= 16, InvalidArgument,
                   caller << ": `bits`=" << spec.bits
                          << " outside [2, 16] (SymmetricDivisor::kHalfFullRange uses it)");
      p.divisor = static_cast<float>(static_cast<double>((int64_t{1} << spec.bits) - 1) / 2.0);
      break;
  }
  QKIT_REQUIRE(!spec.symmetric || p.divisor > 0.0f, InvalidArgument,
               caller << ": symmetric divisor d=" << p.divisor << " from [`quant_min`=" << qmin
                      << ", `quant_max`=" << qmax << "] must be > 0");
  switch (rule.symmetric_zero_point) {
    case SymmetricZeroPoint::kZero:
      p.symmetric_zero_point = 0.0f;
      break;
    case SymmetricZeroPoint::kMidpointUp:  // ceil((qmin + qmax) / 2), for either sign
      p.symmetric_zero_point =
          static_cast<float>(qmin + qmax - ((qmin + qmax) >> 1));  // a - floor(a/2) = ceil(a/2)
      break;
    case SymmetricZeroPoint::kMidpointDown:  // floor((qmin + qmax) / 2) (Python's //)
      p.symmetric_zero_point = static_cast<float>((qmin + qmax) >> 1);
      break;
  }
  // A symmetric grid is centred on its zero point: one outside the quant range cannot be
  // represented (found by qparams_fuzzer: an override [65535, 66473] gave zero point 0).
  QKIT_REQUIRE(!spec.symmetric || (p.symmetric_zero_point >= p.qmin &&
                                   p.symmetric_zero_point <= p.qmax),
               InvalidArgument,
               caller << ": symmetric zero point " << p.symmetric_zero_point
                      << " outside [`quant_min`=" << qmin << ", `quant_max`=" << qmax
                      << "]: a symmetric spec needs a quant range that contains it");
  return p;
}

// The degenerate-range rule, applied to the raw scale (step or multiplier). `range` is amax
// (symmetric) or mx - mn (affine).
float ApplyDegenerate(float scale, float range, const Plan& p, const QParamsRule& rule) {
  switch (rule.degenerate) {
    case DegenerateRule::kFloorAtEps:
      // Step: max(s, eps). Multiplier: min(m, 1/eps), the same bound on the step's inverse.
      return p.multiplier ? std::min(scale, 1.0f / rule.eps) : std::max(scale, rule.eps);
    case DegenerateRule::kNone:
      return scale;
    case DegenerateRule::kZeroBelowEps:  // NVIDIA: amax <= 2^-24 -> m = 0
      return range <= rule.eps ? 0.0f : scale;
    case DegenerateRule::kOneIfZeroRange:  // Distiller: sat / diff == 0 replaced by n -> n/n
      return range == 0.0f ? 1.0f : scale;
    case DegenerateRule::kOneIfStepAtMostEps:  // PyTorch float_qparams: where(s > eps, s, 1)
      return scale > rule.eps ? scale : 1.0f;
  }
  return scale;
}

// The multiplier d / range: one division, or torch's `d / tensor` = reciprocal(range) * d (two
// float32 roundings) with rule.reciprocal_multiplier. A zero range gives +inf either way.
float Multiplier(float d, float range, const QParamsRule& rule) {
  if (rule.reciprocal_multiplier) {
    const float reciprocal = 1.0f / range;
    return reciprocal * d;
  }
  return d / range;
}

// Horizon BERNOULLI power-of-two step, on a positive finite step or multiplier.
float ApplyBernoulli(float scale, bool multiplier) {
  if (scale == 0.0f) return scale;  // kNone / kZeroBelowEps zero stays zero
  if (multiplier) {
    const float k = std::min(std::max(std::floor(std::log2(scale)), 1.0f), 14.0f);
    return std::ldexp(1.0f, static_cast<int>(k));
  }
  const float k = std::min(std::max(std::floor(-std::log2(scale)), 1.0f), 14.0f);
  return std::ldexp(1.0f, -static_cast<int>(k));
}

QParams ChooseOne(float min, float max, int64_t index, const QuantSpec& spec,
                  const QParamsRule& rule, const Plan& p, const char* caller) {
  QKIT_REQUIRE(std::isfinite(min), InvalidArgument,
               caller << ": " << Arg("min", index) << "=" << std::setprecision(9) << min
                      << " is not finite");
  QKIT_REQUIRE(std::isfinite(max), InvalidArgument,
               caller << ": " << Arg("max", index) << "=" << std::setprecision(9) << max
                      << " is not finite");
  QKIT_REQUIRE(min <= max, InvalidArgument,
               caller << ": " << Arg("min", index) << "=" << std::setprecision(9) << min << " > "
                      << Arg("max", index) << "=" << max);
  auto range_text = [&] {
    std::ostringstream os;
    os << std::setprecision(9) << "[" << Arg("min", index) << "=" << min << ", "
       << Arg("max", index) << "=" << max << "]";
    return os.str();
  };

  QParams out;
  if (spec.symmetric) {
    const float amax = std::max(std::fabs(min), std::fabs(max));
    out.zero_point = p.symmetric_zero_point;
    if (rule.restriction == ScaleRestriction::kPow2FloorLog2Amax) {
      // OneFlow cambricon: shift = floor(log2f(amax)) - (bits - 2) in float (so an amax a few
      // ulps below 2^k, k >= 3, counts as 2^k, exactly as OneFlow computes it); the step
      // 2^shift is formed exactly with ldexp.
      QKIT_REQUIRE(amax > 0.0f, InvalidArgument,
                   caller << ": cambricon (kPow2FloorLog2Amax) needs amax = max(|min|, |max|) "
                             "> 0; got "
                          << range_text() << " (log2(0) is undefined)");
      const int shift = static_cast<int>(std::floor(std::log2(amax))) - (spec.bits - 2);
      out.scale = p.multiplier ? std::ldexp(1.0f, -shift) : std::ldexp(1.0f, shift);
      QKIT_REQUIRE(std::isfinite(out.scale) && out.scale > 0.0f, InvalidArgument,
                   caller << ": cambricon shift " << shift << " from " << range_text()
                          << " and `bits`=" << spec.bits
                          << " gives 2^shift outside the positive finite float32 range");
      return out;
    }
    const float raw = p.multiplier ? Multiplier(p.divisor, amax, rule) : amax / p.divisor;
    out.scale = ApplyDegenerate(raw, amax, p, rule);
  } else {
    const float mn = rule.widen_to_zero ? std::min(min, 0.0f) : min;
    const float mx = rule.widen_to_zero ? std::max(max, 0.0f) : max;
    const float range = mx - mn;
    QKIT_REQUIRE(std::isfinite(range), InvalidArgument,
                 caller << ": range " << range_text() << " overflows float32 (max - min = inf)");
    const float raw = p.multiplier ? Multiplier(p.levels, range, rule) : range / p.levels;
    out.scale = ApplyDegenerate(raw, range, p, rule);
  }
  QKIT_REQUIRE(std::isfinite(out.scale), InvalidArgument,
               caller << ": " << range_text() << " gives a non-finite "
                      << (p.multiplier ? "multiplier" : "step") << " " << out.scale
                      << " (add an epsilon rule, e.g. kFloorAtEps)");
  if (rule.restriction == ScaleRestriction::kPow2Bernoulli) {
    out.scale = ApplyBernoulli(out.scale, p.multiplier);
  }
  const bool zero_allowed = p.multiplier ? rule.degenerate == DegenerateRule::kZeroBelowEps
                                         : rule.degenerate == DegenerateRule::kNone;
  QKIT_REQUIRE(out.scale != 0.0f || zero_allowed, InvalidArgument,
               caller << ": " << range_text() << " gives a zero "
                      << (p.multiplier ? "multiplier" : "step") << " (underflow)");
  if (spec.symmetric) return out;

  // Affine zero point: the code of real 0, z = qmin - round(mn / s) (or mn * m).
  const float mn = rule.widen_to_zero ? std::min(min, 0.0f) : min;
  QKIT_REQUIRE(p.multiplier || out.scale != 0.0f, InvalidArgument,
               caller << ": affine zero point of " << range_text()
                      << " is undefined: the step is 0 (kNone on a zero range)");
  const float t = p.multiplier ? mn * out.scale : mn / out.scale;
  const float r = rule.integral_zero_point ? RoundWith(rule.zero_point_rounding, t) : t;
  float z = p.qmin - r;
  if (rule.clamp_zero_point) z = std::min(std::max(z, p.qmin), p.qmax);
  QKIT_REQUIRE(std::isfinite(z), InvalidArgument,
               caller << ": " << range_text() << " gives a non-finite zero point " << z);
  out.zero_point = z;
  return out;
}

}  // namespace

QParams ChooseQParams(float min, float max, const QuantSpec& spec, const QParamsRule& rule,
                      const char* caller) {
  const Plan plan = MakePlan(spec, rule, caller);
  return ChooseOne(min, max, -1, spec, rule, plan, caller);
}

void ChooseQParams(const float* min, const float* max, int64_t count, const QuantSpec& spec,
                   const QParamsRule& rule, float* scale_out, float* zero_point_out,
                   const char* caller) {
  QKIT_REQUIRE(count >= 0, InvalidArgument, caller << ": `count`=" << count << " must be >= 0");
  if (count > 0) {
    QKIT_REQUIRE(min != nullptr, InvalidArgument,
                 caller << ": `min` is null (count=" << count << ")");
    QKIT_REQUIRE(max != nullptr, InvalidArgument,
                 caller << ": `max` is null (count=" << count << ")");
    QKIT_REQUIRE(scale_out != nullptr, InvalidArgument,
                 caller << ": `scale_out` is null (count=" << count << ")");
    QKIT_REQUIRE(zero_point_out != nullptr, InvalidArgument,
                 caller << ": `zero_point_out` is null (count=" << count << ")");
  }
  const Plan plan = MakePlan(spec, rule, caller);
  // Compute everything first (any element may throw), then write: the outputs are untouched
  // on error and may alias the inputs.
  std::vector<QParams> result(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    result[static_cast<size_t>(i)] = ChooseOne(min[i], max[i], i, spec, rule, plan, caller);
  }
  for (int64_t i = 0; i < count; ++i) {
    scale_out[i] = result[static_cast<size_t>(i)].scale;
    zero_point_out[i] = result[static_cast<size_t>(i)].zero_point;
  }
}

void ValidateQParams(const float* scale, const float* zero_point, int64_t count,
                     const QuantSpec& spec, const char* caller) {
  spec.Validate(caller);
  QKIT_REQUIRE(count >= 0, InvalidArgument, caller << ": `count`=" << count << " must be >= 0");
  QKIT_REQUIRE(count == 0 || scale != nullptr, InvalidArgument,
               caller << ": `scale` is null (count=" << count << ")");
  const bool multiplier = spec.scale_mode == ScaleMode::kMultiplier;
  const int64_t qmin = spec.QuantMin();
  const int64_t qmax = spec.QuantMax();
  for (int64_t i = 0; i < count; ++i) {
    const float s = scale[i];
    QKIT_REQUIRE(std::isfinite(s) && (multiplier ? s >= 0.0f : s > 0.0f), InvalidArgument,
                 caller << ": `scale`[" << i << "]=" << std::setprecision(9) << s << " must be "
                        << (multiplier ? "finite and >= 0 (a multiplier)" : "finite and > 0"));
  }
  if (zero_point == nullptr) {
    QKIT_REQUIRE((qmin <= 0 && 0 <= qmax) ||
                     (spec.allow_zero_point_outside_range && qmax <= 16777216 &&
                      qmin >= -16777216),
                 InvalidArgument,
                 caller << ": `zero_point`=null (0) outside [`quant_min`=" << qmin
                        << ", `quant_max`=" << qmax << "]");
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    const float z = zero_point[i];
    QKIT_REQUIRE(
        std::isfinite(z), InvalidArgument,
        caller << ": `zero_point`[" << i << "]=" << std::setprecision(9) << z << " is not finite");
    if (static_cast<double>(z) >= static_cast<double>(qmin) &&
        static_cast<double>(z) <= static_cast<double>(qmax)) {
      continue;
    }
    QKIT_REQUIRE(spec.allow_zero_point_outside_range, InvalidArgument,
                 caller << ": `zero_point`[" << i << "]=" << std::setprecision(9) << z
                        << " outside [`quant_min`=" << qmin << ", `quant_max`=" << qmax << "]");
    QKIT_REQUIRE(z == std::nearbyint(z), InvalidArgument,
                 caller << ": `zero_point`[" << i << "]=" << std::setprecision(9) << z
                        << " outside [`quant_min`=" << qmin << ", `quant_max`=" << qmax
                        << "] must be integral");
    const double reach = std::max(static_cast<double>(qmax) - z, z - static_cast<double>(qmin));
    QKIT_REQUIRE(reach <= 16777216.0, InvalidArgument,
                 caller << ": `zero_point`[" << i << "]=" << std::setprecision(9) << z << " is "
                        << reach << " codes from the far end of [`quant_min`=" << qmin
                        << ", `quant_max`=" << qmax
                        << "]; code - zero_point must be exact in float32 (<= 2^24)");
  }
}

}  // namespace qkit
