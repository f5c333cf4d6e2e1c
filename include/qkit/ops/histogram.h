// Histograms of floating-point tensors with exact int64 counts, per tensor or per channel (each
// slot with its own range and bin count), under the binning rules of torch.histc and
// np.histogram. Formulas: docs/calibration.md §histogram; SPEC.md §4.6, §7.7.
#ifndef QKIT_OPS_HISTOGRAM_H_
#define QKIT_OPS_HISTOGRAM_H_

#include <cstdint>

#include "qkit/context.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

// How an element x of [lo, hi] is mapped to a bin in [0, nbins). In every rule, elements
// outside [f32(lo), f32(hi)], NaN and ±Inf are skipped (and counted, see HistogramSkipped),
// and x == f32(hi) goes to the last bin. lo and hi are rounded to float32 (saturating at
// ±FLT_MAX) because both systems compare float32 data with float32 edges.
enum class HistogramBinning : uint8_t {
  // Current PyTorch CPU torch.histc (HistogramKernel.cpp, LINEAR_INTERPOLATION), in float32:
  //   bin = trunc(f32(f32(f32(x - lo) * f32(nbins)) / f32(hi - lo)))   (multiply, then divide)
  kTorchHistc,
  // PyTorch <= 1.13 CPU torch.histc (checked against Debian's torch 1.13 on random inputs
  // including values on and next to every edge):
  //   bin = trunc(f32(f32(f32(x - lo) / f32(hi - lo)) * f32(nbins)))   (divide, then multiply)
  kTorchHistcDivideFirst,
  // np.histogram(x, nbins, range=(lo, hi)) on float32 data (NumPy 1.x, 1.24 read):
  //   norm = f32(nbins / d) with d = f32(hi - lo) (float32 endpoints) or hi - lo in float64
  //   (HistogramSlot::numpy_f64_range); i = trunc(f32(f32(x - lo) * norm)), i == nbins -> nbins-1;
  //   then one step of edge correction against the float32 edges e = NumpyLinspaceEdges(...):
  //   x < e[i] -> i - 1; then x >= e[i + 1] and i != nbins - 1 -> i + 1.
  //   lo == hi is widened to [lo - 0.5, hi + 0.5] in float64 (as np.histogram does), which
  //   also selects float64 endpoints.
  kNumpy,
};

struct HistogramOptions {
  HistogramBinning binning = HistogramBinning::kTorchHistc;
  bool abs_input = false;   // bin |x| instead of x (NVIDIA's calibrator)
  bool skip_zeros = false;  // leave out elements equal to ±0 (NVIDIA's skip_zeros)
};

// One parameter slot: its range and its number of bins.
// REQUIRES: lo and hi finite; 1 <= nbins <= 2^24; for the torch rules f32(lo) < f32(hi)
// (torch.histc's own widening of an empty range needs the data and is the caller's job, see
// HistcRange); for kNumpy lo <= hi.
struct HistogramSlot {
  double lo = 0.0;
  double hi = 0.0;
  int64_t nbins = 0;
  // kNumpy only: the range reaches np.histogram as float64 scalars (MegEngine after its first
  // batch); false: float32 scalars (np.histogram's own min / max, MegEngine's first batch).
  bool numpy_f64_range = false;
};

// Elements of one slot that were not counted.
struct HistogramSkipped {
  int64_t nonfinite = 0;     // NaN and ±Inf
  int64_t out_of_range = 0;  // finite non-skipped values outside [f32(lo), f32(hi)]
  int64_t zeros = 0;         // ±0 left out under HistogramOptions::skip_zeros
};

inline constexpr int64_t kMaxHistogramBins = int64_t{1} << 24;

// counts[offset(p) + b] += number of elements of slot p (see NumParams in ops/minmax.h; only
// per-tensor and per-channel layouts) whose bin is b, where offset(p) = sum of slots[q].nbins
// over q < p. `slots` has NumParams(x, layout) entries. `skipped` (nullable, one per slot)
// is added to. Empty x adds nothing. The counts are exact int64 and identical for every
// ctx.num_threads and SIMD target. float16 / bfloat16 are binned as their exact float32 values
// (torch.histc would compute in half precision).
// Ranges so wide that the float32 formula overflows (f32(hi - lo) or, for kTorchHistc,
// f32(f32(hi - lo) * nbins) infinite; for kNumpy a non-finite norm) are binned with the same
// formula evaluated in float64 and clamped to [0, nbins - 1] (the reference systems fail or
// index out of bounds there).
// Cost: one read of x; bin indices are computed with SIMD and counted into several
// sub-histograms per thread (private memory ~4 * 4 * sum(nbins + 2) bytes per thread).
void Histogram(const TensorView& x, const ParamLayout& layout, const HistogramSlot* slots,
               const HistogramOptions& options, int64_t* counts, HistogramSkipped* skipped,
               const Context& ctx);

// np.histogram(x, bins=edges) for explicit edges (NVIDIA's numpy path: float32 edges before its
// histogram first grows, float64 after; float32 data compares exactly with either): bin k holds
// edges[k] <= x < edges[k + 1], the last bin also x == edges[-1]; values outside [edges[0],
// edges[-1]], NaN and ±Inf are skipped. Per tensor only. counts has num_edges - 1 entries and is
// added to. REQUIRES: num_edges >= 2, edges finite and non-decreasing (InvalidArgument otherwise).
void HistogramWithEdges(const TensorView& x, const double* edges, int64_t num_edges, bool abs_input,
                        bool skip_zeros, int64_t* counts, HistogramSkipped* skipped,
                        const Context& ctx);

// The float32 edges np.linspace(lo, hi, nbins + 1, dtype=float32) that kNumpy corrects
// against: e[k] = f32(k * step + lo) with step = (hi - lo) / nbins in float64, e[nbins] = f32(hi)
// (saturated at ±FLT_MAX). Writes nbins + 1 floats.
void NumpyLinspaceEdges(double lo, double hi, int64_t nbins, float* edges);

// The float32 edges torch.linspace(lo, hi, nbins + 1) gives on the CPU (scalar formula of
// ATen's linspace kernel: step = f32(f32(hi - lo) / nbins); e[k] = f32(lo + f32(step * k)) for
// k < (nbins + 1) / 2, else f32(hi - f32(step * (nbins - k)))). ATen's vectorized loop can
// differ in the last bit of interior edges depending on the CPU's vector width; the ends and
// the first step are always these. Writes nbins + 1 floats.
void TorchLinspaceEdges(float lo, float hi, int64_t nbins, float* edges);

}  // namespace qkit

#endif  // QKIT_OPS_HISTOGRAM_H_
