// QuantSpec: how a tensor is quantized. Every way in which the five reference systems differ
// is a named option here (see docs/numerics.md and ../shared/SPEC.md §9); there is exactly
// one implementation of each formula, selected by these options.
#ifndef QKIT_QUANT_SPEC_H_
#define QKIT_QUANT_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>

namespace qkit {

// How a real quotient v is rounded to an integer code.
enum class Rounding : uint8_t {
  kHalfToEven,        // RNE: nearbyint/rint, torch.round (qkit default, OneFlow, NVIDIA, PyTorch)
  kHalfAwayFromZero,  // RHAZ: std::round (MegEngine; OneFlow's moving-average zero point)
  kFloorAddHalf,      // RFLOOR: floor(f32(v + 0.5f)) (Horizon "bpu_round"); 0.5-2^-25 -> 1
};

// How the quotient is formed from x and the scale parameter, and how codes are dequantized.
// The meaning of QParams::scale depends on this mode.
enum class ScaleMode : uint8_t {
  kDivide,              // scale is the step s: v = x / s, x^ = (q - z) * s  (qkit default)
  kMultiplyReciprocal,  // scale is the step s: v = x * f32(1 / s), x^ = (q - z) * s  (PyTorch)
  kMultiplier,          // scale is the multiplier m = 1/step: v = x * m, x^ = (q - z) / m
                        // (NVIDIA, Distiller). m == 0 quantizes everything to z and
                        // dequantizes with m := 1 (NVIDIA's degenerate-amax rule).
};

// Where the zero point enters.
enum class ZeroPointMode : uint8_t {
  kAddAfterRound,   // q = round(v) + z  (PyTorch, MegEngine FakeQuant, qkit default)
  kAddBeforeRound,  // q = round(f32(v + z))  (Distiller, MegEngine LSQ, OneFlow affine CPU)
};

// What a NaN input does in fake quantization / quantization.
enum class NanMode : uint8_t {
  kPropagate,   // fake quant: NaN out (qkit default); integer quantize: InvalidArgument
  kToQuantMin,  // NaN -> code quant_min (PyTorch's fmax behaviour); mask bit 0
  kError,       // InvalidArgument naming the tensor (in-place calls check before writing)
};

// Granularity of the quantization parameters.
enum class Granularity : uint8_t {
  kPerTensor,   // one (scale, zero_point)
  kPerChannel,  // one per index along `axis`; params have shape [shape[axis]]
  kPerGroup,    // one per `group_size` consecutive elements along `axis`: params have the
                // tensor's shape with shape[axis] replaced by ceil(shape[axis] / group_size)
                // (the last group of each row may be shorter)
};

// Which elements share one (scale, zero_point). Used by QuantSpec and by the reductions.
struct ParamLayout {
  Granularity granularity = Granularity::kPerTensor;
  int64_t axis = 0;        // kPerChannel / kPerGroup; negative counts from the end
  int64_t group_size = 0;  // kPerGroup only, >= 1

  static ParamLayout PerTensor() { return {}; }
  static ParamLayout PerChannel(int64_t axis) { return {Granularity::kPerChannel, axis, 0}; }
  static ParamLayout PerGroup(int64_t axis, int64_t group_size) {
    return {Granularity::kPerGroup, axis, group_size};
  }
  std::string ToString() const;
};

struct QuantSpec {
  // ---- integer range --------------------------------------------------------------------
  int bits = 8;               // 2..16
  bool is_signed = true;      // signed: [-2^(b-1), 2^(b-1)-1]; unsigned: [0, 2^b-1]
  bool narrow_range = false;  // signed only: quant_min = -(2^(b-1)-1) ([-127, 127] at 8 bits)
  // Explicit range; overrides the three fields above when both are set. Must satisfy
  // quant_min < quant_max and fit in int32 (Distiller's 257-level mode uses [-128, 128]).
  std::optional<int64_t> quant_min_override;
  std::optional<int64_t> quant_max_override;

  // ---- parameter choice (used by ChooseQParams, see qparams.h) ---------------------------
  bool symmetric = true;  // symmetric: zero_point 0; affine: zero point from min

  // ---- the fake-quant formula --------------------------------------------------------------
  Rounding rounding = Rounding::kHalfToEven;
  ScaleMode scale_mode = ScaleMode::kDivide;
  ZeroPointMode zero_point_mode = ZeroPointMode::kAddAfterRound;
  NanMode nan_mode = NanMode::kPropagate;
  // Accept zero points outside [quant_min, quant_max] in FakeQuantize / Quantize / Dequantize
  // and ValidateQParams. Such a zero point must still be finite and integral, and every
  // code - zero_point exact in float32: max(quant_max - z, z - quant_min) <= 2^24. The codes
  // are still clamped to [quant_min, quant_max], so real 0 is then not representable. OneFlow's
  // affine FakeQuantization / Quantization define it for b < 8 bits (SPEC §2.2, §2.4: the
  // unwidened range gives z = -RNE(min / s) up to 255 with codes in [0, 2^b - 1]).
  // Not an observer option (PassiveObserver rejects it; observers keep zero points in range).
  bool allow_zero_point_outside_range = false;

  // ---- granularity --------------------------------------------------------------------------
  ParamLayout layout;

  int64_t QuantMin() const;
  int64_t QuantMax() const;

  // Throws InvalidArgument naming `caller`, the field and its value, for bits outside [2, 16],
  // narrow_range with unsigned, a half-set or inverted override, group_size < 1 for kPerGroup.
  // Axis checks need the tensor and happen in the ops.
  void Validate(const char* caller) const;

  std::string ToString() const;  // one line, for messages and benchmark labels
};

const char* RoundingName(Rounding r);
const char* ScaleModeName(ScaleMode m);

}  // namespace qkit

#endif  // QKIT_QUANT_SPEC_H_
