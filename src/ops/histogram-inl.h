// Per-target body of the histogram op: bin indices of one contiguous float32 block computed
// with SIMD into a small int32 buffer (rare lanes, e.g. kNumpy's near-edge ones, are marked and
// recomputed by the scalar rule), then counted with scalar increments spread over several
// sub-histograms (consecutive elements go to different copies, so repeated bins do not form a
// store-to-load dependency chain). Each thread owns its sub-histograms; the .cc sums them
// (exact integers, so the result does not depend on the thread count).

// ---- target-independent part (normal include guard) ----------------------------------------
#ifndef QKIT_SRC_OPS_HISTOGRAM_SHARED_H_
#define QKIT_SRC_OPS_HISTOGRAM_SHARED_H_

#include <cmath>
#include <cstdint>

#include "internal/strided_walk.h"

namespace qkit::internal {

enum class HistMode : int { kMulDiv, kDivMul, kNumpy };

// Precomputed parameters of one slot (filled in by Histogram() in histogram.cc).
struct HistSlotK {
  float lo = 0, hi = 0;  // f32 range ends (saturated at ±FLT_MAX)
  float range = 0;       // torch rules: f32(hi - lo)
  float nb = 0;          // f32(nbins)
  float norm = 0;        // kNumpy: f32(nbins / d)
  // kNumpy: when t = f32(f32(x - lo) * norm) lies at least this far from an integer, the
  // edge correction cannot fire (histogram.cc: NumpySafeMargin), so the SIMD path keeps
  // trunc(t); other lanes take the scalar rule. >= 0.5 sends every lane to the scalar rule.
  float numpy_margin = 1.0f;
  int32_t nbins = 0;
  bool wide = false;             // the float32 formula could overflow: evaluate it in float64
  double dlo = 0, dhi = 0;       // double(lo), double(hi) for the float64 fallback
  const float* edges = nullptr;  // kNumpy: nbins + 1 float32 edges
  int64_t local_offset = 0;      // first sub-histogram of this slot in a thread's local array
  int64_t sub_stride = 0;        // nbins + 3 (nbins: out of range, nbins + 1: non-finite,
                                 // nbins + 2: skipped zero)
};

struct HistArgs {
  HistMode mode = HistMode::kMulDiv;
  bool abs_input = false;
  bool skip_zeros = false;
  int subs = 1;  // sub-histograms per slot (1 or 4)
  const HistSlotK* slots = nullptr;
};

// The bin of one element as an index into a slot's sub-histogram: [0, nbins) for counted
// elements, nbins for finite values outside the range, nbins + 1 for NaN / ±Inf, nbins + 2
// for a skipped zero. Plain float32 IEEE operations in the documented order (the SIMD body
// performs the same ones).
inline int32_t HistBinScalar(float v, const HistSlotK& s, HistMode mode, bool skip_zeros) {
  if (skip_zeros && v == 0.0f) return s.nbins + 2;
  if (!(v >= s.lo && v <= s.hi)) return std::isfinite(v) ? s.nbins : s.nbins + 1;
  int32_t b;
  if (s.wide) {
    const double den = s.dhi - s.dlo;
    double t =
        den > 0 ? (static_cast<double>(v) - s.dlo) * static_cast<double>(s.nbins) / den : 0.0;
    if (!(t >= 0)) t = 0;
    if (t > s.nbins) t = s.nbins;
    b = static_cast<int32_t>(t);
  } else if (mode == HistMode::kMulDiv) {
    const float t = ((v - s.lo) * s.nb) / s.range;
    b = static_cast<int32_t>(t);
  } else if (mode == HistMode::kDivMul) {
    const float t = ((v - s.lo) / s.range) * s.nb;
    b = static_cast<int32_t>(t);
  } else {
    float t = (v - s.lo) * s.norm;
    if (t > s.nb) t = s.nb;  // only reachable when x - lo overflows to +inf
    b = static_cast<int32_t>(t);
  }
  if (b > s.nbins - 1) b = s.nbins - 1;
  if (mode == HistMode::kNumpy) {
    if (v < s.edges[b]) --b;
    if (b != s.nbins - 1 && v >= s.edges[b + 1]) ++b;
  }
  return b;
}

}  // namespace qkit::internal

#endif  // QKIT_SRC_OPS_HISTOGRAM_SHARED_H_

// ---- per-target part ------------------------------------------------------------------------
#if defined(QKIT_SRC_OPS_HISTOGRAM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKIT_SRC_OPS_HISTOGRAM_INL_H_
#undef QKIT_SRC_OPS_HISTOGRAM_INL_H_
#else
#define QKIT_SRC_OPS_HISTOGRAM_INL_H_
#endif

