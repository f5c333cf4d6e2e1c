// Percentile calibration (see include/qkit/calib/percentile.h).
#include "qkit/calib/percentile.h"

#include "internal/check.h"

namespace qkit {

int64_t PercentileSearch(const int64_t* hist, int64_t num_bins, double percentile) {
  constexpr const char* kCaller = "qkit::PercentileSearch";
  QKIT_REQUIRE(percentile >= 0.0 && percentile <= 100.0, InvalidArgument,
               kCaller << ": `percentile`=" << percentile << " outside [0, 100]");
  QKIT_REQUIRE(hist != nullptr && num_bins >= 1, InvalidArgument,
               kCaller << ": need a histogram of `num_bins`=" << num_bins << " >= 1 bins");
  int64_t total = 0;
  for (int64_t k = 0; k < num_bins; ++k) {
    QKIT_REQUIRE(hist[k] >= 0, InvalidArgument,
                 kCaller << ": `hist[" << k << "]`=" << hist[k] << " is negative");
    total += hist[k];
  }
  QKIT_REQUIRE(total > 0, FailedPrecondition,
               kCaller << ": the histogram is empty (all counts 0); no percentile exists");
  const double target = percentile / 100;
  const double t = static_cast<double>(total);
  double cdf = 0.0;
  for (int64_t k = 0; k < num_bins; ++k) {
    cdf += static_cast<double>(hist[k]) / t;  // np.cumsum(hist / total)
    if (cdf >= target) return k;              // searchsorted(side='left')
  }
  return num_bins;
}

}  // namespace qkit
