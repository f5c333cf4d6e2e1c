// NVIDIA pytorch-quantization's HistogramCalibrator (calib/histogram.py, 2.2.1; SPEC.md §4.6):
// a histogram of |x| that starts at 0 and grows by appending bins of equal width, and amax by
// entropy (KL), MSE or percentile. Per tensor (NVIDIA) or per channel (each channel its own
// growing histogram). Exact int64 counts. Formulas: docs/calibration.md §nvidia.
#ifndef QKIT_OBSERVERS_HISTOGRAM_CALIBRATOR_H_
#define QKIT_OBSERVERS_HISTOGRAM_CALIBRATOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qkit/context.h"
#include "qkit/observers/range_stats.h"
#include "qkit/ops/histogram.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

enum class CalibMethod : uint8_t { kEntropy, kMse, kPercentile };

// "entropy", "mse", "percentile"; anything else throws InvalidArgument (upstream: TypeError
// "Unknown calibration method").
CalibMethod ParseCalibMethod(std::string_view name);
const char* CalibMethodName(CalibMethod method);

struct HistogramCalibratorOptions {
  ParamLayout layout;       // per tensor (default) or per channel along `axis`
  int64_t num_bins = 2048;  // bins of the first histogram; [2, 2^24]
  int num_bits = 8;         // [2, 16]; entropy: 2^(num_bits - 1 + unsigned) target bins
  bool is_unsigned = false;
  bool skip_zeros = false;  // leave out exact zeros
  // true (default, upstream's default since 2.2): torch.histc from 0 with torch.linspace /
  // torch.arange edges. false: the numpy path (np.histogram from min|x|, np.arange growth).
  bool torch_hist = true;
  // torch path only: kTorchHistc (current PyTorch) or kTorchHistcDivideFirst (PyTorch <= 1.13).
  HistogramBinning torch_binning = HistogramBinning::kTorchHistc;
  // NaN / ±Inf are left out and counted by default; true: a batch holding any throws
  // InvalidArgument.
  bool error_on_nonfinite = false;

  void Validate(const char* caller) const;  // InvalidArgument naming the option and value
};

// Per slot; a slot with an empty `hist` has collected nothing (upstream: _calib_hist is None).
struct HistogramCalibratorState {
  std::vector<std::vector<int64_t>> hist;  // counts (upstream _calib_hist)
  // Bin edges (upstream _calib_bin_edges): float32 values on the torch path; on the numpy path
  // float32 until the histogram first grows and float64 afterwards (np.arange returns float64
  // and np.hstack promotes), flagged by edges_f64.
  std::vector<std::vector<double>> edges;
  std::vector<uint8_t> edges_f64;  // numpy path: 1 once the edges are float64
  std::vector<int64_t> num_bins;   // torch path: bins of the last torch.histc
                                   // (upstream _num_bins; may differ from
                                   // edges.size() - 1 by one, as upstream)
  int64_t nonfinite_count = 0;     // NaN / ±Inf left out, all batches
  int64_t dropped_count = 0;       // finite values upstream also drops: outside the
                                   // binned range (numpy path: below the first edge;
                                   // torch path: above an arange last edge that
                                   // rounded below the batch max)
};

// collect(x), per slot (upstream with the defaults applied; docs/calibration.md §nvidia):
//   |x| always (upstream takes |x| only when min(x) < 0, which bins the same); NaN / ±Inf
//   skipped and counted; with skip_zeros exact zeros are left out; a slot with nothing left is
//   unchanged (upstream's x.max() of an empty tensor raises).
//   torch path, x_max = max|x|:
//     first: hist = histc(|x|, num_bins, 0, x_max), edges = torch.linspace(0, x_max, num_bins+1)
//       (x_max == 0: histc's own rule bins over [-1, 1], so zeros land in bin num_bins / 2, and
//       every edge is 0);
//     later: if x_max > edges[-1]: width = f32(edges[1] - edges[0]); num_bins =
//       ceil(f32(x_max / width)); edges = torch.arange(0, f32(x_max + width), width) =
//       f32(width * k) (float64 products) for k < ceil(f32(x_max + width) / width);
//       then hist = histc(|x|, num_bins, 0, edges[-1]), hist[:len(old)] += old.
//   numpy path: first np.histogram(|x|, num_bins) (range min..max of |x|, float32 edges);
//     later, if max|x| > edges[-1], edges += np.arange(edges[-1] + width, max + width, width)
//     (NumPy 1.24: length and first step in float32 scalars while the edges are float32, the
//     values float64), then np.histogram(|x|, edges) + old counts.
// Reference failure modes, given documented results:
//   * growth from a zero-width histogram (all values so far 0; upstream divides by width 0):
//     the slot starts again from this batch, and its old counts (all zeros) go to bin 0;
//   * an old histogram longer than the new one (rounding): the extra old bins are added to the
//     last new bin;
//   * compute_amax indexing past the stored edges (torch.arange gave one edge too few): the
//     edge is extended with the same arange formula, f32(width * k).
// Not reproduced: upstream's numpy-path entropy writes bins[0] = bins[1] into the stored
// histogram (a side effect through a view); qkit never modifies the state when computing amax
// (a compat layer can apply it to state() and rebuild the calibrator).
// Not thread-safe: one calibrator per module; a call that throws leaves the state unchanged.
class HistogramCalibrator {
 public:
  static constexpr const char* kKind = "qkit.HistogramCalibrator";
  static constexpr uint32_t kStateVersion = 1;