#include <cfloat>

#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline constexpr size_t kHistIdxBlock = 512;
inline constexpr size_t kHistPrefetchAhead = 4 * kHistIdxBlock;  // 8 KiB ahead
// A block whose lean pass left more than kHistFullAfter out-of-range, non-finite or skipped-zero
// elements to the scalar rule (~40 cycles each, while the full pass costs ~0.25 cycle per
// element) makes the next blocks take the full pass, which bins those in SIMD (data mostly
// outside the range, many zeros under skip_zeros): kHistFullBlocks of them, doubling up to
// kHistFullBlocksMax while the lean retries keep failing.
inline constexpr size_t kHistFullAfter = 4;
inline constexpr size_t kHistFullBlocks = 16;
inline constexpr size_t kHistFullBlocksMax = 1024;

#if HWY_ARCH_X86 && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128
inline constexpr bool kHistRawTrunc = true;
#else
inline constexpr bool kHistRawTrunc = false;
#endif

// trunc(t) as int32 where t is in [0, 2^24]; other lanes give an unspecified value (they are
// overwritten). On x86 that is the raw truncating conversion (one instruction; hn::ConvertTo
// adds an overflow fix-up); elsewhere the lanes that are not counted must be zeroed first.
template <class DI, class VF>
HWY_INLINE hn::Vec<DI> HistTrunc(DI di, VF t) {
#if HWY_ARCH_X86 && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128
  if constexpr (sizeof(t.raw) == 16) {
    return hn::Vec<DI>{_mm_cvttps_epi32(t.raw)};
#if HWY_TARGET <= HWY_AVX2
  } else if constexpr (sizeof(t.raw) == 32) {
    return hn::Vec<DI>{_mm256_cvttps_epi32(t.raw)};
#endif
#if HWY_TARGET <= HWY_AVX3
  } else if constexpr (sizeof(t.raw) == 64) {
    return hn::Vec<DI>{_mm512_cvttps_epi32(t.raw)};
#endif
  } else {
    return hn::ConvertTo(di, t);
  }
#else
  return hn::ConvertTo(di, t);
#endif
}

