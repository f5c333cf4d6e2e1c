// Per-target body of the histogram op: bin indices of one contiguous float32 block computed
// with SIMD into a small int32 buffer, then counted with scalar increments spread over
// several sub-histograms (consecutive elements go to different copies, so repeated bins do
// not form a store-to-load dependency chain). Each thread owns its sub-histograms; the .cc
// sums them (exact integers, so the result does not depend on the thread count).

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

#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline constexpr size_t kHistIdxBlock = 512;
inline constexpr size_t kHistPrefetchAhead = 2 * kHistIdxBlock;  // 4 KiB ahead

// Bin indices of x[0, n) (n <= kHistIdxBlock) for slot s into idx.
template <internal::HistMode kMode>
HWY_INLINE void HistBinBlock(const float* HWY_RESTRICT x, size_t n, const internal::HistSlotK& s,
                             bool abs_input, bool skip_zeros, int32_t* HWY_RESTRICT idx) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t N = hn::Lanes(df);
  const auto vlo = hn::Set(df, s.lo);
  const auto vhi = hn::Set(df, s.hi);
  const auto vrange = hn::Set(df, s.range);
  const auto vnb = hn::Set(df, s.nb);
  const auto vnorm = hn::Set(df, s.norm);
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
    const auto in = hn::And(hn::Ge(v, vlo), hn::Le(v, vhi));  // false for NaN
    const auto d = hn::Sub(v, vlo);
    decltype(v) t;
    if constexpr (kMode == internal::HistMode::kMulDiv) {
      t = hn::Div(hn::Mul(d, vnb), vrange);
    } else if constexpr (kMode == internal::HistMode::kDivMul) {
      t = hn::Mul(hn::Div(d, vrange), vnb);
    } else {
      t = hn::Min(hn::Mul(d, vnorm), vnb);
    }
    // Zero the lanes that are not counted before converting (conversion of NaN / huge values
    // is not defined on every target).
    t = hn::IfThenElseZero(in, t);
    auto b = hn::Min(hn::ConvertTo(di, t), vlast);
    if constexpr (kMode == internal::HistMode::kNumpy) {
      // np.histogram's one-step correction against the float32 edges can only fire for lanes
      // whose t is within numpy_margin of an integer (or at the last bin's end). Those lanes
      // are marked -1 here and recomputed by the scalar rule after the loop; all others keep
      // trunc(t), which is then provably the corrected bin.
      const auto near = hn::Lt(hn::Abs(hn::Sub(t, hn::Round(t))), vmargin);
      b = hn::IfThenElse(hn::RebindMask(di, hn::And(in, near)), vredo, b);
    }
    const auto other = hn::IfThenElse(hn::RebindMask(di, hn::IsFinite(v)), vout, vnonfinite);
    b = hn::IfThenElse(hn::RebindMask(di, in), b, other);
    if (skip_zeros) b = hn::IfThenElse(hn::RebindMask(di, hn::Eq(v, hn::Zero(df))), vzero_bin, b);
    hn::StoreU(b, di, idx + j);
  }
  if constexpr (kMode == internal::HistMode::kNumpy) {
    // Lanes marked -1: the full scalar rule (with the edge correction, identical operations).
    const auto zero = hn::Zero(di);
    for (size_t k = 0; k < j; k += N) {
      if (hn::AllFalse(di, hn::Lt(hn::LoadU(di, idx + k), zero))) continue;
      for (size_t l = k; l < k + N; ++l) {
        if (idx[l] >= 0) continue;
        const float v = abs_input ? std::fabs(x[l]) : x[l];
        idx[l] = internal::HistBinScalar(v, s, kMode, skip_zeros);
      }
    }
  }
  for (; j < n; ++j) {
    const float v = abs_input ? std::fabs(x[j]) : x[j];
    idx[j] = internal::HistBinScalar(v, s, kMode, skip_zeros);
  }
}

template <internal::HistMode kMode>
HWY_INLINE void HistCountRun(const float* HWY_RESTRICT x, size_t n, const internal::HistSlotK& s,
                             const internal::HistArgs& args, uint32_t* HWY_RESTRICT local) {
  alignas(64) int32_t idx[kHistIdxBlock];
  uint32_t* h0 = local + s.local_offset;
  for (size_t i = 0; i < n; i += kHistIdxBlock) {
    const size_t m = std::min(kHistIdxBlock, n - i);
    // Software prefetch a few blocks ahead: the scattered increments keep the core busy, and
    // the hardware prefetcher alone does not keep up once x streams from DRAM.
    if (i + kHistPrefetchAhead < n) {
      const size_t end = std::min(n, i + kHistPrefetchAhead + kHistIdxBlock);
      for (size_t j = i + kHistPrefetchAhead; j < end; j += 16) hwy::Prefetch(x + j);
    }
    if (s.wide) {
      for (size_t j = 0; j < m; ++j) {
        const float v = args.abs_input ? std::fabs(x[i + j]) : x[i + j];
        idx[j] = internal::HistBinScalar(v, s, kMode, args.skip_zeros);
      }
    } else {
      HistBinBlock<kMode>(x + i, m, s, args.abs_input, args.skip_zeros, idx);
    }
    size_t k = 0;
    if (args.subs == 4) {
      uint32_t* h1 = h0 + s.sub_stride;
      uint32_t* h2 = h1 + s.sub_stride;
      uint32_t* h3 = h2 + s.sub_stride;
      for (; k + 4 <= m; k += 4) {
        ++h0[idx[k]];
        ++h1[idx[k + 1]];
        ++h2[idx[k + 2]];
        ++h3[idx[k + 3]];
      }
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
