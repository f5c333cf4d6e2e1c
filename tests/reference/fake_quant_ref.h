// Scalar reference for fake quantization, quantization, dequantization and the clipped
// backwards, written from SPEC.md (§1 rounding, §9.1-9.2, §9.6) and docs/numerics.md for
// obviousness, one element at a time, independently of src/ops/fake_quant*. Tests compare the
// optimised kernels with it bit for bit.
#ifndef QKIT_TESTS_REFERENCE_FAKE_QUANT_REF_H_
#define QKIT_TESTS_REFERENCE_FAKE_QUANT_REF_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "qkit/quant_spec.h"

namespace qkit::ref {

// SPEC §1: RNE = nearbyint (default FE_TONEAREST), RHAZ = std::round,
// RFLOOR = floor(f32(v + 0.5f)).
inline float RoundRef(float v, Rounding r) {
  switch (r) {
    case Rounding::kHalfToEven:
      return std::nearbyint(v);
    case Rounding::kHalfAwayFromZero:
      return std::round(v);
    case Rounding::kFloorAddHalf: {
      const float sum = v + 0.5f;  // rounded to float32 before the floor
      return std::floor(sum);
    }
  }
  return v;
}

// SPEC §9.2: the quotient. `scale` is s (kDivide, kMultiplyReciprocal) or m (kMultiplier).
// m == 0: every code is the zero point (so v = 0 for any non-NaN x, ±Inf included).
inline float QuotientRef(float x, float scale, ScaleMode mode) {
  switch (mode) {
    case ScaleMode::kDivide:
      return x / scale;
    case ScaleMode::kMultiplyReciprocal: {
      const float inv = 1.0f / scale;  // the reciprocal is a float32 first (PyTorch)
      return x * inv;
    }
    case ScaleMode::kMultiplier:
      if (scale == 0.0f) return std::isnan(x) ? x : 0.0f;
      return x * scale;
  }
  return x;
}

// The code before clamping: round(v) + z, or round(f32(v + z)). Codes are integers: a -0
// result is +0 (adding +0.0f changes nothing else).
inline float UnclampedCodeRef(float x, float scale, float zp, const QuantSpec& spec) {
  const float v = QuotientRef(x, scale, spec.scale_mode);
  float q;
  if (spec.zero_point_mode == ZeroPointMode::kAddAfterRound) {
    q = RoundRef(v, spec.rounding) + zp;
  } else {
    const float vz = v + zp;
    q = RoundRef(vz, spec.rounding);
  }
  return q + 0.0f;
}

// The mask / clipped-gradient condition: qmin <= q <= qmax on the unclamped code (NaN: false).
inline bool InRangeRef(float x, float scale, float zp, const QuantSpec& spec) {
  const float q = UnclampedCodeRef(x, scale, zp, spec);
  return q >= static_cast<float>(spec.QuantMin()) && q <= static_cast<float>(spec.QuantMax());
}

// Clamp written as comparisons (the kernels use Min/Max, which agrees because codes are never
// -0; NaN is handled before the clamp here).
inline float ClampRef(float q, float lo, float hi) {
  if (q < lo) return lo;
  if (q > hi) return hi;
  return q;
}

// The integer code stored by Quantize (NaN -> quant_min; only valid under kToQuantMin).
inline float CodeRef(float x, float scale, float zp, const QuantSpec& spec) {
  const float lo = static_cast<float>(spec.QuantMin());
  const float hi = static_cast<float>(spec.QuantMax());
  if (std::isnan(x)) return lo;
  return ClampRef(UnclampedCodeRef(x, scale, zp, spec), lo, hi);
}

// (c - z) * s, or (c - z) / m with m := 1 where m == 0.
inline float DequantRef(float code, float scale, float zp, ScaleMode mode) {
  const float centered = code - zp;
  if (mode == ScaleMode::kMultiplier) return centered / (scale == 0.0f ? 1.0f : scale);
  return centered * scale;
}

// Fake quantization of one element. NaN: kPropagate gives x itself, kToQuantMin the
// dequantized quant_min (kError never reaches the arithmetic).
inline float FakeQuantRef(float x, float scale, float zp, const QuantSpec& spec) {
  if (std::isnan(x)) {
    if (spec.nan_mode == NanMode::kToQuantMin) {
      return DequantRef(static_cast<float>(spec.QuantMin()), scale, zp, spec.scale_mode);
    }
    return x;
  }
  return DequantRef(CodeRef(x, scale, zp, spec), scale, zp, spec.scale_mode);
}

// Clipped straight-through gradient.
inline float ClippedGradRef(float dy, bool in_range) { return in_range ? dy : 0.0f; }

// ---- parameter slots, straight from the QuantSpec comments (row-major coordinates).

inline int64_t NumParamsRef(const std::vector<int64_t>& shape, const ParamLayout& layout) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  if (layout.granularity == Granularity::kPerTensor) return 1;
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t axis = layout.axis < 0 ? layout.axis + nd : layout.axis;
  const int64_t extent = shape[static_cast<size_t>(axis)];
  if (layout.granularity == Granularity::kPerChannel) return extent;
  if (extent == 0) return 0;
  return numel / extent * ((extent + layout.group_size - 1) / layout.group_size);
}

inline int64_t SlotRef(int64_t logical, const std::vector<int64_t>& shape,
                       const ParamLayout& layout) {
  if (layout.granularity == Granularity::kPerTensor) return 0;
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t axis = layout.axis < 0 ? layout.axis + nd : layout.axis;
  std::vector<int64_t> coord(shape.size());
  for (int64_t d = nd - 1; d >= 0; --d) {
    coord[static_cast<size_t>(d)] = logical % shape[static_cast<size_t>(d)];
    logical /= shape[static_cast<size_t>(d)];
  }
  if (layout.granularity == Granularity::kPerChannel) return coord[static_cast<size_t>(axis)];
  // Per group: row-major index into the parameter array whose shape is `shape` with
  // shape[axis] replaced by ceil(shape[axis] / group_size).
  int64_t slot = 0;
  for (int64_t d = 0; d < nd; ++d) {
    const size_t u = static_cast<size_t>(d);
    const int64_t extent =
        d == axis ? (shape[u] + layout.group_size - 1) / layout.group_size : shape[u];
    const int64_t c = d == axis ? coord[u] / layout.group_size : coord[u];
    slot = slot * extent + c;
  }
  return slot;
}

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_FAKE_QUANT_REF_H_
