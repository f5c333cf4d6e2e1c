// Scalar references for the quantization-parameter choice of each system, written straight from
// ../shared/SPEC.md (one function per system and formula, in that system's own operation order
// and its own conventions), independently of src/qparams.cc. Every arithmetic line is a float32
// operation (the tests build with -ffp-contract=off); Python numbers that the systems mix into
// float32 tensor ops are converted to float first, exactly as torch / numpy do.
//
// Conventions are the systems' own, NOT qkit's: OneFlow cambricon returns the shift exponent,
// NVIDIA and Distiller return a multiplier, Distiller's zero point is subtracted
// (q = round(scale * x - zp), so qkit's z = -zp), NVIDIA's affine function returns the offset
// quant_zero (q = round(x / step) - quant_zero, so qkit's z = -quant_zero).
#ifndef QKIT_TESTS_REFERENCE_QPARAMS_REF_H_
#define QKIT_TESTS_REFERENCE_QPARAMS_REF_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace qkit::ref {

struct SysQParams {
  float scale;
  float zero_point;
};

// ---- OneFlow (SPEC §2.2, §2.3) ------------------------------------------------------------

// google + symmetric: amax = max(|max|, |min|); denom = T(2^(b-1)) - 1; scale = amax / denom.
inline SysQParams OneFlowGoogleSymmetric(float in_min, float in_max, int bits) {
  const float amax = std::max(std::abs(in_max), std::abs(in_min));
  const float denominator = static_cast<float>(std::pow(2.0, bits - 1)) - 1.0f;
  return {amax / denominator, 0.0f};
}

// google + affine (MinMaxObserver): no widening to 0; denom = T(2^b) - 1;
// zero_point = -nearbyint(min / scale).
inline SysQParams OneFlowGoogleAffine(float in_min, float in_max, int bits) {
  const float denominator = static_cast<float>(std::pow(2.0, bits)) - 1.0f;
  const float scale = (in_max - in_min) / denominator;
  return {scale, -std::nearbyint(in_min / scale)};
}

// MovingAverageMinMaxObserver affine parameters from its buffers: as above, but the zero point
// uses std::round (half away from zero).
inline SysQParams OneFlowMovingAverageAffine(float moving_min, float moving_max, int bits) {
  const float denominator = static_cast<float>(std::pow(2.0, bits)) - 1.0f;
  const float scale = (moving_max - moving_min) / denominator;
  return {scale, -std::round(moving_min / scale)};
}

// MovingAverageMinMaxObserver symmetric: scale = moving_max / (T(2^(b-1)) - 1).
inline float OneFlowMovingAverageSymmetricScale(float moving_max, int bits) {
  return moving_max / (static_cast<float>(std::pow(2.0, bits - 1)) - 1.0f);
}

// cambricon: the value OneFlow stores in the `scale` slot, the shift
// floor(log2(amax)) - (b - 2), computed in T = float. REQUIRES amax > 0 (log2(0) = -inf and
// OneFlow's int conversion of it is undefined).
inline float OneFlowCambriconShift(float in_min, float in_max, int bits) {
  const float amax = std::max(std::abs(in_max), std::abs(in_min));
  return std::floor(std::log2(amax)) - static_cast<float>(bits - 2);
}

// The step OneFlow's FakeQuantization derives from that shift: T(pow(2.0, (int)shift)).
inline float OneFlowCambriconStep(float shift) {
  return static_cast<float>(std::pow(2.0, static_cast<int>(shift)));
}

// ---- MegEngine (SPEC §3.3 _calculate_qparams) ----------------------------------------------

