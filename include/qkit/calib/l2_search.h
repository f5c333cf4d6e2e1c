// L2 range search over a histogram: MegEngine's HistogramObserver._non_linear_param_search
// (Caffe2 NormMinimization; the same control flow as PyTorch's), SPEC.md §3.3.
#ifndef QKIT_CALIB_L2_SEARCH_H_
#define QKIT_CALIB_L2_SEARCH_H_

#include <cstdint>

namespace qkit {

struct L2SearchResult {
  int64_t start_bin = 0;  // first kept bin
  int64_t end_bin = 0;    // last kept bin (inclusive)
  // Quantization error of the chosen bins; +inf when the search never moved from the full
  // range (e.g. an empty or single-bin histogram).
  double norm = 0.0;
  float new_min = 0.0f;     // f32(min_val + f32(bin_width * start_bin))
  float new_max = 0.0f;     // f32(min_val + f32(bin_width * (end_bin + 1)))
  int64_t evaluations = 0;  // quantization-error evaluations performed (cost indicator)
};

// Searches [start_bin, end_bin] for the histogram `hist` of `bins` counts over
// [min_val, max_val], quantized to `dst_nbins` levels (MegEngine: qmax - qmin + 1, 256 for
// qint8). Arithmetic exactly as the reference under NumPy 1.x promotion:
//   bin_width = f64(f32(max_val - min_val)) / bins (the float64 difference where the float32
//   one overflows; new_min / new_max are then saturated at ±FLT_MAX); cumulative counts and total
//   exact (int64); alpha/beta step 1e-5 in float64; l/r move while cSum[l] < f64(alpha' * total) /
//   cSum[r] > f64(beta' * total); the bin move decision, `continue` and `break` rules of the
//   reference; quant_error(a, b) = sum over source bins of density * (d1^3 - d0^3) / 3 pieces,
//   accumulated in float64 in bin order (docs/calibration.md §l2).
// Identical to the plain loop for every input (the implementation skips steps that cannot
// move a bin and zero-count bins, whose terms are exactly zero). Deterministic; single thread.
// REQUIRES: bins >= 1, dst_nbins >= 1, min_val <= max_val finite, counts >= 0
// (InvalidArgument naming the argument otherwise).
// Cost: O(bins) per evaluation plus O(log bins) per bin move; a few ms at 2048 bins.
L2SearchResult L2NormSearch(const int64_t* hist, int64_t bins, float min_val, float max_val,
                            int64_t dst_nbins);

// The same search on a float32 histogram (MegEngine's own state, whose combined bins hold
// fractional counts): the cumulative sum is a float32 running sum and the total a float64
// sum in bin order, as numpy.cumsum and Python's sum compute them there.
// REQUIRES: entries finite and >= 0.
L2SearchResult L2NormSearch(const float* hist, int64_t bins, float min_val, float max_val,
                            int64_t dst_nbins);

// quant_error(start_bin, end_bin) of the search above, for int64 counts (exposed for tests
// and tools).
double L2QuantError(const int64_t* hist, int64_t bins, double bin_width, int64_t start_bin,
                    int64_t end_bin, int64_t dst_nbins);

}  // namespace qkit

#endif  // QKIT_CALIB_L2_SEARCH_H_