// Bin indices of x[0, n) (n <= kHistIdxBlock) for slot s into idx ([0, nbins + 3), see
// HistBinScalar). Returns how many of the elements left to the scalar rule were not counted in
// a bin (out of range, non-finite, skipped zero).
//
// kFull = false (lean pass): a lane keeps its SIMD bin only if it is an ordinary counted value
// whose bin the SIMD formula gives for sure; every other lane (outside the range, NaN, ±Inf, a
// skipped zero, and for kNumpy any t within numpy_margin of an integer, the only lanes where
// np.histogram's one-step edge correction can fire, see histogram.cc: NumpySafeMargin) is
// marked -1 and recomputed by the scalar rule (internal::HistBinScalar, identical operations).
// For kNumpy the lean pass tests the range on t itself: a t in (0, nb) at least numpy_margin
// from every integer implies lo < x < hi (t is non-decreasing in x; x < lo gives t <= 0, and
// x > hi gives t >= t(hi), which lies above nb - numpy_margin by the same bound that makes the
// margin safe).
// kFull = true: out-of-range, non-finite and skipped-zero lanes get their bins in SIMD; only
// kNumpy's near-integer lanes are recomputed.
template <internal::HistMode kMode, bool kFull>
HWY_INLINE size_t HistBinBlock(const float* HWY_RESTRICT x, size_t n, const internal::HistSlotK& s,
                               bool abs_input, bool skip_zeros, int32_t* HWY_RESTRICT idx) {
  constexpr bool kNumpy = kMode == internal::HistMode::kNumpy;
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t N = hn::Lanes(df);
  const auto vzero = hn::Zero(df);
  const auto vlo = hn::Set(df, s.lo);
  const auto vhi = hn::Set(df, s.hi);
  const auto vrange = hn::Set(df, s.range);
  const auto vnb = hn::Set(df, s.nb);
  const auto vnorm = hn::Set(df, s.norm);
  const auto vflt_max = hn::Set(df, FLT_MAX);
  const auto vlast = hn::Set(di, s.nbins - 1);
  const auto vout = hn::Set(di, s.nbins);
  const auto vnonfinite = hn::Set(di, s.nbins + 1);
  const auto vzero_bin = hn::Set(di, s.nbins + 2);
  const auto vmargin = hn::Set(df, s.numpy_margin);
  const auto vredo = hn::Set(di, -1);
  size_t j = 0;
  for (; j + N <= n; j += N) {
    auto v = hn::LoadU(df, x + j);
    if (abs_input) v = hn::Abs(v);
    const auto d = hn::Sub(v, vlo);
    decltype(v) t;
    if constexpr (kMode == internal::HistMode::kMulDiv) {
      t = hn::Div(hn::Mul(d, vnb), vrange);
    } else if constexpr (kMode == internal::HistMode::kDivMul) {
      t = hn::Mul(hn::Div(d, vrange), vnb);
    } else {
      t = hn::Mul(d, vnorm);
    }
    hn::Mask<decltype(df)> good;  // lanes whose bin is b (or, in the full pass, set below)
    hn::Vec<decltype(di)> b;
    if constexpr (kNumpy && !kFull) {
      // Out-of-range t is clamped onto 0 or nb, integers, so such lanes fail the "far from an
      // integer" test; NaN lanes fail it whatever the clamp does with them.
      t = hn::Max(hn::Min(t, vnb), vzero);
      good = hn::Ge(hn::Abs(hn::Sub(t, hn::Round(t))), vmargin);
      if (skip_zeros) good = hn::AndNot(hn::Eq(v, vzero), good);
      if constexpr (!kHistRawTrunc) t = hn::IfThenElseZero(good, t);
      b = HistTrunc(di, t);  // in [0, nbins) on the good lanes
    } else {
      const auto in = hn::And(hn::Ge(v, vlo), hn::Le(v, vhi));  // false for NaN
      if constexpr (kNumpy) t = hn::Min(t, vnb);  // x - lo overflowing to +inf
      if constexpr (!kHistRawTrunc || kFull) t = hn::IfThenElseZero(in, t);
      b = hn::Min(HistTrunc(di, t), vlast);
      good = in;
      if constexpr (kFull) {
        const auto other =
            hn::IfThenElse(hn::RebindMask(di, hn::Le(hn::Abs(v), vflt_max)), vout, vnonfinite);
        b = hn::IfThenElse(hn::RebindMask(di, in), b, other);
        auto redo = in;  // kNumpy: only near-integer in-range lanes (not skipped zeros)
        if (skip_zeros) {
          const auto zero = hn::Eq(v, vzero);
          b = hn::IfThenElse(hn::RebindMask(di, zero), vzero_bin, b);
          redo = hn::AndNot(zero, redo);
        }
        if constexpr (kNumpy) {
          good = hn::Not(hn::And(redo, hn::Lt(hn::Abs(hn::Sub(t, hn::Round(t))), vmargin)));
        }
      } else if (skip_zeros) {
        good = hn::AndNot(hn::Eq(v, vzero), good);
      }
    }
    if constexpr (kNumpy || !kFull) b = hn::IfThenElse(hn::RebindMask(di, good), b, vredo);
    hn::StoreU(b, di, idx + j);
  }
  size_t uncounted = 0;
  if constexpr (kNumpy || !kFull) {
    // Lanes marked -1 (sign bit set): the full scalar rule. Groups of four vectors are tested at
    // once; their set lanes are found from the sign bits.
    const auto vneg = hn::Zero(di);
    auto redo_lane = [&](size_t l) {
      const float v = abs_input ? std::fabs(x[l]) : x[l];
      idx[l] = internal::HistBinScalar(v, s, kMode, skip_zeros);
      uncounted += idx[l] >= s.nbins ? 1 : 0;
    };
    auto redo_vector = [&](size_t k) {
      if (hn::AllFalse(di, hn::Lt(hn::LoadU(di, idx + k), vneg))) return;
      for (size_t l = k; l < k + N; ++l) {
        if (idx[l] < 0) redo_lane(l);
      }
    };
    size_t k = 0;
    for (; k + 4 * N <= j; k += 4 * N) {
      const auto any =
          hn::Or(hn::Or(hn::LoadU(di, idx + k), hn::LoadU(di, idx + k + N)),
                 hn::Or(hn::LoadU(di, idx + k + 2 * N), hn::LoadU(di, idx + k + 3 * N)));
      if (hn::AllFalse(di, hn::Lt(any, vneg))) continue;
      for (size_t q = 0; q < 4; ++q) redo_vector(k + q * N);
    }
    for (; k < j; k += N) redo_vector(k);
  }
  for (; j < n; ++j) {
    const float v = abs_input ? std::fabs(x[j]) : x[j];
    idx[j] = internal::HistBinScalar(v, s, kMode, skip_zeros);
  }
  return uncounted;
}

