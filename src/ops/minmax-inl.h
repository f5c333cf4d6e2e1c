// Per-target SIMD bodies of MinMax / AbsMax on ONE contiguous float32 run (see minmax.cc for
// validation, the strided walk, threading and the merge; docs/reductions.md for the contract).
//
// Two shapes of run:
//   * ReduceRun: every element of the run belongs to one slot (param_step 0): reduce the run
//     to one (lo, hi) pair, with four independent vector accumulators for ILP.
//   * UpdateSlots: element i belongs to slot i (param_step 1, e.g. channels-last): elementwise
//     min/max into the slot arrays.
// plus the rows fast path (MinMaxRows, innermost-axis channels / groups): FoldRows, which runs
// many short rows through TileRows with the slot accumulators held in registers.
// NaN / Inf are handled with explicit IsNaN / IsFinite masks (STYLE C7): hn::Min / hn::Max are
// only ever applied to NaN-free operands, or to lanes whose result is overwritten. Zero signs
// are not canonicalized here (Min/Max of ±0 depends on operand order); the final merge in
// minmax.cc maps a zero result to +0.
//
// Partial accumulators (lo, hi) are private to one thread and start at (+inf, -inf); under
// kPropagate a NaN slot is marked by storing NaN into the partials (sticky). Under kSkip /
// kSkipNaN partials never hold NaN.

// Target-independent declarations (normal include guard).
#ifndef QKIT_OPS_MINMAX_INL_SHARED_H_
#define QKIT_OPS_MINMAX_INL_SHARED_H_

#include <cstdint>

namespace qkit::internal {

// Fast path for reductions along the innermost axis of a float32 tensor whose other dims
// collapse to one stride: element (r, c) of the logical [rows, cols] matrix is at
// base[r * row_stride + c]. Slot of (r, c): c per channel (group == 0), or
// r * ceil(cols / group) + c / group per group. Channels-last activations and row-major
// weights with group-wise parameters both have this shape; the generic walk would hand out one
// short run per row (or per group) instead.
struct MinMaxRows {
  const float* base;
  int64_t row_stride;
  int64_t cols;
  int64_t group;  // 0: per channel
};

}  // namespace qkit::internal

#endif  // QKIT_OPS_MINMAX_INL_SHARED_H_

