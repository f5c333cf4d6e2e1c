// Histogram op: validation, per-slot parameters, threading with per-thread sub-histograms, and
// the single dispatch per chunk (body in histogram-inl.h).
#include "qkit/ops/histogram.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/histogram.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "ops/histogram-inl.h"

#if HWY_ONCE
#include "internal/check.h"
#include "internal/parallel.h"
#include "internal/strided_walk.h"

namespace qkit {

HWY_EXPORT(HistogramChunk);

namespace {

using internal::HistArgs;
using internal::HistMode;
using internal::HistSlotK;

// Saturating conversion of a finite double to float (a range end beyond the float32 range
// compares like ±FLT_MAX with float32 data).
float SatF32(double v) {
  if (v >= static_cast<double>(FLT_MAX)) return FLT_MAX;
  if (v <= -static_cast<double>(FLT_MAX)) return -FLT_MAX;
  return static_cast<float>(v);
}

// A margin m such that, for every counted x of a kNumpy slot, t = f32(f32(x - lo) * norm) with
// frac(t) in [m, 1 - m] lies in the bin whose float32 edges contain x, so np.histogram's
// correction cannot fire. With u = 2^-24, M = max(|lo|, |hi|), D = hi - lo, N = n / D:
//  * each edge e[k] is within ~1.01 u M of lo + k D / n (float64 linspace, then float32), i.e.
//    within 1.01 u M N of k in t units;
//  * t is within n u (4 + 3 M / D) of the exact (x - lo) N: float32 x - lo (u relative) after
//    rounding lo to float32 (u M), norm from a float32 or float64 width (2u + 2u M / D relative)
//    and the product (u).
// So x is strictly inside [e[b], e[b+1]) when frac(t) is more than u (4n + 4.01 M N) from 0 and
// 1; we take twice that plus 2^-20. Values >= 0.5 disable the shortcut.
float NumpySafeMargin(double lo, double hi, int64_t nbins, float norm) {
  const double u = 0x1p-24;
  const double m = std::max(std::fabs(lo), std::fabs(hi));
  const double n_per = std::max(static_cast<double>(norm), static_cast<double>(nbins) / (hi - lo));
  const double margin = 2.0 * u * (4.0 * static_cast<double>(nbins) + 4.01 * m * n_per) + 0x1p-20;
  return margin >= 0.5 || !std::isfinite(margin) ? 1.0f : static_cast<float>(margin);
}

HistMode ModeOf(HistogramBinning b) {
  switch (b) {
    case HistogramBinning::kTorchHistc:
      return HistMode::kMulDiv;
    case HistogramBinning::kTorchHistcDivideFirst:
      return HistMode::kDivMul;
    case HistogramBinning::kNumpy:
      return HistMode::kNumpy;
  }
  return HistMode::kMulDiv;
}

void CheckFloating(const TensorView& x, const char* caller) {
  QKIT_REQUIRE(IsFloating(x.dtype), InvalidArgument,
               caller << ": `x` must be float32, float16 or bfloat16; got " << DTypeName(x.dtype));
}

// Per-thread private counts: uint32 sub-histograms (4 bytes per bin keeps four copies of a
// 2048-bin histogram in L1), spilled into int64 before any bin could overflow.
struct ThreadHist {
  std::vector<uint32_t> local;
  std::vector<int64_t> spill;
  uint64_t since_spill = 0;  // elements counted into `local` since the last spill

