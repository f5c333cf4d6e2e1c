// Percentile calibration over a histogram: NVIDIA pytorch-quantization's
// _compute_amax_percentile, SPEC.md §4.6.
#ifndef QKIT_CALIB_PERCENTILE_H_
#define QKIT_CALIB_PERCENTILE_H_

#include <cstdint>

namespace qkit {

// Index into the edges of the amax that keeps `percentile` percent of the counts:
// cdf = cumsum(hist / total) (float64 divisions, sequential float64 sum);
// idx = first k with cdf[k] >= percentile / 100 (np.searchsorted, side='left'), or num_bins
// when rounding leaves cdf[-1] below it. amax = edges[idx], the LEFT edge of that bin.
// REQUIRES: percentile in [0, 100] (InvalidArgument, as upstream's ValueError), num_bins >= 1,
// counts >= 0 with a positive total (FailedPrecondition for an all-zero histogram, where the
// upstream cdf is NaN).
int64_t PercentileSearch(const int64_t* hist, int64_t num_bins, double percentile);

}  // namespace qkit

#endif  // QKIT_CALIB_PERCENTILE_H_