#if defined(QKIT_OPS_MINMAX_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKIT_OPS_MINMAX_INL_H_
#undef QKIT_OPS_MINMAX_INL_H_
#else
#define QKIT_OPS_MINMAX_INL_H_
#endif

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "qkit/ops/minmax.h"

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {
namespace minmax_detail {

namespace hn = hwy::HWY_NAMESPACE;

inline constexpr size_t kMinMaxPrefetchAhead = 4096;  // bytes

inline constexpr float kPosInf = std::numeric_limits<float>::infinity();
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Lanes that take part under kPolicy: kSkip keeps finite lanes; kSkipNaN keeps non-NaN lanes;
// under kPropagate a NaN lane is not "kept" either (it poisons the slot instead).
template <NonFinite kPolicy, class D, class V>
HWY_INLINE hn::Mask<D> Kept(D /*d*/, V v) {
  if constexpr (kPolicy == NonFinite::kSkip) {
    return hn::IsFinite(v);
  } else {
    return hn::Not(hn::IsNaN(v));
  }
}

// True if every lane of v0..v3 takes part (the common case, tested once per group of four
// vectors). Written per policy so that no mask is negated twice (IsFinite is itself a negated
// class test on AVX-512).
template <NonFinite kPolicy, class D, class V>
HWY_INLINE bool AllKept(D d, V v0, V v1, V v2, V v3) {
  if constexpr (kPolicy == NonFinite::kSkip) {
    return hn::AllTrue(d, hn::And(hn::And(hn::IsFinite(v0), hn::IsFinite(v1)),
                                  hn::And(hn::IsFinite(v2), hn::IsFinite(v3))));
  } else {
    return hn::AllFalse(
        d, hn::Or(hn::Or(hn::IsNaN(v0), hn::IsNaN(v1)), hn::Or(hn::IsNaN(v2), hn::IsNaN(v3))));
  }
}
template <NonFinite kPolicy, class D, class V>
HWY_INLINE bool AllKept(D d, V v) {
  if constexpr (kPolicy == NonFinite::kSkip) {
    return hn::AllTrue(d, hn::IsFinite(v));
  } else {
    return hn::AllFalse(d, hn::IsNaN(v));
  }
}

// One element, in scalar code (run tails). Same rules as the vector paths.
template <NonFinite kPolicy, bool kAbs>
HWY_INLINE void ScalarStep(float v, float& lo, float& hi, bool& nan, int64_t& skipped) {
  if constexpr (kAbs) v = std::fabs(v);
  if (std::isnan(v)) {
    if constexpr (kPolicy == NonFinite::kPropagate) {
      nan = true;
    } else {
      ++skipped;
    }
    return;
  }
  if (kPolicy == NonFinite::kSkip && std::isinf(v)) {
    ++skipped;
    return;
  }
  if constexpr (!kAbs) lo = v < lo ? v : lo;
  hi = v > hi ? v : hi;
}

// Reduces x[0, n) (all one slot) into lo / hi (not read; lo untouched when kAbs), sets *nan when
// kPropagate meets a NaN (lo / hi are then meaningless) and returns the number of elements left
// out. Under kPropagate the scan stops at the first group holding a NaN.
template <NonFinite kPolicy, bool kAbs>
HWY_INLINE int64_t ReduceRun(const float* HWY_RESTRICT x, size_t n, float* lo_out, float* hi_out,
                             bool* nan_out) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const size_t N = hn::Lanes(d);
  const V pinf = hn::Set(d, kPosInf);
  const V ninf = hn::Set(d, kNegInf);
  // Four independent accumulator pairs: Min/Max have a latency of several cycles, so one pair
  // would serialize the loop.
  V lo0 = pinf, lo1 = pinf, lo2 = pinf, lo3 = pinf;
  V hi0 = ninf, hi1 = ninf, hi2 = ninf, hi3 = ninf;
  int64_t skipped = 0;
  bool nan = false;
  size_t i = 0;

  // Excluded lanes are replaced by the identity of Min (+inf) / Max (-inf) and counted; only
  // done for a group that has any (the common all-finite case pays one test per group).
  auto fold_excluded = [&](V v, V& lo, V& hi) HWY_ATTR {
    const auto keep = Kept<kPolicy>(d, v);
    skipped += static_cast<int64_t>(N - hn::CountTrue(d, keep));
    if constexpr (!kAbs) lo = hn::Min(lo, hn::IfThenElse(keep, v, pinf));
    hi = hn::Max(hi, hn::IfThenElse(keep, v, ninf));
  };

  if (n >= 4 * N) {
    for (; i <= n - 4 * N; i += 4 * N) {
      // Software prefetch kMinMaxPrefetchAhead bytes ahead, one per cache line: one core's
      // hardware prefetcher alone does not keep enough reads in flight once x streams from
      // DRAM. Prefetches past the end are harmless (they never fault).
      for (size_t p = 0; p < 4 * N; p += 64 / sizeof(float)) {
        hwy::Prefetch(x + i + p + kMinMaxPrefetchAhead / sizeof(float));
      }
      V v0 = hn::LoadU(d, x + i);
      V v1 = hn::LoadU(d, x + i + N);
      V v2 = hn::LoadU(d, x + i + 2 * N);
      V v3 = hn::LoadU(d, x + i + 3 * N);
      if constexpr (kAbs) {
        v0 = hn::Abs(v0);
        v1 = hn::Abs(v1);
        v2 = hn::Abs(v2);
        v3 = hn::Abs(v3);
      }
      if (HWY_UNLIKELY(!AllKept<kPolicy>(d, v0, v1, v2, v3))) {
        if constexpr (kPolicy == NonFinite::kPropagate) {
          *nan_out = true;  // the slot's result is NaN whatever else the run holds
          return 0;
        } else {
          fold_excluded(v0, lo0, hi0);
          fold_excluded(v1, lo1, hi1);
          fold_excluded(v2, lo2, hi2);
          fold_excluded(v3, lo3, hi3);
          continue;
        }
      }
      // No NaN in any lane here: plain Min/Max are exact.
      if constexpr (!kAbs) {
        lo0 = hn::Min(lo0, v0);
        lo1 = hn::Min(lo1, v1);
        lo2 = hn::Min(lo2, v2);
        lo3 = hn::Min(lo3, v3);
      }
      hi0 = hn::Max(hi0, v0);
      hi1 = hn::Max(hi1, v1);
      hi2 = hn::Max(hi2, v2);
      hi3 = hn::Max(hi3, v3);
    }
  }
  for (; i + N <= n; i += N) {
    V v = hn::LoadU(d, x + i);
    if constexpr (kAbs) v = hn::Abs(v);
    if (HWY_UNLIKELY(!AllKept<kPolicy>(d, v))) {
      if constexpr (kPolicy == NonFinite::kPropagate) {
        *nan_out = true;
        return 0;
      } else {
        fold_excluded(v, lo0, hi0);
        continue;
      }
    }
    if constexpr (!kAbs) lo0 = hn::Min(lo0, v);
    hi0 = hn::Max(hi0, v);
  }
  float lo = kPosInf;
  float hi = hn::GetLane(hn::MaxOfLanes(d, hn::Max(hn::Max(hi0, hi1), hn::Max(hi2, hi3))));
  if constexpr (!kAbs) {
    lo = hn::GetLane(hn::MinOfLanes(d, hn::Min(hn::Min(lo0, lo1), hn::Min(lo2, lo3))));
  }
  for (; i < n; ++i) ScalarStep<kPolicy, kAbs>(x[i], lo, hi, nan, skipped);
  if (nan) {
    *nan_out = true;
    return 0;
  }
  if constexpr (!kAbs) *lo_out = lo;
  *hi_out = hi;
  return skipped;
}

// Elementwise: slot arrays lo[i] / hi[i] absorb x[i] for i < n (lo unused and may be null when
// kAbs). Returns the number of elements left out.
template <NonFinite kPolicy, bool kAbs>
HWY_INLINE int64_t UpdateSlots(const float* HWY_RESTRICT x, size_t n, float* HWY_RESTRICT lo,
                               float* HWY_RESTRICT hi) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const size_t N = hn::Lanes(d);
  const V pinf = hn::Set(d, kPosInf);
  const V ninf = hn::Set(d, kNegInf);
  const V qnan = hn::Set(d, std::numeric_limits<float>::quiet_NaN());
  int64_t skipped = 0;
  size_t i = 0;
  for (; i + N <= n; i += N) {
    V v = hn::LoadU(d, x + i);
    if constexpr (kAbs) v = hn::Abs(v);
    if constexpr (kPolicy == NonFinite::kPropagate) {
      // NaN-sticky: a NaN element or a slot already NaN gives NaN (Min/Max alone would not).
      const auto v_nan = hn::IsNaN(v);
      const V h = hn::LoadU(d, hi + i);
      hn::StoreU(hn::IfThenElse(hn::Or(v_nan, hn::IsNaN(h)), qnan, hn::Max(h, v)), d, hi + i);
      if constexpr (!kAbs) {
        const V l = hn::LoadU(d, lo + i);
        hn::StoreU(hn::IfThenElse(hn::Or(v_nan, hn::IsNaN(l)), qnan, hn::Min(l, v)), d, lo + i);
      }
    } else {
      // Partials never hold NaN under the skip policies; excluded lanes become identities.
      V v_lo = v, v_hi = v;
      if (HWY_UNLIKELY(!AllKept<kPolicy>(d, v))) {
        const auto keep = Kept<kPolicy>(d, v);
        skipped += static_cast<int64_t>(N - hn::CountTrue(d, keep));
        v_lo = hn::IfThenElse(keep, v, pinf);
        v_hi = hn::IfThenElse(keep, v, ninf);
      }
      hn::StoreU(hn::Max(hn::LoadU(d, hi + i), v_hi), d, hi + i);
      if constexpr (!kAbs) hn::StoreU(hn::Min(hn::LoadU(d, lo + i), v_lo), d, lo + i);
    }
  }
  for (; i < n; ++i) {
    float l = kAbs ? 0.0f : lo[i];
    float h = hi[i];
    bool nan = false;
    // ScalarStep's `v < l ? v : l` keeps a NaN partial (comparisons with NaN are false).
    ScalarStep<kPolicy, kAbs>(x[i], l, h, nan, skipped);
    if (nan) {
      l = h = std::numeric_limits<float>::quiet_NaN();
    }
    if constexpr (!kAbs) lo[i] = l;
    hi[i] = h;
  }
  return skipped;
}

