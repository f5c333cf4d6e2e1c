// Plain scalar references for the range searches over histograms, written from SPEC.md §3.3
// (MegEngine _non_linear_param_search and its quant_error) and §4.6 (NVIDIA entropy / mse /
// percentile), one loop per line of the upstream algorithms, with the arithmetic types the
// SPEC names. KL uses the scipy.stats.entropy definition (p and q normalised by their sums,
// rel_entr terms, summed in index order).
#ifndef QKIT_TESTS_REFERENCE_CALIB_REF_H_
#define QKIT_TESTS_REFERENCE_CALIB_REF_H_

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <vector>

namespace qkit::ref {

// ---- MegEngine L2 search -------------------------------------------------------------------

struct L2Ref {
  int64_t start_bin;
  int64_t end_bin;
  float new_min;
  float new_max;
};

// _compute_quantization_error(a, b, "L2") in float64 (NumPy 1.x promotion).
template <class Count>
double L2QuantErrorRef(const std::vector<Count>& hist, double bin_width, int64_t a, int64_t b,
                       int64_t dst_nbins) {
  auto get_norm = [](double begin, double end, double density) {
    const double norm = (end * end * end - begin * begin * begin) / 3;
    return density * norm;
  };
  double norm = 0.0;
  const double dst_bin_width =
      bin_width * static_cast<double>(b - a + 1) / static_cast<double>(dst_nbins);
  if (dst_bin_width == 0.0) return 0.0;
  for (int64_t src = 0; src < static_cast<int64_t>(hist.size()); ++src) {
    const double src_begin = static_cast<double>(src - a) * bin_width;
    const double src_end = src_begin + bin_width;
    const double dst_begin = std::min(static_cast<double>(dst_nbins - 1),
                                      std::max(0.0, std::floor(src_begin / dst_bin_width)));
    const double dst_end = std::min(static_cast<double>(dst_nbins - 1),
                                    std::max(0.0, std::floor(src_end / dst_bin_width)));
    const double begin_center = dst_begin * dst_bin_width + dst_bin_width / 2;
    const double density = static_cast<double>(hist[static_cast<size_t>(src)]) / bin_width;
    if (dst_begin == dst_end) {
      norm = norm + get_norm(src_begin - begin_center, src_end - begin_center, density);
    } else {
      norm = norm + get_norm(src_begin - begin_center, dst_bin_width / 2, density);
      norm = norm +
             (dst_end - dst_begin - 1) * get_norm(-dst_bin_width / 2, dst_bin_width / 2, density);
      const double end_center = dst_end * dst_bin_width + dst_bin_width / 2;
      norm = norm + get_norm(-dst_bin_width / 2, src_end - end_center, density);
    }
  }
  return norm;
}

// The search loop. For float32 histograms (MegEngine's state) the cumulative sum is float32
// and the total a float64 sum; for int64 counts both are exact integers.
template <class Count>
L2Ref L2SearchRef(const std::vector<Count>& hist, float min_val, float max_val, int64_t dst_nbins) {
  const int64_t bins = static_cast<int64_t>(hist.size());
  const float span = max_val - min_val;  // float32 0-d subtraction (float64 if it overflows)
  const double bin_width =
      (std::isinf(span) ? static_cast<double>(max_val) - min_val : static_cast<double>(span)) /
      static_cast<double>(bins);
  double total = 0;
  std::vector<double> csum(hist.size());
  if constexpr (std::is_same_v<Count, float>) {
    float run = 0;
    for (size_t k = 0; k < hist.size(); ++k) {
      total += hist[k];
      run += hist[k];
      csum[k] = run;
    }
  } else {
    int64_t t = 0;
    for (size_t k = 0; k < hist.size(); ++k) {
      t += hist[k];
      csum[k] = static_cast<double>(t);
    }
    total = static_cast<double>(t);
  }
  const double stepsize = 1e-5;
  double alpha = 0.0, beta = 1.0;
  int64_t start = 0, end = bins - 1;
  double norm_min = std::numeric_limits<double>::infinity();
  while (alpha < beta) {
    const double next_alpha = alpha + stepsize;
    const double next_beta = beta - stepsize;
    int64_t l = start, r = end;
    while (l < end && csum[static_cast<size_t>(l)] < next_alpha * total) ++l;
    while (r > start && csum[static_cast<size_t>(r)] > next_beta * total) --r;
    int64_t next_start = start, next_end = end;
    if ((l - start) > (end - r)) {
      next_start = l;
      alpha = next_alpha;
    } else {
      next_end = r;
      beta = next_beta;
    }
    if (next_start == start && next_end == end) continue;
    const double norm = L2QuantErrorRef(hist, bin_width, next_start, next_end, dst_nbins);
    if (norm > norm_min) break;
    norm_min = norm;
    start = next_start;
    end = next_end;
  }
  L2Ref r;
  r.start_bin = start;
  r.end_bin = end;
  const float lo_off = static_cast<float>(bin_width * static_cast<double>(start));
  const float hi_off = static_cast<float>(bin_width * static_cast<double>(end + 1));
  r.new_min = std::clamp(min_val + lo_off, -FLT_MAX, FLT_MAX);
  r.new_max = std::clamp(min_val + hi_off, -FLT_MAX, FLT_MAX);
  return r;
}

// ---- NVIDIA entropy --------------------------------------------------------------------------

// np.digitize(range(i), np.linspace(0, i, nbins + 1)) - 1, by linear search over the float64
// linspace points.
inline std::vector<int64_t> DigitizeRef(int64_t i, int64_t nbins) {
  std::vector<double> space(static_cast<size_t>(nbins + 1));
  const double step = static_cast<double>(i) / static_cast<double>(nbins);
  for (int64_t m = 0; m <= nbins; ++m)
    space[static_cast<size_t>(m)] = static_cast<double>(m) * step;
  space.back() = static_cast<double>(i);
  std::vector<int64_t> d(static_cast<size_t>(i));
  for (int64_t j = 0; j < i; ++j) {
    int64_t k = 0;  // number of points <= j
    while (k <= nbins && space[static_cast<size_t>(k)] <= static_cast<double>(j)) ++k;
    d[static_cast<size_t>(j)] = k - 1;
  }
  return d;
}

// scipy.stats.entropy(p, q) for non-negative p, q: sum_j p^_j ln(p^_j / q^_j).
inline double KlRef(const std::vector<double>& p, const std::vector<double>& q) {
  double sp = 0, sq = 0;
  for (double v : p) sp += v;
  for (double v : q) sq += v;
  double s = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    const double a = p[j] / sp, b = q[j] / sq;
    double term;
    if (std::isnan(a) || std::isnan(b)) {
      term = std::numeric_limits<double>::quiet_NaN();
    } else if (a > 0 && b > 0) {
      term = a * std::log(a / b);
    } else if (a == 0 && b >= 0) {
      term = 0;
    } else {
      term = std::numeric_limits<double>::infinity();
    }
    s += term;
  }
  return s;
}

