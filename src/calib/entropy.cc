// Entropy calibration (see include/qkit/calib/entropy.h). Two evaluations of the same KL:
//  * fast: KL_i = (A_i - C_i) / T + ln Q_i - ln T, where A_i = sum_j p_j ln p_j (prefix sums),
//    C_i = sum over target buckets of B_k ln(B_k / c_k) (+ the folded tail), Q_i = sum_{j<i}
//    bins_j and T the total: O(nbins) per candidate;
//  * plain: the per-bin scipy definition, for the candidates close to the minimum.
#include "qkit/calib/entropy.h"

#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "internal/check.h"

namespace qkit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The plain evaluation, operation for operation as scipy.stats.entropy(p, q) applied to the
// reference's p and q (sums in bin order).
double PlainKl(const std::vector<int64_t>& b, int64_t i, int64_t nbins, int64_t total) {
  // q: bucket means of the non-empty bins.
  std::vector<double> bucket_sum(static_cast<size_t>(nbins), 0.0);
  std::vector<int64_t> bucket_n(static_cast<size_t>(nbins), 0);
  for (int64_t j = 0; j < i; ++j) {
    if (b[static_cast<size_t>(j)] == 0) continue;
    const int64_t k = j * nbins / i;
    bucket_sum[static_cast<size_t>(k)] += static_cast<double>(b[static_cast<size_t>(j)]);
    bucket_n[static_cast<size_t>(k)]++;
  }
  for (int64_t k = 0; k < nbins; ++k) {
    if (bucket_n[static_cast<size_t>(k)] > 0) {
      bucket_sum[static_cast<size_t>(k)] /= static_cast<double>(bucket_n[static_cast<size_t>(k)]);
    }
  }
  double sq = 0.0;
  for (int64_t j = 0; j < i; ++j) {
    if (b[static_cast<size_t>(j)] != 0) sq += bucket_sum[static_cast<size_t>(j * nbins / i)];
  }
  int64_t tail = total;
  for (int64_t j = 0; j < i; ++j) tail -= b[static_cast<size_t>(j)];
  const double sp = static_cast<double>(total);
  double s = 0.0;
  for (int64_t j = 0; j < i; ++j) {
    int64_t pj = b[static_cast<size_t>(j)];
    if (j == i - 1) pj += tail;
    const double qj =
        b[static_cast<size_t>(j)] != 0 ? bucket_sum[static_cast<size_t>(j * nbins / i)] : 0.0;
    const double a = static_cast<double>(pj) / sp;
    const double c = qj / sq;
    double term;
    if (std::isnan(a) || std::isnan(c)) {
      term = kNaN;
    } else if (a > 0 && c > 0) {
      term = a * std::log(a / c);
    } else if (a == 0 && c >= 0) {
      continue;  // a zero term: adding it would not change s
    } else {
      term = kInf;
    }
    s += term;
  }
  return s;
}

}  // namespace