// ReduceRun over x[0, n) folded into slot p of the partials (NaN-sticky). Returns the number of
// elements left out.
template <NonFinite kPolicy, bool kAbs>
HWY_INLINE int64_t FoldRun(const float* HWY_RESTRICT x, size_t n, float* lo, float* hi, int64_t p) {
  float run_lo = kPosInf, run_hi = kNegInf;
  bool nan = false;
  const int64_t skipped = ReduceRun<kPolicy, kAbs>(x, n, &run_lo, &run_hi, &nan);
  if (nan) {
    if constexpr (!kAbs) lo[p] = std::numeric_limits<float>::quiet_NaN();
    hi[p] = std::numeric_limits<float>::quiet_NaN();
    return 0;
  }
  // `a < b ? a : b` keeps a NaN partial (kPropagate) sticky.
  if constexpr (!kAbs) lo[p] = run_lo < lo[p] ? run_lo : lo[p];
  hi[p] = run_hi > hi[p] ? run_hi : hi[p];
  return skipped;
}

// Column block [0, K*N) of `rows` rows (row r at base + r * row_stride) folded into the slot
// arrays lo / hi [0, K*N), keeping the accumulators in registers across rows (UpdateSlots row
// by row would chain every row through a store and a reload of the same slots).
template <NonFinite kPolicy, bool kAbs, size_t K>
HWY_INLINE int64_t TileRows(const float* HWY_RESTRICT base, int64_t row_stride, size_t rows,
                            float* HWY_RESTRICT lo, float* HWY_RESTRICT hi) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  using M = hn::Mask<decltype(d)>;
  const size_t N = hn::Lanes(d);
  const V pinf = hn::Set(d, kPosInf);
  const V ninf = hn::Set(d, kNegInf);
  V vlo[K], vhi[K];
  M nan[K];  // kPropagate: lanes that met a NaN (Min/Max results there are overwritten)
  for (size_t k = 0; k < K; ++k) {
    vhi[k] = hn::LoadU(d, hi + k * N);
    if constexpr (kAbs) {
      vlo[k] = pinf;  // unused
      nan[k] = hn::IsNaN(vhi[k]);
    } else {
      vlo[k] = hn::LoadU(d, lo + k * N);
      nan[k] = hn::Or(hn::IsNaN(vhi[k]), hn::IsNaN(vlo[k]));
    }
  }
  int64_t skipped = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* x = base + static_cast<int64_t>(r) * row_stride;
    V v[K];
    for (size_t k = 0; k < K; ++k) {
      v[k] = hn::LoadU(d, x + k * N);
      if constexpr (kAbs) v[k] = hn::Abs(v[k]);
    }
    bool clean;
    if constexpr (K == 4) {
      clean = AllKept<kPolicy>(d, v[0], v[1], v[2], v[3]);
    } else {
      static_assert(K == 1, "K is 1 or 4");
      clean = AllKept<kPolicy>(d, v[0]);
    }
    if (HWY_UNLIKELY(!clean)) {
      if constexpr (kPolicy == NonFinite::kPropagate) {
        for (size_t k = 0; k < K; ++k) nan[k] = hn::Or(nan[k], hn::IsNaN(v[k]));
        // fall through: Min/Max of the NaN lanes are overwritten below
      } else {
        for (size_t k = 0; k < K; ++k) {
          const M keep = Kept<kPolicy>(d, v[k]);
          skipped += static_cast<int64_t>(N - hn::CountTrue(d, keep));
          if constexpr (!kAbs) vlo[k] = hn::Min(vlo[k], hn::IfThenElse(keep, v[k], pinf));
          vhi[k] = hn::Max(vhi[k], hn::IfThenElse(keep, v[k], ninf));
        }
        continue;
      }
    }
    for (size_t k = 0; k < K; ++k) {
      if constexpr (!kAbs) vlo[k] = hn::Min(vlo[k], v[k]);
      vhi[k] = hn::Max(vhi[k], v[k]);
    }
  }
  const V qnan = hn::Set(d, std::numeric_limits<float>::quiet_NaN());
  for (size_t k = 0; k < K; ++k) {
    if constexpr (kPolicy == NonFinite::kPropagate) {
      vhi[k] = hn::IfThenElse(nan[k], qnan, vhi[k]);
      vlo[k] = hn::IfThenElse(nan[k], qnan, vlo[k]);
    }
    hn::StoreU(vhi[k], d, hi + k * N);
    if constexpr (!kAbs) hn::StoreU(vlo[k], d, lo + k * N);
  }
  return skipped;
}

