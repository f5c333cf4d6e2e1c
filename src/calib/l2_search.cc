// MegEngine's L2 range search (see include/qkit/calib/l2_search.h), restructured for speed
// without changing a single floating-point operation of the reference:
//  * steps that cannot move a bin (l == start and r == end) are recognised from two
//    comparisons instead of two scans;
//  * l and r are found by binary search (the cumulative counts are non-decreasing, so the
//    reference's linear scans stop exactly there);
//  * quant_error visits only non-zero bins: a zero bin adds density 0 times a finite value,
//    i.e. +0 or -0, to an accumulator that is >= +0, which never changes it.
#include "qkit/calib/l2_search.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "internal/check.h"

namespace qkit {
namespace {

// Non-zero bins as doubles: src index and the count (exact: int64 counts < 2^53 are assumed
// exactly representable, as in the reference's float64 division).
struct NonzeroBins {
  std::vector<double> index;
  std::vector<double> count;
};

inline double GetNorm(double begin, double end, double density) {
  const double norm = (end * end * end - begin * begin * begin) / 3;
  return density * norm;
}

double QuantErrorNonzero(const NonzeroBins& nz, double bin_width, int64_t a, int64_t b,
                         int64_t dst_nbins) {
  double norm = 0.0;
  const double dst_bin_width =
      bin_width * static_cast<double>(b - a + 1) / static_cast<double>(dst_nbins);
  if (dst_bin_width == 0.0) return 0.0;
  const double last = static_cast<double>(dst_nbins - 1);
  const double half = dst_bin_width / 2;
  const double neg_half = -dst_bin_width / 2;
  const double da = static_cast<double>(a);
  const size_t n = nz.index.size();
  for (size_t k = 0; k < n; ++k) {
    const double src_begin = (nz.index[k] - da) * bin_width;
    const double src_end = src_begin + bin_width;
    const double db = std::min(last, std::max(0.0, std::floor(src_begin / dst_bin_width)));
    const double de = std::min(last, std::max(0.0, std::floor(src_end / dst_bin_width)));
    const double begin_center = db * dst_bin_width + half;
    const double density = nz.count[k] / bin_width;
    if (db == de) {
      norm = norm + GetNorm(src_begin - begin_center, src_end - begin_center, density);
    } else {
      norm = norm + GetNorm(src_begin - begin_center, half, density);
      norm = norm + (de - db - 1) * GetNorm(neg_half, half, density);
      const double end_center = de * dst_bin_width + half;
      norm = norm + GetNorm(neg_half, src_end - end_center, density);
    }
  }
  return norm;
}

void CheckCommon(int64_t bins, float min_val, float max_val, int64_t dst_nbins) {
  constexpr const char* kCaller = "qkit::L2NormSearch";
  QKIT_REQUIRE(bins >= 1, InvalidArgument, kCaller << ": `bins`=" << bins << " must be >= 1");
  QKIT_REQUIRE(dst_nbins >= 1, InvalidArgument,
               kCaller << ": `dst_nbins`=" << dst_nbins << " must be >= 1");
  QKIT_REQUIRE(std::isfinite(min_val) && std::isfinite(max_val) && min_val <= max_val,
               InvalidArgument,
               kCaller << ": range [`min_val`=" << min_val << ", `max_val`=" << max_val
                       << "] must be finite with min_val <= max_val");
}

// The search loop on cumulative counts `csum` (non-decreasing) and their `total`.
L2SearchResult Search(const std::vector<double>& csum, double total, const NonzeroBins& nz,
                      int64_t bins, float min_val, float max_val, int64_t dst_nbins) {
  // float32, as the reference's 0-d subtraction; where that overflows (ranges wider than
  // FLT_MAX, on which the reference computes NaN errors) the float64 difference.
  const float span = max_val - min_val;
  const double span_d =
      std::isfinite(span) ? static_cast<double>(span) : static_cast<double>(max_val) - min_val;
  const double bin_width = span_d / static_cast<double>(bins);
  const double stepsize = 1e-5;
  double alpha = 0.0, beta = 1.0;
  int64_t start = 0, end = bins - 1;
  double norm_min = std::numeric_limits<double>::infinity();
  L2SearchResult res;
  const double* c = csum.data();
  while (alpha < beta) {
    const double next_alpha = alpha + stepsize;
    const double next_beta = beta - stepsize;
    const double lo_t = next_alpha * total;
    const double hi_t = next_beta * total;
    // l stays at start iff start == end or cSum[start] >= lo_t; r stays at end iff
    // end == start or cSum[end] <= hi_t. Then the reference moves nothing and takes the
    // `else` branch: beta advances.
    const bool l_stays = start >= end || !(c[start] < lo_t);
    const bool r_stays = end <= start || !(c[end] > hi_t);
    if (l_stays && r_stays) {
      beta = next_beta;
      continue;
    }
    // First l in [start, end) with !(cSum[l] < lo_t), else end.
    const int64_t l =
        l_stays ? start
                : std::partition_point(c + start, c + end, [&](double v) { return v < lo_t; }) - c;
    // Last r in (start, end] with !(cSum[r] > hi_t), else start.
    int64_t r = end;
    if (!r_stays) {
      const double* first_above =
          std::partition_point(c + start + 1, c + end + 1, [&](double v) { return !(v > hi_t); });
      r = (first_above - c) - 1;
    }
    int64_t next_start = start, next_end = end;
    if ((l - start) > (end - r)) {
      next_start = l;
      alpha = next_alpha;
    } else {
      next_end = r;
      beta = next_beta;
    }
    if (next_start == start && next_end == end) continue;
    const double norm = QuantErrorNonzero(nz, bin_width, next_start, next_end, dst_nbins);
    ++res.evaluations;
    if (norm > norm_min) break;
    norm_min = norm;
    start = next_start;
    end = next_end;
  }
  res.start_bin = start;
  res.end_bin = end;
  res.norm = norm_min;
  // MegEngine: min_val + Tensor(bin_width * k, float32), a float32 addition. Saturated to
  // ±FLT_MAX where a range wider than FLT_MAX would overflow.
  const float lo_off = static_cast<float>(bin_width * static_cast<double>(start));
  const float hi_off = static_cast<float>(bin_width * static_cast<double>(end + 1));
  res.new_min = std::max(-FLT_MAX, std::min(FLT_MAX, min_val + lo_off));
  res.new_max = std::max(-FLT_MAX, std::min(FLT_MAX, min_val + hi_off));
  return res;
}

}  // namespace

L2SearchResult L2NormSearch(const int64_t* hist, int64_t bins, float min_val, float max_val,
                            int64_t dst_nbins) {
  CheckCommon(bins, min_val, max_val, dst_nbins);
  QKIT_REQUIRE(hist != nullptr, InvalidArgument, "qkit::L2NormSearch: `hist` is null");
  std::vector<double> csum(static_cast<size_t>(bins));
  NonzeroBins nz;
  int64_t run = 0;
  for (int64_t k = 0; k < bins; ++k) {
    QKIT_REQUIRE(hist[k] >= 0, InvalidArgument,
                 "qkit::L2NormSearch: `hist[" << k << "]`=" << hist[k] << " is negative");
    run += hist[k];
    csum[static_cast<size_t>(k)] = static_cast<double>(run);
    if (hist[k] != 0) {
      nz.index.push_back(static_cast<double>(k));
      nz.count.push_back(static_cast<double>(hist[k]));
    }
  }
  return Search(csum, static_cast<double>(run), nz, bins, min_val, max_val, dst_nbins);
}

L2SearchResult L2NormSearch(const float* hist, int64_t bins, float min_val, float max_val,
                            int64_t dst_nbins) {
  CheckCommon(bins, min_val, max_val, dst_nbins);
  QKIT_REQUIRE(hist != nullptr, InvalidArgument, "qkit::L2NormSearch: `hist` is null");
  std::vector<double> csum(static_cast<size_t>(bins));
  NonzeroBins nz;
  float run = 0.0f;    // numpy.cumsum of a float32 array
  double total = 0.0;  // Python's sum() over the float32 entries: float64
  for (int64_t k = 0; k < bins; ++k) {
    QKIT_REQUIRE(
        std::isfinite(hist[k]) && hist[k] >= 0.0f, InvalidArgument,
        "qkit::L2NormSearch: `hist[" << k << "]`=" << hist[k] << " must be finite and >= 0");
    run += hist[k];
    total += hist[k];
    csum[static_cast<size_t>(k)] = run;
    if (hist[k] != 0.0f) {
      nz.index.push_back(static_cast<double>(k));
      nz.count.push_back(hist[k]);
    }
  }
  return Search(csum, total, nz, bins, min_val, max_val, dst_nbins);
}

double L2QuantError(const int64_t* hist, int64_t bins, double bin_width, int64_t start_bin,
                    int64_t end_bin, int64_t dst_nbins) {
  QKIT_REQUIRE(hist != nullptr && bins >= 1 && dst_nbins >= 1, InvalidArgument,
               "qkit::L2QuantError: need a histogram of `bins`="
                   << bins << " >= 1 bins and `dst_nbins`=" << dst_nbins << " >= 1");
  NonzeroBins nz;
  for (int64_t k = 0; k < bins; ++k) {
    if (hist[k] != 0) {
      nz.index.push_back(static_cast<double>(k));
      nz.count.push_back(static_cast<double>(hist[k]));
    }
  }
  return QuantErrorNonzero(nz, bin_width, start_bin, end_bin, dst_nbins);
}

}  // namespace qkit