  explicit HistogramCalibrator(const HistogramCalibratorOptions& options = {});
  // A calibrator holding `state` (validated: lengths, counts >= 0, edges finite and
  // non-decreasing, at least 2 edges per non-empty slot).
  HistogramCalibrator(const HistogramCalibratorOptions& options,
                      const HistogramCalibratorState& state);

  const HistogramCalibratorOptions& options() const { return options_; }
  const HistogramCalibratorState& state() const { return state_; }
  int64_t num_slots() const { return static_cast<int64_t>(state_.hist.size()); }
  int64_t nonfinite_count() const { return state_.nonfinite_count; }
  bool empty() const;  // nothing collected in any slot

  // collect(x): exactly Commit(BatchRange(x), BatchCounts(x, BatchRange(x))). Empty x leaves
  // the state unchanged. Deterministic for any ctx.num_threads and SIMD target.
  // Cost (torch path): one read of x when no |x| exceeds the last edge (the plan is then the
  // state's own), else three; numpy path: two.
  void Observe(const TensorView& x, const Context& ctx);

  // ---- distributed protocol (docs/observers.md) --------------------------------------------
  // Phase 1, per slot over the participating |x| (finite; non-zero under skip_zeros):
  // max = max|x|; min = min|x| on the numpy path for slots without a histogram yet (else 0);
  // observed = participants with data.
  RangeStats BatchRange(const TensorView& x, const Context& ctx) const;
  static RangeStats MergeRange(const RangeStats& a, const RangeStats& b) {
    return ::qkit::MergeRange(a, b);
  }
  // Phase 2: the local |x| binned as every rank derives it from the state and `merged`:
  // per slot its new bin counts (slot-major; a slot without data contributes no entries),
  // then one dropped-value count per slot. all_reduce(SUM) them (or MergeCounts).
  std::vector<int64_t> BatchCounts(const TensorView& x, const RangeStats& merged,
                                   const Context& ctx) const;
  static std::vector<int64_t> MergeCounts(const std::vector<int64_t>& a,
                                          const std::vector<int64_t>& b);
  // Phase 3.
  void Commit(const RangeStats& merged, const std::vector<int64_t>& merged_counts);

  // Exact for slots with identical edges and bin counts (counts add); a slot empty on one side
  // takes the other's. Anything else throws InvalidArgument (use the protocol).
  static HistogramCalibrator Merge(const HistogramCalibrator& a, const HistogramCalibrator& b);

  // compute_amax(method, stride=, start_bin=, percentile=) per slot:
  //   entropy: qkit::EntropySearch (calib/entropy.h) -> f32(edges[index]);
  //   mse: qkit::MseSearch on f32(edges) (calib/mse.h) -> the chosen center;
  //   percentile: qkit::PercentileSearch (calib/percentile.h) -> f32(edges[index]).
  // Returns nullopt when nothing was collected in any slot (upstream: None); otherwise one value
  // per slot, NaN for a slot that collected nothing. Arguments are checked first: percentile
  // outside [0, 100], stride < 1 and start_bin < 0 throw InvalidArgument; a start_bin with no
  // candidate left (entropy: > bins; mse: >= number of centers) throws InvalidArgument (upstream:
  // argmin of an empty list); percentile on an all-zero histogram throws FailedPrecondition.
  std::optional<std::vector<float>> ComputeAmax(CalibMethod method, int64_t stride = 1,
                                                int64_t start_bin = 128,
                                                double percentile = 99.99) const;
  std::optional<std::vector<float>> ComputeAmax(std::string_view method, int64_t stride = 1,
                                                int64_t start_bin = 128,
                                                double percentile = 99.99) const;

  void Reset();  // upstream reset(): back to nothing collected (options kept)

  // ---- serialization (options included; bit-exact round trips) ------------------------------
  std::vector<uint8_t> Save() const;
  static HistogramCalibrator Load(const uint8_t* data, size_t size);  // DataLoss on bad input
  std::string ToJson() const;
  static HistogramCalibrator FromJson(std::string_view json);  // InvalidArgument on bad input

 private:
  RangeStats BatchRangeImpl(const TensorView& x, const Context& ctx, const char* caller) const;
  std::vector<int64_t> BatchCountsImpl(const TensorView& x, const RangeStats& merged,
                                       const Context& ctx, const char* caller) const;
  void CommitImpl(const RangeStats& merged, const std::vector<int64_t>& merged_counts,
                  const char* caller);
  bool ObserveInRange(const TensorView& x, const Context& ctx, const char* caller);

  HistogramCalibratorOptions options_;
  HistogramCalibratorState state_;
};

}  // namespace qkit

#endif  // QKIT_OBSERVERS_HISTOGRAM_CALIBRATOR_H_