// Whole rows [0, rows) of a [rows, cols] matrix (row r at base + r * row_stride), element
// (r, c) into slot c of lo / hi. Short rows go through TileRows over blocks of rows that stay
// in L1 across the column tiles; long rows go row by row.
template <NonFinite kPolicy, bool kAbs>
HWY_INLINE int64_t UpdateSlotsRows(const float* HWY_RESTRICT base, int64_t row_stride, size_t rows,
                                   size_t cols, float* HWY_RESTRICT lo, float* HWY_RESTRICT hi) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  int64_t skipped = 0;
  if (cols >= 16 * N) {  // each slot is revisited only after >= 16 vectors: no chain to break
    for (size_t r = 0; r < rows; ++r) {
      skipped +=
          UpdateSlots<kPolicy, kAbs>(base + static_cast<int64_t>(r) * row_stride, cols, lo, hi);
    }
    return skipped;
  }
  constexpr size_t kBlockFloats = 4096;  // 16 KiB of rows per block: stays in L1
  const size_t block = std::max<size_t>(1, kBlockFloats / cols);
  for (size_t r0 = 0; r0 < rows; r0 += block) {
    const size_t nr = std::min(block, rows - r0);
    const float* b = base + static_cast<int64_t>(r0) * row_stride;
    size_t c = 0;
    for (; c + 4 * N <= cols; c += 4 * N) {
      skipped += TileRows<kPolicy, kAbs, 4>(b + c, row_stride, nr, kAbs ? nullptr : lo + c, hi + c);
    }
    for (; c + N <= cols; c += N) {
      skipped += TileRows<kPolicy, kAbs, 1>(b + c, row_stride, nr, kAbs ? nullptr : lo + c, hi + c);
    }
    for (; c < cols; ++c) {  // fewer than N columns left: one column at a time, in registers
      float l = kAbs ? 0.0f : lo[c];
      float h = hi[c];
      bool nan = false;
      for (size_t r = 0; r < nr; ++r) {
        ScalarStep<kPolicy, kAbs>(b[static_cast<int64_t>(r) * row_stride + c], l, h, nan, skipped);
      }
      if (nan) l = h = std::numeric_limits<float>::quiet_NaN();
      if constexpr (!kAbs) lo[c] = l;
      hi[c] = h;
    }
  }
  return skipped;
}