EntropySearchResult EntropySearch(const int64_t* hist, int64_t num_bins,
                                  const EntropySearchOptions& o) {
  constexpr const char* kCaller = "qkit::EntropySearch";
  QKIT_REQUIRE(hist != nullptr, InvalidArgument, kCaller << ": `hist` is null");
  QKIT_REQUIRE(num_bins >= 2, InvalidArgument,
               kCaller << ": `num_bins`=" << num_bins
                       << " must be >= 2 (bins[0] is replaced by "
                          "bins[1])");
  QKIT_REQUIRE(o.num_bits >= 1 && o.num_bits <= 16, InvalidArgument,
               kCaller << ": `num_bits`=" << o.num_bits << " outside [1, 16]");
  QKIT_REQUIRE(o.stride >= 1, InvalidArgument,
               kCaller << ": `stride`=" << o.stride << " must be >= 1");
  QKIT_REQUIRE(o.start_bin >= 1 && o.start_bin <= num_bins, InvalidArgument,
               kCaller << ": `start_bin`=" << o.start_bin << " outside [1, num_bins=" << num_bins
                       << "] (no candidate to evaluate)");
  std::vector<int64_t> b(hist, hist + num_bins);
  for (int64_t k = 0; k < num_bins; ++k) {
    QKIT_REQUIRE(
        b[static_cast<size_t>(k)] >= 0, InvalidArgument,
        kCaller << ": `hist[" << k << "]`=" << b[static_cast<size_t>(k)] << " is negative");
  }
  b[0] = b[1];  // suppress the spike at zero, as upstream does
  const int64_t nbins = int64_t{1} << (o.num_bits - 1 + (o.is_unsigned ? 1 : 0));
  const size_t n = static_cast<size_t>(num_bins);

  // Prefix sums: counts, non-empty bins, and b ln b.
  std::vector<int64_t> pb(n + 1, 0), pnz(n + 1, 0);
  std::vector<double> pl(n + 1, 0.0);
  for (size_t j = 0; j < n; ++j) {
    pb[j + 1] = pb[j] + b[j];
    pnz[j + 1] = pnz[j] + (b[j] > 0 ? 1 : 0);
    pl[j + 1] =
        pl[j] + (b[j] > 0 ? static_cast<double>(b[j]) * std::log(static_cast<double>(b[j])) : 0.0);
  }
  const int64_t total = pb[n];
  const double log_total = std::log(static_cast<double>(total));

  EntropySearchResult res;
  std::vector<int64_t> cand;
  for (int64_t i = o.start_bin; i <= num_bins; i += o.stride) cand.push_back(i);
  res.divergences.resize(cand.size());
  int64_t last_nan = -1;
  double min_fast = kInf;
  for (size_t c = 0; c < cand.size(); ++c) {
    const int64_t i = cand[c];
    const int64_t q_total = pb[static_cast<size_t>(i)];
    const int64_t tail = total - q_total;
    const int64_t last = b[static_cast<size_t>(i - 1)];
    double kl;
    if (total == 0 || q_total == 0) {
      kl = kNaN;  // p^ or q^ is 0/0
    } else if (last == 0 && tail > 0) {
      kl = kInf;  // p^ > 0 where q^ = 0
    } else {
      const double p_last = static_cast<double>(last + tail);
      const double a =
          pl[static_cast<size_t>(i - 1)] + (p_last > 0 ? p_last * std::log(p_last) : 0.0);
      double cc = 0.0;
      double tail_log_q = 0.0;
      for (int64_t k = 0; k < nbins; ++k) {
        const int64_t lo = (k * i + nbins - 1) / nbins;        // ceil(k i / nbins)
        const int64_t hi = ((k + 1) * i + nbins - 1) / nbins;  // first j of bucket k + 1
        if (hi <= lo) continue;
        const int64_t cnt = pnz[static_cast<size_t>(hi)] - pnz[static_cast<size_t>(lo)];
        if (cnt == 0) continue;
        const double bk =
            static_cast<double>(pb[static_cast<size_t>(hi)] - pb[static_cast<size_t>(lo)]);
        const double lq = std::log(bk / static_cast<double>(cnt));
        cc += bk * lq;
        if (lo <= i - 1 && i - 1 < hi) tail_log_q = lq;
      }
      if (tail > 0) cc += static_cast<double>(tail) * tail_log_q;
      kl = (a - cc) / static_cast<double>(total) +
           (std::log(static_cast<double>(q_total)) - log_total);
    }
    res.divergences[c] = kl;
    if (std::isnan(kl)) last_nan = static_cast<int64_t>(c);
    if (kl < min_fast) min_fast = kl;
  }

  int64_t best;
  if (last_nan >= 0) {
    best = last_nan;  // np.argmin returns the first NaN of the reversed list
  } else if (!std::isfinite(min_fast)) {
    best = static_cast<int64_t>(cand.size()) - 1;  // all +inf: the last one
  } else {
    // Candidates whose fast value is within the fast evaluation's error bound of the minimum
    // are re-evaluated with the plain formula. Bound: sums of up to num_bins terms each at
    // most T ln T, divided by T: (num_bins + 2) eps ln T per sum; we take a 16x margin and
    // never less than 1e-9.
    const double bound = 16.0 * static_cast<double>(num_bins + 2) * DBL_EPSILON *
                         (std::fabs(log_total) + 1.0) * (1.0 + std::fabs(min_fast));
    const double window = std::max(1e-9, bound);
    best = -1;
    double best_val = kInf;
    for (size_t c = 0; c < cand.size(); ++c) {
      if (!(res.divergences[c] <= min_fast + window)) continue;
      const double v = PlainKl(b, cand[c], nbins, total);
      res.divergences[c] = v;
      if (best < 0 || v <= best_val) {  // <=: the last index of the minimum
        best = static_cast<int64_t>(c);
        best_val = v;
      }
    }
  }
  res.edge_index = best * o.stride + o.start_bin;
  return res;
}

}  // namespace qkit
