// Entropy (KL-divergence) calibration over a histogram of |x|: NVIDIA pytorch-quantization's
// _compute_amax_entropy (TensorRT's algorithm), SPEC.md §4.6.
#ifndef QKIT_CALIB_ENTROPY_H_
#define QKIT_CALIB_ENTROPY_H_

#include <cstdint>
#include <vector>

namespace qkit {

struct EntropySearchOptions {
  int num_bits = 8;  // target levels nbins = 2^(num_bits - 1 + is_unsigned); [1, 16]
  bool is_unsigned = false;
  int64_t stride = 1;       // >= 1
  int64_t start_bin = 128;  // first candidate, in [1, num_bins]
};

struct EntropySearchResult {
  // Index into the histogram's edges of the chosen amax: last_argmin * stride + start_bin,
  // i.e. the number of bins kept (amax = edges[edge_index], the right edge of bin i - 1).
  int64_t edge_index = 0;
  // KL divergence of every candidate i = start_bin, start_bin + stride, ..., <= num_bins.
  std::vector<double> divergences;
};

// For each candidate i: bins = hist with bins[0] replaced by bins[1]; source bin j < i goes to
// target bucket floor(j * nbins / i) (np.digitize over np.linspace(0, i, nbins + 1), exact
// since nbins is a power of two); q[j] = mean of the non-empty bins of j's bucket (0 for an
// empty j); p = bins[:i] with p[i - 1] += sum(bins[i:]); KL = scipy.stats.entropy(p, q) =
// sum p^ ln(p^ / q^) with p^ = p / sum p, q^ = q / sum q; p^ > 0 with q^ = 0 gives +inf (bin
// i - 1 empty with a non-empty tail); sum q = 0 gives NaN.
// Choice: the LAST index attaining the minimum (np.argmin on the reversed list); a NaN counts
// as the minimum there, so if any candidate is NaN the last NaN candidate is chosen.
// Accuracy: every candidate within 1e-9 (absolute) of the smallest value of a fast
// O(nbins)-per-candidate evaluation (the same sum regrouped by target bucket) is re-evaluated
// with the plain per-bin formula above (terms in bin order, float64, std::log), and the choice
// is made on those values; so the chosen index is the plain algorithm's (exact ties, e.g.
// KL = 0 for several candidates, resolve to the last one). The values differ from scipy's in
// the last bits (NumPy's pairwise sums and SIMD log). Not reproduced: the upstream
// "Count mismatch!" RuntimeError, which exact arithmetic never raises.
// REQUIRES: num_bins >= 2, counts >= 0, options in range (InvalidArgument otherwise).
// Cost: O(num_bins * nbins) plus O(i) per re-evaluated candidate; ~1-3 ms at 2048 bins.
EntropySearchResult EntropySearch(const int64_t* hist, int64_t num_bins,
                                  const EntropySearchOptions& options);

}  // namespace qkit

#endif  // QKIT_CALIB_ENTROPY_H_