struct EntropyRefResult {
  int64_t edge_index;  // index into the edges: last_argmin * stride + start_bin
  std::vector<double> divergences;
};

inline EntropyRefResult EntropyRef(std::vector<int64_t> bins, int num_bits, bool is_unsigned,
                                   int64_t stride, int64_t start_bin) {
  bins[0] = bins[1];
  int64_t total = 0;
  for (int64_t b : bins) total += b;
  const int64_t nbins = int64_t{1} << (num_bits - 1 + (is_unsigned ? 1 : 0));
  const int64_t stop = static_cast<int64_t>(bins.size());
  EntropyRefResult res;
  for (int64_t i = start_bin; i <= stop; i += stride) {
    std::vector<int64_t> dig = DigitizeRef(i, nbins);
    for (int64_t j = 0; j < i; ++j) {
      if (bins[static_cast<size_t>(j)] == 0) dig[static_cast<size_t>(j)] = -1;
    }
    std::vector<double> density_counts(static_cast<size_t>(nbins), 0.0);
    std::map<int64_t, int64_t> counter;
    for (int64_t j = 0; j < i; ++j) {
      const int64_t k = dig[static_cast<size_t>(j)];
      counter[k]++;
      if (k != -1)
        density_counts[static_cast<size_t>(k)] += static_cast<double>(bins[static_cast<size_t>(j)]);
    }
    for (const auto& [k, n] : counter) {
      if (k != -1) density_counts[static_cast<size_t>(k)] /= static_cast<double>(n);
    }
    std::vector<double> q(static_cast<size_t>(i), 0.0), p(static_cast<size_t>(i));
    int64_t tail = 0;
    for (int64_t j = i; j < stop; ++j) tail += bins[static_cast<size_t>(j)];
    for (int64_t j = 0; j < i; ++j) {
      const int64_t k = dig[static_cast<size_t>(j)];
      if (k != -1) q[static_cast<size_t>(j)] = density_counts[static_cast<size_t>(k)];
      p[static_cast<size_t>(j)] = static_cast<double>(bins[static_cast<size_t>(j)]);
    }
    p.back() += static_cast<double>(tail);
    (void)total;
    res.divergences.push_back(KlRef(p, q));
  }
  // Last index of the minimum; NaN counts as the minimum (np.argmin on the reversed list).
  const int64_t n = static_cast<int64_t>(res.divergences.size());
  int64_t best = -1;
  for (int64_t k = n - 1; k >= 0; --k) {
    const double v = res.divergences[static_cast<size_t>(k)];
    if (std::isnan(v)) {
      best = k;
      break;
    }
    if (best < 0 || v < res.divergences[static_cast<size_t>(best)]) best = k;
  }
  res.edge_index = best * stride + start_bin;
  return res;
}