template <internal::HistMode kMode>
HWY_INLINE void HistCountRun(const float* HWY_RESTRICT x, size_t n, const internal::HistSlotK& s,
                             const internal::HistArgs& args, uint32_t* local) {
  alignas(64) int32_t idx[kHistIdxBlock];
  // Consecutive elements go to sub-histograms 0, 1, 2, 3 (all the same one when subs == 1).
  const int64_t stride = args.subs == 4 ? s.sub_stride : 0;
  uint32_t* h0 = local + s.local_offset;  // not restrict: equal when subs == 1
  uint32_t* h1 = h0 + stride;
  uint32_t* h2 = h1 + stride;
  uint32_t* h3 = h2 + stride;
  size_t full_blocks = 0;  // blocks left to take the full pass
  size_t backoff = kHistFullBlocks;
  for (size_t i = 0; i < n; i += kHistIdxBlock) {
    const size_t m = std::min(kHistIdxBlock, n - i);
    // Software prefetch of the block kHistPrefetchAhead elements ahead, one line per 16
    // increments of the counting loop below: spread over the block, the requests keep the
    // memory pipeline busy while the core is in the scattered increments (issued in one burst,
    // or left to the hardware prefetcher, x streams from DRAM at about half the speed). Near
    // the end, the current block is "prefetched" instead (in range, already cached).
    const float* pf =
        x + (i + kHistPrefetchAhead + kHistIdxBlock <= n ? i + kHistPrefetchAhead : i);
    if (s.wide) {
      for (size_t j = 0; j < m; ++j) {
        const float v = args.abs_input ? std::fabs(x[i + j]) : x[i + j];
        idx[j] = internal::HistBinScalar(v, s, kMode, args.skip_zeros);
      }
    } else if (full_blocks > 0) {
      HistBinBlock<kMode, true>(x + i, m, s, args.abs_input, args.skip_zeros, idx);
      --full_blocks;  // then try the lean pass again
    } else if (HistBinBlock<kMode, false>(x + i, m, s, args.abs_input, args.skip_zeros, idx) >
               kHistFullAfter) {
      full_blocks = backoff;
      backoff = std::min(2 * backoff, kHistFullBlocksMax);
    } else {
      backoff = kHistFullBlocks;
    }
    size_t k = 0;
    for (; k + 16 <= m; k += 16) {
      hwy::Prefetch(pf + k);
      const int32_t* q = idx + k;
      ++h0[q[0]];
      ++h1[q[1]];
      ++h2[q[2]];
      ++h3[q[3]];
      ++h0[q[4]];
      ++h1[q[5]];
      ++h2[q[6]];
      ++h3[q[7]];
      ++h0[q[8]];
      ++h1[q[9]];
      ++h2[q[10]];
      ++h3[q[11]];
      ++h0[q[12]];
      ++h1[q[13]];
      ++h2[q[14]];
      ++h3[q[15]];
    }
    for (; k < m; ++k) ++h0[idx[k]];
  }
}

template <internal::HistMode kMode>
HWY_INLINE void HistChunkMode(const internal::Walk& walk, int64_t begin, int64_t end,
                              const internal::HistArgs& args, uint32_t* local) {
  internal::ForEachF32Block(
      walk, 1, begin, end, [&](const float* const* in, float* const*, const internal::Run& piece) {
        const float* x = in[0];
        const size_t n = static_cast<size_t>(piece.count);
        if (piece.param_step == 0) {
          HistCountRun<kMode>(x, n, args.slots[piece.param_index], args, local);
          return;
        }
        // The channel axis is the innermost dim: every element has its own slot.
        for (size_t j = 0; j < n; ++j) {
          const internal::HistSlotK& s = args.slots[piece.param_index + static_cast<int64_t>(j)];
          const float v = args.abs_input ? std::fabs(x[j]) : x[j];
          ++local[s.local_offset + internal::HistBinScalar(v, s, kMode, args.skip_zeros)];
        }
      });
}

// Counts the elements with logical indices [begin, end) into `local` (this thread's
// sub-histograms, uint32: the caller spills them before they can overflow).
void HistogramChunk(const internal::Walk& walk, int64_t begin, int64_t end,
                    const internal::HistArgs& args, uint32_t* local) {
  switch (args.mode) {
    case internal::HistMode::kMulDiv:
      HistChunkMode<internal::HistMode::kMulDiv>(walk, begin, end, args, local);
      break;
    case internal::HistMode::kDivMul:
      HistChunkMode<internal::HistMode::kDivMul>(walk, begin, end, args, local);
      break;
    case internal::HistMode::kNumpy:
      HistChunkMode<internal::HistMode::kNumpy>(walk, begin, end, args, local);
      break;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkit
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
