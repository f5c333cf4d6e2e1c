// Choosing (scale, zero_point) from an observed range. One function; every system's variant
// (divisor 127 vs 127.5, widening to 0, epsilon and degenerate-range rule, zero-point rounding,
// power-of-two scales) is a named option of QParamsRule. Formulas and the per-system presets:
// docs/qparams.md.
#ifndef QKIT_QPARAMS_H_
#define QKIT_QPARAMS_H_

#include <cstdint>

#include "qkit/quant_spec.h"

namespace qkit {

// Quantization parameters of one tensor / channel / group. `scale` is interpreted by the
// spec's ScaleMode: the step s for kDivide / kMultiplyReciprocal, the multiplier m = 1/s for
// kMultiplier. `zero_point` is the code that represents real 0 (a float; integral unless a
// rule asks otherwise).
struct QParams {
  float scale = 1.0f;
  float zero_point = 0.0f;
};

// The symmetric step's divisor.
enum class SymmetricDivisor : uint8_t {
  kHalfRange,      // (qmax - qmin) / 2: 127.5 for [-128, 127], 127 for [-127, 127], 7.5 for qint4
                   // (qkit default; MegEngine, PyTorch, Horizon)
  kQuantMax,       // qmax: 127 for 8-bit signed, 255 for 8-bit unsigned (OneFlow google, NVIDIA,
                   // Distiller SYMMETRIC_RESTRICTED via narrow range)
  kHalfFullRange,  // (2^bits - 1) / 2 from spec.bits alone, ignoring narrow_range and the
                   // quant_min/max override: 127.5 at 8 bits. Distiller SYMMETRIC, whose
                   // fake-quant range is the 257-level override [-128, 128] (where kHalfRange
                   // would give 128).
};

// What happens when the range is (near) zero.
enum class DegenerateRule : uint8_t {
  kFloorAtEps,          // scale = max(scale, eps) (qkit default with eps = 2^-23; MegEngine 1e-5;
                        // PyTorch / Horizon 2^-23). In kMultiplier mode: m = min(m, 1/eps).
  kNone,                // no rule: a zero range gives step 0 (OneFlow). Fake quant rejects it.
  kZeroBelowEps,        // kMultiplier only: amax <= eps gives m = 0, so every code is the zero
                        // point and dequantizes to 0 (NVIDIA, eps = 2^-24)
  kOneIfZeroRange,      // a range of exactly 0 gives scale 1 (Distiller: sat 0 replaced by n)
  kOneIfStepAtMostEps,  // step <= eps gives step 1 (PyTorch per_channel_affine_float_qparams);
                        // not with kMultiplier
};

// Zero point of a symmetric spec (affine specs compute theirs from min).
enum class SymmetricZeroPoint : uint8_t {
  kZero,          // z = 0 (every system on signed ranges; NVIDIA unsigned)
  kMidpointUp,    // z = ceil((qmin + qmax) / 2): 128 for [0, 255] (PyTorch quint8 symmetric)
  kMidpointDown,  // z = floor((qmin + qmax) / 2): 127 for [0, 255] (PyTorch quint8 symmetric
                  // with a custom quant_min / quant_max)
};

// Restriction of the step to powers of two.
enum class ScaleRestriction : uint8_t {
  kNone,
  kPow2FloorLog2Amax,  // OneFlow "cambricon": step = 2^(floor(log2f(amax)) - (bits - 2));
                       // symmetric only; amax must be > 0 and finite
  kPow2Bernoulli,      // Horizon BERNOULLI march: step = 2^-clamp(floor(-log2f(s)), 1, 14)
                       // applied to the step s after the degenerate rule (kMultiplier:
                       // m = 2^clamp(floor(log2f(m)), 1, 14)); a zero step / multiplier stays 0
};

struct QParamsRule {
  SymmetricDivisor divisor = SymmetricDivisor::kHalfRange;
  bool widen_to_zero = true;  // affine: use [min(min, 0), max(max, 0)] (all but OneFlow and
                              // NVIDIA's affine function)
  DegenerateRule degenerate = DegenerateRule::kFloorAtEps;
  float eps = 1.1920928955078125e-07f;  // 2^-23
  Rounding zero_point_rounding = Rounding::kHalfToEven;
  bool integral_zero_point = true;  // false: zero point left unrounded (Distiller option)
  bool clamp_zero_point = true;     // clamp the zero point to [qmin, qmax] (PyTorch);
                                    // false keeps it as computed (OneFlow, MegEngine)
  ScaleRestriction restriction = ScaleRestriction::kNone;
  SymmetricZeroPoint symmetric_zero_point = SymmetricZeroPoint::kZero;
  // kMultiplier only: form the multiplier as f32(f32(1 / range) * d) (two roundings) instead
  // of f32(d / range). torch evaluates `python_number / tensor` as `reciprocal(tensor) *
  // number`, so Distiller's `n / sat` and `n / diff` are this form (about a quarter of the
  // multipliers differ from the single division by one ulp). Throws with a step ScaleMode.
  bool reciprocal_multiplier = false;
};

// (scale, zero_point) for the range [min, max] under `spec` (range, symmetric, ScaleMode) and
// `rule`. float32 arithmetic throughout, in the operation order of docs/qparams.md:
//   symmetric:  amax = max(|min|, |max|);  s = amax / d  (or m = d / amax, or
//               m = f32(1 / amax) * d with rule.reciprocal_multiplier);
//               z = 0 (or the range's midpoint, rule.symmetric_zero_point)
//   affine:     [mn, mx] widened to 0 if rule.widen_to_zero;  s = (mx - mn) / (qmax - qmin)
//               (or m = (qmax - qmin) / (mx - mn), or f32(1 / (mx - mn)) * (qmax - qmin));
//               z = qmin - round(mn / s)  (or mn * m),
//               clamped to [qmin, qmax] if rule.clamp_zero_point
// (kMultiplyReciprocal chooses parameters exactly like kDivide.) A zero zero point is +0.
// Degenerate ranges follow rule.degenerate. A zero step is returned only for kNone (symmetric;
// FakeQuantize rejects it) and a zero multiplier only for kZeroBelowEps.
// REQUIRES: min <= max, both finite (InvalidArgument otherwise, naming `caller`). Also throws
// InvalidArgument, naming the range, where the result would be undefined: a non-finite scale
// (the range overflows float32, or a multiplier d / amax overflows), a non-finite zero point
// (affine with a zero step under kNone), cambricon with amax 0 or a step 2^shift that is not a
// positive finite float32; and for an inconsistent rule (kZeroBelowEps without kMultiplier,
// kOneIfStepAtMostEps with kMultiplier, reciprocal_multiplier without kMultiplier, cambricon on
// an affine spec, eps NaN / Inf / negative,
// or eps <= 0 under kFloorAtEps).
QParams ChooseQParams(float min, float max, const QuantSpec& spec, const QParamsRule& rule,
                      const char* caller = "qkit::ChooseQParams");

// Element-wise over `count` ranges (per channel / per group). Validates everything before
// writing any output.
void ChooseQParams(const float* min, const float* max, int64_t count, const QuantSpec& spec,
                   const QParamsRule& rule, float* scale_out, float* zero_point_out,
                   const char* caller = "qkit::ChooseQParams");

// Checks that fake-quant parameters are usable under `spec`: scale finite and > 0 (>= 0 in
// kMultiplier mode), zero point finite and inside [quant_min, quant_max] (a null `zero_point`
// means 0 everywhere, which must then be inside the range); with
// spec.allow_zero_point_outside_range a zero point outside it must be integral and within 2^24
// of both ends. Throws InvalidArgument naming
// `caller`, the argument, the index and the value.
void ValidateQParams(const float* scale, const float* zero_point, int64_t count,
                     const QuantSpec& spec, const char* caller);

}  // namespace qkit

#endif  // QKIT_QPARAMS_H_