// ---- NVIDIA mse ------------------------------------------------------------------------------

struct MseRefResult {
  int64_t center_index;
  float amax;
  std::vector<double> mses;
};

// fake_tensor_quant on CUDA (narrow range, [-bound, bound] or [0, bound] unsigned): per element
// scale = f32(bound / amax), out = f32(clamp(rint(f32(x * scale))) / scale); amax < 2^-24 -> 0.
inline float FakeQuantCudaRef(float x, float amax, int num_bits, bool is_unsigned) {
  const int bound = (1 << (num_bits - 1 + (is_unsigned ? 1 : 0))) - 1;
  if (amax < 0x1p-24f) return 0.0f;
  const float scale = static_cast<float>(bound) / amax;
  const float prod = x * scale;
  float out = std::nearbyint(prod);
  const float hi = static_cast<float>(bound);
  const float lo = is_unsigned ? -static_cast<float>(bound) : -static_cast<float>(bound);
  if (out > hi) out = hi;
  if (out < lo) out = lo;
  return out / scale;
}

inline MseRefResult MseRef(const std::vector<int64_t>& hist, const std::vector<float>& edges,
                           int num_bits, bool is_unsigned, int64_t stride, int64_t start_bin) {
  const size_t nc = edges.size() - 1;
  std::vector<float> centers(nc), counts(nc, 0.0f);
  for (size_t k = 0; k < nc; ++k) {
    const float s = edges[k + 1] + edges[k];
    centers[k] = s / 2;
    if (k < hist.size()) counts[k] = static_cast<float>(hist[k]);
  }
  MseRefResult r;
  for (int64_t i = start_bin; i < static_cast<int64_t>(nc); i += stride) {
    const float amax = centers[static_cast<size_t>(i)];
    double sum = 0;
    for (size_t k = 0; k < nc; ++k) {
      const float qc = FakeQuantCudaRef(centers[k], amax, num_bits, is_unsigned);
      const float d = qc - centers[k];
      const float sq = d * d;
      const float term = sq * counts[k];
      sum += term;
    }
    r.mses.push_back(static_cast<float>(sum / static_cast<double>(nc)));
  }
  int64_t best = 0;
  for (size_t k = 1; k < r.mses.size(); ++k) {
    if (r.mses[k] < r.mses[static_cast<size_t>(best)]) best = static_cast<int64_t>(k);
  }
  r.center_index = start_bin + best * stride;
  r.amax = centers[static_cast<size_t>(r.center_index)];
  return r;
}

// ---- NVIDIA percentile -----------------------------------------------------------------------

// idx = searchsorted(cumsum(hist / total), percentile / 100, side='left').
inline int64_t PercentileRef(const std::vector<int64_t>& hist, double percentile) {
  int64_t total = 0;
  for (int64_t h : hist) total += h;
  double cdf = 0;
  const double target = percentile / 100;
  for (size_t k = 0; k < hist.size(); ++k) {
    cdf += static_cast<double>(hist[k]) / static_cast<double>(total);
    if (cdf >= target) return static_cast<int64_t>(k);
  }
  return static_cast<int64_t>(hist.size());
}

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_CALIB_REF_H_