// mn' = min(0, mn), mx' = max(0, mx);
// symmetric: scale = max(max(-mn', mx') / ((qmax - qmin) / 2), eps)   (zero point None -> 0)
// asymmetric: scale = max((mx' - mn') / (qmax - qmin), eps); zp = qmin - roundf(mn' / scale).
inline SysQParams MegEngineCalculateQParams(float inp_min_val, float inp_max_val, int64_t qmin,
                                            int64_t qmax, bool symmetric, float eps = 1e-5f) {
  const float min_val = std::min(0.0f, inp_min_val);
  const float max_val = std::max(0.0f, inp_max_val);
  if (symmetric) {
    const float half_range = static_cast<float>((qmax - qmin) / 2.0);  // Python float
    const float scale = std::max(std::max(-min_val, max_val) / half_range, eps);
    return {scale, 0.0f};
  }
  const float scale = std::max((max_val - min_val) / static_cast<float>(qmax - qmin), eps);
  const float zero_point = static_cast<float>(qmin) - std::round(min_val / scale);
  return {scale, zero_point};
}

// ---- NVIDIA pytorch-quantization (SPEC §4.2) -----------------------------------------------

// _tensor_quant: max_bound = 2^(b - 1 + unsigned) - 1; scale = max_bound / amax (a multiplier);
// where amax <= 2^-24 the scale is 0.
inline float NvidiaScale(float amax, int num_bits, bool is_unsigned) {
  const float max_bound =
      static_cast<float>(std::pow(2.0, num_bits - 1 + (is_unsigned ? 1 : 0)) - 1.0);
  float scale = max_bound / amax;
  const float epsilon = 1.0f / static_cast<float>(1 << 24);
  if (amax <= epsilon) scale = 0.0f;
  return scale;
}

// FakeAffineTensorQuantFunction: step = (max - min) / (2^b - 1); min_bound = -2^(b-1);
// quant_zero = round(min / step) - min_bound (torch.round: half to even).
inline SysQParams NvidiaFakeAffine(float min_range, float max_range, int num_bits) {
  const float step_size =
      (max_range - min_range) / static_cast<float>(std::pow(2.0, num_bits) - 1.0);
  const float min_bound = -static_cast<float>(std::pow(2.0, num_bits - 1));
  const float quant_zero = std::nearbyint(min_range / step_size) - min_bound;
  return {step_size, quant_zero};
}

// ---- Intel Distiller (SPEC §5.1, q_utils.py) -----------------------------------------------

// symmetric_linear_quantization_params: n = 2^(b-1) - 1 if restricted else (2^b - 1) / 2;
// a saturation of 0 is replaced by n; scale = n / sat; zp = 0. REQUIRES sat >= 0.
// `n / sat` is a Python number divided by a float32 tensor, which torch evaluates as
// `sat.reciprocal() * n` (Tensor.__rdiv__): two float32 roundings, not one division.
inline float TorchNumberOverTensor(float n, float t) {
  const float reciprocal = 1.0f / t;
  return reciprocal * n;
}

inline SysQParams DistillerSymmetric(int num_bits, float sat, bool restrict_qrange) {
  const double n =
      restrict_qrange ? std::pow(2.0, num_bits - 1) - 1.0 : (std::pow(2.0, num_bits) - 1.0) / 2.0;
  if (sat == 0.0f) sat = static_cast<float>(n);
  return {TorchNumberOverTensor(static_cast<float>(n), sat), 0.0f};
}

// asymmetric_linear_quantization_params: n = 2^b - 1; smin = min(smin, 0), smax = max(smax, 0);
// diff = smax - smin, 0 replaced by n; scale = n / diff; zp = scale * smin, rounded (half to
// even) if integral; + 2^(b-1) if signed. REQUIRES smin <= smax.
inline SysQParams DistillerAsymmetric(int num_bits, float saturation_min, float saturation_max,
                                      bool integral_zero_point, bool is_signed) {
  const float n = static_cast<float>(std::pow(2.0, num_bits) - 1.0);
  const float sat_min = std::min(saturation_min, 0.0f);
  const float sat_max = std::max(saturation_max, 0.0f);
  float diff = sat_max - sat_min;
  if (diff == 0.0f) diff = n;
  const float scale = TorchNumberOverTensor(n, diff);  // torch: n / diff
  float zero_point = scale * sat_min;
  if (integral_zero_point) zero_point = std::nearbyint(zero_point);
  if (is_signed) zero_point += static_cast<float>(std::pow(2.0, num_bits - 1));
  return {scale, zero_point};
}

