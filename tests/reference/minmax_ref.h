// Scalar reference for MinMax / AbsMax / NumParams, written from the contract in
// include/qkit/ops/minmax.h and docs/reductions.md, independently of the kernels: one loop over
// the logical (row-major) elements, reading each through the view's strides.
#ifndef QKIT_TESTS_REFERENCE_MINMAX_REF_H_
#define QKIT_TESTS_REFERENCE_MINMAX_REF_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "qkit/ops/minmax.h"
#include "qkit/tensor.h"

namespace qkit::ref {

// float16 bits -> float, decoded field by field (exact).
inline float F16ToFloat(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int frac = h & 0x3ff;
  float mag;
  if (exp == 0) {
    mag = std::ldexp(static_cast<float>(frac), -24);  // subnormal: frac * 2^-24
  } else if (exp == 31) {
    mag = frac == 0 ? std::numeric_limits<float>::infinity()
                    : std::numeric_limits<float>::quiet_NaN();
  } else {
    mag = std::ldexp(static_cast<float>(1024 + frac), exp - 25);  // (1 + frac/1024) * 2^(e-15)
  }
  return sign ? -mag : mag;
}

// bfloat16 bits are the high half of a float32.
inline float BF16ToFloat(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Element `offset` (in elements) of a float32 / float16 / bfloat16 buffer.
inline float LoadElement(const void* data, DType dtype, int64_t offset) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, static_cast<const char*>(data) + offset * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, static_cast<const char*>(data) + offset * 2, 2);
  return dtype == DType::kFloat16 ? F16ToFloat(h) : BF16ToFloat(h);
}

inline int64_t NormalizedAxis(const TensorView& x, const ParamLayout& layout) {
  return layout.axis < 0 ? layout.axis + x.ndim : layout.axis;
}

// Parameter-array shape: 1 value per tensor; shape[axis] per channel; the tensor's shape with
// shape[axis] -> ceil(shape[axis] / group_size) per group.
inline int64_t RefNumParams(const TensorView& x, const ParamLayout& layout) {
  if (layout.granularity == Granularity::kPerTensor) return 1;
  const int64_t axis = NormalizedAxis(x, layout);
  if (layout.granularity == Granularity::kPerChannel) return x.shape[axis];
  int64_t n = 1;
  for (int d = 0; d < x.ndim; ++d) {
    const int64_t s = x.shape[d];
    n *= d == axis ? (s + layout.group_size - 1) / layout.group_size : s;
  }
  return n;
}

// Slot of the element at multi-index idx (row-major index into the parameter array).
inline int64_t RefSlot(const TensorView& x, const ParamLayout& layout, const int64_t* idx) {
  if (layout.granularity == Granularity::kPerTensor) return 0;
  const int64_t axis = NormalizedAxis(x, layout);
  if (layout.granularity == Granularity::kPerChannel) return idx[axis];
  int64_t slot = 0;
  for (int d = 0; d < x.ndim; ++d) {
    const int64_t extent =
        d == axis ? (x.shape[d] + layout.group_size - 1) / layout.group_size : x.shape[d];
    const int64_t i = d == axis ? idx[d] / layout.group_size : idx[d];
    slot = slot * extent + i;
  }
  return slot;
}

// Calls fn(value, slot) for every element in row-major order.
template <class Fn>
void ForEachElement(const TensorView& x, const ParamLayout& layout, Fn&& fn) {
  if (x.numel() == 0) return;
  int64_t idx[kMaxDims] = {};
  for (;;) {
    int64_t off = 0;
    for (int d = 0; d < x.ndim; ++d) off += idx[d] * x.strides[d];
    fn(LoadElement(x.data, x.dtype, off), RefSlot(x, layout, idx));
    int d = x.ndim - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < x.shape[d]) break;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// Per slot: which elements take part, and whether a NaN poisons it (kPropagate).
struct SlotStats {
  std::vector<bool> any;  // at least one participating element
  std::vector<bool> nan;  // kPropagate and the slot holds a NaN
  std::vector<float> lo;  // min of participating elements (or of |x| for abs)
  std::vector<float> hi;  // max
  int64_t skipped = 0;
};

inline SlotStats RefStats(const TensorView& x, const ParamLayout& layout, NonFinite policy,
                          bool abs) {
  const int64_t p = RefNumParams(x, layout);
  SlotStats s;
  s.any.assign(p, false);
  s.nan.assign(p, false);
  s.lo.assign(p, 0.0f);
  s.hi.assign(p, 0.0f);
  ForEachElement(x, layout, [&](float v, int64_t slot) {
    if (abs) v = std::fabs(v);
    if (std::isnan(v)) {
      if (policy == NonFinite::kPropagate) {
        s.nan[slot] = true;
      } else {
        ++s.skipped;
      }
      return;
    }
    if (std::isinf(v) && policy == NonFinite::kSkip) {
      ++s.skipped;
      return;
    }
    if (!s.any[slot]) {
      s.any[slot] = true;
      s.lo[slot] = v;
      s.hi[slot] = v;
    } else {
      if (v < s.lo[slot]) s.lo[slot] = v;
      if (v > s.hi[slot]) s.hi[slot] = v;
    }
  });
  return s;
}

// A zero extreme is written as +0.
inline float PlusZero(float v) { return v == 0.0f ? 0.0f : v; }

// Folds one slot's extreme into an accumulator: NaN slot -> NaN; no participating element ->
// unchanged; NaN accumulator -> stays NaN; else the min (or max), zero as +0.
inline void FoldMin(bool nan, bool any, float lo, float& acc) {
  if (nan) {
    acc = std::numeric_limits<float>::quiet_NaN();
  } else if (any && !std::isnan(acc)) {
    acc = PlusZero(lo < acc ? lo : acc);
  }
}
inline void FoldMax(bool nan, bool any, float hi, float& acc) {
  if (nan) {
    acc = std::numeric_limits<float>::quiet_NaN();
  } else if (any && !std::isnan(acc)) {
    acc = PlusZero(hi > acc ? hi : acc);
  }
}

inline void RefMinMax(const TensorView& x, const ParamLayout& layout, NonFinite policy,
                      float* min_acc, float* max_acc, int64_t* skipped) {
  const SlotStats s = RefStats(x, layout, policy, /*abs=*/false);
  for (size_t p = 0; p < s.any.size(); ++p) {
    FoldMin(s.nan[p], s.any[p], s.lo[p], min_acc[p]);
    FoldMax(s.nan[p], s.any[p], s.hi[p], max_acc[p]);
  }
  if (skipped) *skipped += s.skipped;
}

inline void RefAbsMax(const TensorView& x, const ParamLayout& layout, NonFinite policy,
                      float* amax_acc, int64_t* skipped) {
  const SlotStats s = RefStats(x, layout, policy, /*abs=*/true);
  for (size_t p = 0; p < s.any.size(); ++p) FoldMax(s.nan[p], s.any[p], s.hi[p], amax_acc[p]);
  if (skipped) *skipped += s.skipped;
}

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_MINMAX_REF_H_