// The logical elements [begin, end) of a MinMaxRows matrix folded into the partials.
template <NonFinite kPolicy, bool kAbs>
HWY_INLINE int64_t FoldRows(const internal::MinMaxRows& m, int64_t begin, int64_t end,
                            float* HWY_RESTRICT lo, float* HWY_RESTRICT hi) {
  int64_t skipped = 0;
  const int64_t cols = m.cols;
  const int64_t groups_per_row = m.group ? (cols + m.group - 1) / m.group : 0;
  int64_t r = begin / cols;
  int64_t c = begin % cols;
  for (int64_t pos = begin; pos < end; ++r, c = 0) {
    const int64_t c_end = std::min(cols, c + (end - pos));
    const float* row = m.base + r * m.row_stride;
    if (m.group == 0 && c == 0 && end - pos >= 2 * cols) {  // whole rows
      const int64_t nr = (end - pos) / cols;
      skipped += UpdateSlotsRows<kPolicy, kAbs>(row, m.row_stride, static_cast<size_t>(nr),
                                                static_cast<size_t>(cols), kAbs ? nullptr : lo, hi);
      pos += nr * cols;
      r += nr - 1;
      continue;
    }
    if (m.group == 0) {
      skipped += UpdateSlots<kPolicy, kAbs>(row + c, static_cast<size_t>(c_end - c),
                                            kAbs ? nullptr : lo + c, hi + c);
    } else {
      for (int64_t k = c; k < c_end;) {
        const int64_t g = k / m.group;
        const int64_t k_end = std::min(c_end, (g + 1) * m.group);
        skipped += FoldRun<kPolicy, kAbs>(row + k, static_cast<size_t>(k_end - k), lo, hi,
                                          r * groups_per_row + g);
        k = k_end;
      }
    }
    pos += c_end - c;
  }
  return skipped;
}

}  // namespace minmax_detail
}  // namespace HWY_NAMESPACE
}  // namespace qkit
HWY_AFTER_NAMESPACE();

#endif  // QKIT_OPS_MINMAX_INL_H_