  void Spill() {
    if (spill.empty()) spill.assign(local.size(), 0);
    for (size_t i = 0; i < local.size(); ++i) {
      spill[i] += local[i];
      local[i] = 0;
    }
    since_spill = 0;
  }
};

// Runs the chunked, threaded count of `walk` with the prepared slots, then folds every
// thread's sub-histograms into counts / skipped.
void RunHistogram(const internal::Walk& walk, const std::vector<HistSlotK>& slots,
                  const std::vector<int64_t>& out_offset, const HistArgs& args, int64_t local_size,
                  int64_t* counts, HistogramSkipped* skipped, const Context& ctx) {
  const int64_t n = walk.numel();
  if (n == 0) return;
  const int64_t chunks = internal::NumChunks(n, internal::kGrain);
  const int threads = internal::EffectiveThreads(chunks, ctx.num_threads);
  std::vector<ThreadHist> th(static_cast<size_t>(threads));
  for (auto& t : th) t.local.assign(static_cast<size_t>(local_size), 0);
  // A uint32 bin can take at most one increment per element, so spilling whenever another
  // chunk could push the element count past 2^32 - 1 keeps every bin exact.
  constexpr uint64_t kSpillAt =
      std::numeric_limits<uint32_t>::max() - static_cast<uint64_t>(internal::kGrain);
  internal::ParallelFor(chunks, threads, [&](int64_t c, int t) {
    ThreadHist& h = th[static_cast<size_t>(t)];
    if (h.since_spill > kSpillAt) h.Spill();
    const int64_t begin = c * internal::kGrain;
    const int64_t end = std::min(n, begin + internal::kGrain);
    HWY_DYNAMIC_DISPATCH(HistogramChunk)(walk, begin, end, args, h.local.data());
    h.since_spill += static_cast<uint64_t>(end - begin);
  });
  // Fold: integer sums, so the order (and the thread count) cannot change the result.
  for (size_t p = 0; p < slots.size(); ++p) {
    const HistSlotK& s = slots[p];
    int64_t* out = counts + out_offset[p];
    int64_t out_of_range = 0, nonfinite = 0, zeros = 0;
    for (const ThreadHist& h : th) {
      for (int sub = 0; sub < args.subs; ++sub) {
        const int64_t base = s.local_offset + sub * s.sub_stride;
        const uint32_t* l = h.local.data() + base;
        const int64_t* sp = h.spill.empty() ? nullptr : h.spill.data() + base;
        for (int32_t b = 0; b < s.nbins; ++b) {
          out[b] += static_cast<int64_t>(l[b]) + (sp ? sp[b] : 0);
        }
        out_of_range += static_cast<int64_t>(l[s.nbins]) + (sp ? sp[s.nbins] : 0);
        nonfinite += static_cast<int64_t>(l[s.nbins + 1]) + (sp ? sp[s.nbins + 1] : 0);
        zeros += static_cast<int64_t>(l[s.nbins + 2]) + (sp ? sp[s.nbins + 2] : 0);
      }
    }
    if (skipped) {
      skipped[p].out_of_range += out_of_range;
      skipped[p].nonfinite += nonfinite;
      skipped[p].zeros += zeros;
    }
  }
}

}  // namespace

void NumpyLinspaceEdges(double lo, double hi, int64_t nbins, float* edges) {
  // np.linspace(lo, hi, nbins + 1): float64 start, delta and step; y = k * step + start, the
  // last point set to stop exactly; then cast to float32.
  const double delta = hi - lo;
  const double step = delta / static_cast<double>(nbins);
  for (int64_t k = 0; k < nbins; ++k) {
    const double y = (step == 0.0)
                         ? (static_cast<double>(k) / static_cast<double>(nbins)) * delta + lo
                         : static_cast<double>(k) * step + lo;
    edges[k] = SatF32(y);
  }
  edges[nbins] = SatF32(hi);
}

void TorchLinspaceEdges(float lo, float hi, int64_t nbins, float* edges) {
  const int64_t steps = nbins + 1;
  const float step = (hi - lo) / static_cast<float>(nbins);
  const int64_t halfway = steps / 2;
  for (int64_t k = 0; k < steps; ++k) {
    edges[k] = k < halfway ? lo + step * static_cast<float>(k)
                           : hi - step * static_cast<float>(steps - k - 1);
  }
}

void Histogram(const TensorView& x, const ParamLayout& layout, const HistogramSlot* slots,
               const HistogramOptions& options, int64_t* counts, HistogramSkipped* skipped,
               const Context& ctx) {
  constexpr const char* kCaller = "qkit::Histogram";
  CheckFloating(x, kCaller);
  QKIT_REQUIRE(layout.granularity == Granularity::kPerTensor ||
                   layout.granularity == Granularity::kPerChannel,
               InvalidArgument,
               kCaller << ": only per-tensor and per-channel layouts are supported; got "
                       << layout.ToString());
  QKIT_REQUIRE(ctx.num_threads >= 1, InvalidArgument,
               kCaller << ": `ctx.num_threads`=" << ctx.num_threads << " must be >= 1");
  const TensorView* views[1] = {&x};
  const internal::Walk walk(views, 1, layout, kCaller);
  const int64_t num_slots = walk.num_params();
  QKIT_REQUIRE(slots != nullptr, InvalidArgument, kCaller << ": `slots` is null");
  QKIT_REQUIRE(counts != nullptr, InvalidArgument, kCaller << ": `counts` is null");

  const HistMode mode = ModeOf(options.binning);
  std::vector<HistSlotK> ks(static_cast<size_t>(num_slots));
  std::vector<int64_t> out_offset(static_cast<size_t>(num_slots));
  std::vector<double> eff_lo(static_cast<size_t>(num_slots)), eff_hi(eff_lo.size());
  int64_t total_bins = 0;
  for (int64_t p = 0; p < num_slots; ++p) {
    const HistogramSlot& in = slots[p];
    QKIT_REQUIRE(in.nbins >= 1 && in.nbins <= kMaxHistogramBins, InvalidArgument,
                 kCaller << ": `slots[" << p << "].nbins`=" << in.nbins << " outside [1, "
                         << kMaxHistogramBins << "]");
    QKIT_REQUIRE(
        std::isfinite(in.lo) && std::isfinite(in.hi), InvalidArgument,
        kCaller << ": `slots[" << p << "]` range [" << in.lo << ", " << in.hi << "] is not finite");
    out_offset[p] = total_bins;
    total_bins += in.nbins;
    HistSlotK& s = ks[p];
    s.nbins = static_cast<int32_t>(in.nbins);
    s.nb = static_cast<float>(in.nbins);
    double lo = in.lo, hi = in.hi;
    if (mode == HistMode::kNumpy) {
      QKIT_REQUIRE(lo <= hi, InvalidArgument,
                   kCaller << ": `slots[" << p << "]` range [" << lo << ", " << hi
                           << "]: max must be >= min");
      bool f64_range = in.numpy_f64_range;
      if (lo == hi) {  // np.histogram widens an empty range by 0.5 (in float64)
        lo -= 0.5;
        hi += 0.5;
        f64_range = true;
      }
      eff_lo[p] = lo;
      eff_hi[p] = hi;
      s.lo = SatF32(lo);
      s.hi = SatF32(hi);
      s.dlo = s.lo;
      s.dhi = s.hi;
      // Ends beyond the float32 range behave as ±FLT_MAX (documented saturation).
      const double dlo = std::max(lo, -static_cast<double>(FLT_MAX));
      const double dhi = std::min(hi, static_cast<double>(FLT_MAX));
      const double den = f64_range ? dhi - dlo : static_cast<double>(s.hi - s.lo);
      const double norm = static_cast<double>(in.nbins) / den;
      s.norm = static_cast<float>(norm);
      s.wide = !(std::isfinite(s.norm) && s.norm > 0.0f);
      if (!s.wide) s.numpy_margin = NumpySafeMargin(dlo, dhi, in.nbins, s.norm);
    } else {
      s.lo = SatF32(lo);
      s.hi = SatF32(hi);
      QKIT_REQUIRE(s.lo < s.hi, InvalidArgument,
                   kCaller << ": `slots[" << p << "]` range [" << lo << ", " << hi
                           << "] is empty in float32 (torch.histc binning needs min < max)");
      s.dlo = s.lo;
      s.dhi = s.hi;
      s.range = s.hi - s.lo;
      s.wide =
          !std::isfinite(s.range) || (mode == HistMode::kMulDiv && !std::isfinite(s.range * s.nb));
    }
  }
  if (x.numel() == 0) return;

  // kNumpy edges, one array per slot.
  std::vector<float> edges;
  if (mode == HistMode::kNumpy) {
    edges.resize(static_cast<size_t>(total_bins + num_slots));
    int64_t off = 0;
    for (int64_t p = 0; p < num_slots; ++p) {
      NumpyLinspaceEdges(eff_lo[p], eff_hi[p], slots[p].nbins, edges.data() + off);
      ks[p].edges = edges.data() + off;
      off += slots[p].nbins + 1;
    }
  }

  // Four sub-histograms per slot while they fit comfortably in L1/L2; one otherwise.
  const int64_t local_bins = total_bins + 3 * num_slots;
  HistArgs args;
  args.mode = mode;
  args.abs_input = options.abs_input;
  args.skip_zeros = options.skip_zeros;
  args.subs = local_bins <= 16384 ? 4 : 1;
  int64_t off = 0;
  for (int64_t p = 0; p < num_slots; ++p) {
    ks[p].sub_stride = ks[p].nbins + 3;
    ks[p].local_offset = off;
    off += args.subs * ks[p].sub_stride;
  }
  args.slots = ks.data();
  RunHistogram(walk, ks, out_offset, args, off, counts, skipped, ctx);
}

void HistogramWithEdges(const TensorView& x, const double* edges, int64_t num_edges, bool abs_input,
                        bool skip_zeros, int64_t* counts, HistogramSkipped* skipped,
                        const Context& ctx) {
  constexpr const char* kCaller = "qkit::HistogramWithEdges";
  CheckFloating(x, kCaller);
  QKIT_REQUIRE(ctx.num_threads >= 1, InvalidArgument,
               kCaller << ": `ctx.num_threads`=" << ctx.num_threads << " must be >= 1");
  QKIT_REQUIRE(edges != nullptr && counts != nullptr, InvalidArgument,
               kCaller << ": `edges` and `counts` must not be null");
  QKIT_REQUIRE(
      num_edges >= 2 && num_edges - 1 <= kMaxHistogramBins, InvalidArgument,
      kCaller << ": `num_edges`=" << num_edges << " outside [2, " << kMaxHistogramBins + 1 << "]");
  for (int64_t k = 0; k < num_edges; ++k) {
    QKIT_REQUIRE(std::isfinite(edges[k]), InvalidArgument,
                 kCaller << ": `edges[" << k << "]`=" << edges[k] << " is not finite");
    QKIT_REQUIRE(k == 0 || edges[k - 1] <= edges[k], InvalidArgument,
                 kCaller << ": `edges` must increase monotonically; edges[" << k - 1
                         << "]=" << edges[k - 1] << " > edges[" << k << "]=" << edges[k]);
  }
  const TensorView* views[1] = {&x};
  const internal::Walk walk(views, 1, ParamLayout::PerTensor(), kCaller);
  const int64_t n = walk.numel();
  if (n == 0) return;
  const int64_t nbins = num_edges - 1;
  const double lo = edges[0], hi = edges[num_edges - 1];
  const int64_t chunks = internal::NumChunks(n, internal::kGrain);
  const int threads = internal::EffectiveThreads(chunks, ctx.num_threads);
  // int64 per-thread counts (nbins + 3: out of range, non-finite, zeros); this path is
  // NVIDIA's optional numpy mode and uses a binary search per element.
  std::vector<std::vector<int64_t>> th(static_cast<size_t>(threads),
                                       std::vector<int64_t>(static_cast<size_t>(nbins + 3), 0));
  internal::ParallelFor(chunks, threads, [&](int64_t c, int t) {
    int64_t* h = th[static_cast<size_t>(t)].data();
    const int64_t begin = c * internal::kGrain;
    const int64_t end = std::min(n, begin + internal::kGrain);
    internal::ForEachF32Block(
        walk, 1, begin, end, [&](const float* const* in, float* const*, const internal::Run& r) {
          for (int64_t j = 0; j < r.count; ++j) {
            const float v = abs_input ? std::fabs(in[0][j]) : in[0][j];
            if (skip_zeros && v == 0.0f) {
              ++h[nbins + 2];
              continue;
            }
            if (!(v >= lo && v <= hi)) {
              ++h[std::isfinite(v) ? nbins : nbins + 1];
              continue;
            }
            // First edge > v; its predecessor's bin holds v. v == hi
            // (the closed last bin) has no such edge.
            const int64_t b = std::upper_bound(edges, edges + num_edges, v) - edges - 1;
            ++h[std::min(b, nbins - 1)];
          }
        });
  });
  for (const auto& h : th) {
    for (int64_t b = 0; b < nbins; ++b) counts[b] += h[b];
    if (skipped) {
      skipped->out_of_range += h[nbins];
      skipped->nonfinite += h[nbins + 1];
      skipped->zeros += h[nbins + 2];
    }
  }
}

}  // namespace qkit
#endif  // HWY_ONCE