// ---- PyTorch torch.ao.quantization (SPEC §7.2 _calculate_qparams) ---------------------------

enum class TorchQScheme { kSymmetric, kAffine, kAffineFloatQParams };

// min_val_neg = min(min, 0), max_val_pos = max(max, 0);
// symmetric: scale = max(max(-min_val_neg, max_val_pos) / ((qmax - qmin) / 2), eps); zp 0,
//   except dtype quint8: 128, or (qmin + qmax) // 2 with a customized range;
// affine: scale = max((max_val_pos - min_val_neg) / (qmax - qmin), eps);
//   zp = clamp(qmin - int(round(min_val_neg / scale)), qmin, qmax);
// float qparams: scale = (max - min) / (qmax - qmin), 1 where not > eps; zp = -1 * min / scale.
inline SysQParams TorchCalculateQParams(float min_val, float max_val, int64_t quant_min,
                                        int64_t quant_max, TorchQScheme qscheme,
                                        bool dtype_is_quint8 = false,
                                        bool has_customized_qrange = false,
                                        float eps = 1.1920928955078125e-07f) {
  const float min_val_neg = std::min(min_val, 0.0f);
  const float max_val_pos = std::max(max_val, 0.0f);
  switch (qscheme) {
    case TorchQScheme::kSymmetric: {
      const float amax = std::max(-min_val_neg, max_val_pos);
      const float scale = std::max(
          amax / static_cast<float>(static_cast<double>(quant_max - quant_min) / 2.0), eps);
      int64_t zero_point = 0;
      if (dtype_is_quint8) {
        // Python's // floors.
        const int64_t sum = quant_min + quant_max;
        zero_point = has_customized_qrange ? (sum >= 0 ? sum / 2 : -((-sum + 1) / 2)) : 128;
      }
      return {scale, static_cast<float>(zero_point)};
    }
    case TorchQScheme::kAffine: {
      const float scale =
          std::max((max_val_pos - min_val_neg) / static_cast<float>(quant_max - quant_min), eps);
      const int64_t rounded = static_cast<int64_t>(std::nearbyint(min_val_neg / scale));
      const int64_t zero_point = std::clamp(quant_min - rounded, quant_min, quant_max);
      return {scale, static_cast<float>(zero_point)};
    }
    case TorchQScheme::kAffineFloatQParams: {
      float scale = (max_val - min_val) / static_cast<float>(quant_max - quant_min);
      if (!(scale > eps)) scale = 1.0f;
      return {scale, (-1.0f * min_val) / scale};
    }
  }
  return {0.0f, 0.0f};
}

// ---- Horizon horizon_plugin_pytorch (SPEC §6.5 calculate_qparams) ---------------------------

// scale = clamp_min(max(-min, max), 0) / ((qmax - qmin) / 2), then max(scale, eps) with
// eps = float32 eps; BERNOULLI march: scale = 1 / 2^clamp(floor(-log2(scale)), 1, 14).
inline float HorizonScale(float min_val, float max_val, int64_t quant_min, int64_t quant_max,
                          bool bernoulli_pow2 = false) {
  const float eps = 1.1920928955078125e-07f;
  const float amax = std::max(std::max(-min_val, max_val), 0.0f);
  float scale = amax / static_cast<float>(static_cast<double>(quant_max - quant_min) / 2.0);
  scale = std::max(scale, eps);
  if (bernoulli_pow2) {
    const float k = std::clamp(std::floor(-std::log2(scale)), 1.0f, 14.0f);
    scale = 1.0f / std::pow(2.0f, k);
  }
  return scale;
}

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_QPARAMS_REF_H_
