// Plain scalar references for the histogram op, written from SPEC.md §4.6 / §7.7 and the
// NumPy 1.24 / PyTorch sources they describe (np.histogram's uniform-bin fast path,
// np.linspace, torch.histc's linear interpolation), not from qkit's kernel: one element at a
// time, float32 arithmetic spelled out with explicit float temporaries.
#ifndef QKIT_TESTS_REFERENCE_HISTOGRAM_REF_H_
#define QKIT_TESTS_REFERENCE_HISTOGRAM_REF_H_

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

namespace qkit::ref {

struct HistRefResult {
  std::vector<int64_t> counts;
  int64_t nonfinite = 0;
  int64_t out_of_range = 0;
  int64_t zeros = 0;  // left out by skip_zeros
};

inline float RefSat(double v) {
  return v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : static_cast<float>(v);
}

// torch.histc(x, bins=nbins, min=lo, max=hi) on the CPU. divide_first selects PyTorch <= 1.13.
// The float64 fallback for ranges whose float32 formula overflows is qkit's documented rule.
inline HistRefResult HistcRef(const std::vector<float>& xs, double lo, double hi, int64_t nbins,
                              bool divide_first, bool abs_input, bool skip_zeros = false) {
  HistRefResult r;
  r.counts.assign(static_cast<size_t>(nbins), 0);
  const float left = RefSat(lo), right = RefSat(hi);
  const float width = right - left;
  const float fbins = static_cast<float>(nbins);
  bool overflow = std::isinf(width);
  if (!divide_first) {
    const float big = width * fbins;
    overflow = overflow || std::isinf(big);
  }
  for (float x : xs) {
    if (abs_input) x = std::fabs(x);
    if (skip_zeros && x == 0) {
      r.zeros++;
      continue;
    }
    if (std::isnan(x) || std::isinf(x)) {
      r.nonfinite++;
      continue;
    }
    if (x < left || x > right) {
      r.out_of_range++;
      continue;
    }
    int64_t pos;
    if (overflow) {
      double t = (static_cast<double>(x) - static_cast<double>(left)) * static_cast<double>(nbins) /
                 (static_cast<double>(right) - static_cast<double>(left));
      t = std::min(std::max(t, 0.0), static_cast<double>(nbins));
      pos = static_cast<int64_t>(t);
    } else if (divide_first) {
      const float diff = x - left;
      const float frac = diff / width;
      const float scaled = frac * fbins;
      pos = static_cast<int64_t>(scaled);
    } else {
      const float diff = x - left;
      const float scaled = diff * fbins;
      const float q = scaled / width;
      pos = static_cast<int64_t>(q);
    }
    if (pos >= nbins) pos = nbins - 1;  // the right edge belongs to the last bin
    r.counts[static_cast<size_t>(pos)]++;
  }
  return r;
}

// np.linspace(lo, hi, nbins + 1, dtype=float32), computed as NumPy 1.24 does it.
inline std::vector<float> NumpyLinspaceRef(double start, double stop, int64_t nbins) {
  const int64_t num = nbins + 1;
  const double div = static_cast<double>(num - 1);
  const double delta = stop - start;
  const double step = delta / div;
  std::vector<double> y(static_cast<size_t>(num));
  for (int64_t k = 0; k < num; ++k) {
    double v = static_cast<double>(k);
    if (step == 0) {
      v = v / div;
      v = v * delta;
    } else {
      v = v * step;
    }
    y[static_cast<size_t>(k)] = v + start;
  }
  y.back() = stop;
  std::vector<float> e(y.size());
  for (size_t k = 0; k < y.size(); ++k) e[k] = RefSat(y[k]);
  return e;
}

// np.histogram(x, bins=nbins, range=(lo, hi)) for a float32 array x, NumPy 1.x promotion:
// range scalars given as float32 (f64_range false) or float64 (true).
inline HistRefResult NumpyHistRef(const std::vector<float>& xs, double lo, double hi, int64_t nbins,
                                  bool f64_range, bool abs_input, bool skip_zeros = false) {
  HistRefResult r;
  r.counts.assign(static_cast<size_t>(nbins), 0);
  double first = lo, last = hi;
  if (first == last) {  // _get_outer_edges: widen an empty range (float64 arithmetic)
    first -= 0.5;
    last += 0.5;
    f64_range = true;
  }
  const std::vector<float> edges = NumpyLinspaceRef(first, last, nbins);
  const float first32 = RefSat(first), last32 = RefSat(last);
  const double lim = FLT_MAX;
  double denom;
  if (f64_range) {
    denom = std::min(last, lim) - std::max(first, -lim);
  } else {
    const float d32 = last32 - first32;
    denom = d32;
  }
  const double norm64 = static_cast<double>(nbins) / denom;
  const float norm = static_cast<float>(norm64);
  const bool fallback = !(std::isfinite(norm) && norm > 0);
  for (float x : xs) {
    if (abs_input) x = std::fabs(x);
    if (skip_zeros && x == 0) {
      r.zeros++;
      continue;
    }
    if (std::isnan(x) || std::isinf(x)) {
      r.nonfinite++;
      continue;
    }
    if (!(x >= first32) || !(x <= last32)) {
      r.out_of_range++;
      continue;
    }
    double f;
    if (fallback) {  // qkit's float64 evaluation when float32's norm is not finite
      const double den = static_cast<double>(last32) - static_cast<double>(first32);
      f = den > 0 ? (static_cast<double>(x) - first32) * static_cast<double>(nbins) / den : 0.0;
    } else {
      const float diff = x - first32;
      const float prod = diff * norm;
      f = prod;
    }
    f = std::min(std::max(f, 0.0), static_cast<double>(nbins));
    int64_t idx = static_cast<int64_t>(f);
    if (idx == nbins) idx -= 1;
    if (x < edges[static_cast<size_t>(idx)]) idx -= 1;
    if (x >= edges[static_cast<size_t>(idx + 1)] && idx != nbins - 1) idx += 1;
    r.counts[static_cast<size_t>(idx)]++;
  }
  return r;
}

// np.histogram(x, bins=edges): counts from the cumulative definition np.histogram uses,
// counts[k] = #(x < e[k+1]) - #(x < e[k]) and, for the last bin, #(x <= e[-1]) - #(x < e[-2]).
inline HistRefResult EdgesHistRef(const std::vector<float>& xs, const std::vector<double>& edges,
                                  bool abs_input, bool skip_zeros = false) {
  HistRefResult r;
  const size_t nb = edges.size() - 1;
  r.counts.assign(nb, 0);
  std::vector<float> v;
  for (float x : xs) {
    if (abs_input) x = std::fabs(x);
    if (skip_zeros && x == 0) {
      r.zeros++;
      continue;
    }
    if (std::isnan(x) || std::isinf(x)) {
      r.nonfinite++;
    } else if (x < edges.front() || x > edges.back()) {
      r.out_of_range++;
    } else {
      v.push_back(x);
    }
  }
  auto below = [&](double e) {
    int64_t c = 0;
    for (float x : v) c += x < e;
    return c;
  };
  auto at_most = [&](double e) {
    int64_t c = 0;
    for (float x : v) c += x <= e;
    return c;
  };
  for (size_t k = 0; k + 1 < nb; ++k) r.counts[k] = below(edges[k + 1]) - below(edges[k]);
  r.counts[nb - 1] = at_most(edges[nb]) - below(edges[nb - 1]);
  return r;
}

// One slot of MegEngine's HistogramObserver (SPEC.md §3.3: sideeffect_forward,
// _adjust_min_max, _combine_histograms) with qkit's documented integer rounding of the combined
// histogram (floor of the cumulative counts) and its rules for the reference's failure modes
// (zero-width stored range: restart; grid overrun: the overflowing cells count in the last
// cell). `x` holds the batch's finite values. overruns counts how often the overrun rule fired.
struct MegEngineSlotRef {
  int64_t bins = 2048;
  int64_t up = 128;
  bool has = false;
  float min_val = 0, max_val = 0;
  std::vector<int64_t> hist;
  int64_t overruns = 0;

  void Observe(const std::vector<float>& x) {
    if (x.empty()) return;
    float xmin = x[0], xmax = x[0];
    for (float v : x) {
      if (v < xmin) xmin = v;
      if (v > xmax) xmax = v;
    }
    xmin += 0.0f;  // a zero extreme is +0
    xmax += 0.0f;
    if (!has) {
      hist = NumpyHistRef(x, xmin, xmax, bins, /*f64_range=*/false, false).counts;
      min_val = xmin;
      max_val = xmax;
      has = true;
      return;
    }
    const float new_min = std::min(xmin, min_val);
    const float new_max = std::max(xmax, max_val);
    if (min_val == max_val) {  // zero width: start again on the combined range
      std::vector<int64_t> h = NumpyHistRef(x, new_min, new_max, bins, false, false).counts;
      const std::vector<int64_t> at_c =
          NumpyHistRef(std::vector<float>{min_val}, new_min, new_max, bins, false, false).counts;
      int64_t total = 0;
      for (int64_t c : hist) total += c;
      for (size_t k = 0; k < h.size(); ++k) h[k] += at_c[k] * total;
      hist = h;
      min_val = new_min;
      max_val = new_max;
      return;
    }
    // _adjust_min_max
    const float old_span32 = max_val - min_val;
    const double old_span = std::isinf(old_span32) ? static_cast<double>(max_val) - min_val
                                                   : static_cast<double>(old_span32);
    const double hist_bin_width = old_span / static_cast<double>(bins * up);
    const float new_span32 = new_max - new_min;
    const double new_span = std::isinf(new_span32) ? static_cast<double>(new_max) - new_min
                                                   : static_cast<double>(new_span32);
    const double downsample = std::ceil(new_span / (static_cast<double>(bins) * hist_bin_width));
    const int64_t down = static_cast<int64_t>(downsample);
    const double e =
        static_cast<double>(down) * (static_cast<double>(bins) * hist_bin_width) - new_span;
    const double cmax = static_cast<double>(new_max) + e / 2;
    const double cmin = static_cast<double>(new_min) - e / 2;
    const int64_t start_idx = static_cast<int64_t>(
        std::nearbyint((static_cast<double>(min_val) - cmin) / hist_bin_width));
    std::vector<int64_t> h = NumpyHistRef(x, cmin, cmax, bins, /*f64_range=*/true, false).counts;
    if (cmin == static_cast<double>(min_val) && cmax == static_cast<double>(max_val)) {
      for (size_t k = 0; k < h.size(); ++k) h[k] += hist[k];
    } else {
      // _combine_histograms on an explicit fine grid.
      const int64_t cells = bins * down;
      std::vector<int64_t> grid(static_cast<size_t>(cells), 0);
      bool overrun = false;
      for (int64_t i = 0; i < bins; ++i) {
        for (int64_t c = 0; c < up; ++c) {
          int64_t cell = start_idx + i * up + c;
          if (cell >= cells) {
            cell = cells - 1;
            overrun = true;
          }
          grid[static_cast<size_t>(cell)] += hist[static_cast<size_t>(i)];
        }
      }
      overruns += overrun ? 1 : 0;
      int64_t integral = 0, prev = 0;
      for (int64_t j = 0; j < bins; ++j) {
        for (int64_t c = j * down; c < (j + 1) * down; ++c)
          integral += grid[static_cast<size_t>(c)];
        const int64_t cur = integral / up;  // floor: integral >= 0
        h[static_cast<size_t>(j)] += cur - prev;
        prev = cur;
      }
    }
    hist = h;
    min_val = RefSat(cmin);
    max_val = RefSat(cmax);
  }
};

// torch.linspace(start, end, steps) on the CPU, ATen's scalar formula in float32: the first
// half counted from start, the second half back from end.
inline std::vector<float> TorchLinspaceRef(float start, float end, int64_t steps) {
  std::vector<float> v(static_cast<size_t>(steps));
  const float step = (end - start) / static_cast<float>(steps - 1);
  for (int64_t i = 0; i < steps; ++i) {
    if (i < steps / 2) {
      const float off = step * static_cast<float>(i);
      v[static_cast<size_t>(i)] = start + off;
    } else {
      const float off = step * static_cast<float>(steps - i - 1);
      v[static_cast<size_t>(i)] = end - off;
    }
  }
  return v;
}

// NVIDIA HistogramCalibrator.collect for one slot (SPEC.md §4.6, pytorch-quantization 2.2.1),
// on the values as given (the caller applies abs and drops NaN / Inf and, for skip_zeros, the
// zeros), with qkit's documented rules where upstream fails (zero-width growth: restart, old
// counts to bin 0; an old histogram longer than the new one: extra bins to the last bin).
// torch path: histc binning per `divide_first`; numpy path: np.histogram semantics.
struct NvidiaCalibratorRef {
  int64_t num_bins = 2048;
  bool torch_hist = true;
  bool divide_first = false;
  std::vector<int64_t> hist;
  std::vector<double> edges;
  bool edges_f64 = false;
  int64_t cur_bins = 0;
  int64_t dropped = 0;

  void Collect(const std::vector<float>& x) {
    if (x.empty()) return;
    float xmax = x[0], xmin = x[0];
    for (float v : x) {
      xmax = std::max(xmax, v);
      xmin = std::min(xmin, v);
    }
    if (torch_hist) {
      auto histc = [&](double lo, double hi, int64_t bins) {
        if (lo == hi) {  // torch.histc's range rule: the data's min / max, then +-1
          lo = xmin;
          hi = xmax;
          if (lo == hi) {
            lo -= 1;
            hi += 1;
          }
        }
        auto r = HistcRef(x, lo, hi, bins, divide_first, false);
        dropped += r.out_of_range;
        return r.counts;
      };
      const bool restart = !hist.empty() && xmax > edges.back() &&
                           !(static_cast<float>(edges[1]) - static_cast<float>(edges[0]) > 0);
      if (hist.empty() || restart) {
        int64_t old_total = 0;
        for (int64_t c : hist) old_total += c;
        hist = histc(0.0, xmax, num_bins);
        hist[0] += old_total;
        const auto e = TorchLinspaceRef(0.0f, xmax, num_bins + 1);
        edges.assign(e.begin(), e.end());
        cur_bins = num_bins;
        return;
      }
      if (xmax > edges.back()) {
        const float width = static_cast<float>(edges[1]) - static_cast<float>(edges[0]);
        const float q = xmax / width;
        cur_bins = static_cast<int64_t>(std::ceil(q));
        const float end = xmax + width;
        const int64_t n = static_cast<int64_t>(std::ceil(static_cast<double>(end) / width));
        edges.clear();
        for (int64_t k = 0; k < n; ++k) {
          edges.push_back(static_cast<float>(static_cast<double>(width) * static_cast<double>(k)));
        }
      }
      std::vector<int64_t> h = histc(0.0, edges.back(), cur_bins);
      for (size_t k = 0; k < hist.size(); ++k) h[std::min(k, h.size() - 1)] += hist[k];
      hist = h;
      return;
    }
    // numpy path
    if (hist.empty()) {
      auto r = NumpyHistRef(x, xmin, xmax, num_bins, false, false);
      hist = r.counts;
      const double lo = xmin == xmax ? xmin - 0.5 : xmin, hi = xmin == xmax ? xmax + 0.5 : xmax;
      const auto e = NumpyLinspaceRef(lo, hi, num_bins);
      edges.assign(e.begin(), e.end());
      edges_f64 = false;
      cur_bins = num_bins;
      return;
    }
    if (xmax > edges.back()) {
      // np.arange(edges[-1] + width, xmax + width, width): float32 scalars before the first
      // growth, float64 after; float64 values start + i * (second - start).
      std::vector<double> more;
      if (!edges_f64) {
        const float w = static_cast<float>(edges[1]) - static_cast<float>(edges[0]);
        const float start = static_cast<float>(edges.back()) + w;
        const float stop = xmax + w;
        const float span = stop - start;
        const float steps = span / w;
        const double n = std::ceil(static_cast<double>(steps));
        const float second = start + w;
        for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
          more.push_back(static_cast<double>(start) +
                         static_cast<double>(i) * (static_cast<double>(second) - start));
        }
      } else {
        const double w = edges[1] - edges[0];
        const double start = edges.back() + w;
        const double stop = static_cast<double>(xmax) + w;
        const double n = std::ceil((stop - start) / w);
        const double second = start + w;
        for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
          more.push_back(start + static_cast<double>(i) * (second - start));
        }
      }
      edges.insert(edges.end(), more.begin(), more.end());
      edges_f64 = true;
    }
    auto r = EdgesHistRef(x, edges, false);
    dropped += r.out_of_range;
    std::vector<int64_t> h = r.counts;
    for (size_t k = 0; k < hist.size(); ++k) h[std::min(k, h.size() - 1)] += hist[k];
    hist = h;
    cur_bins = static_cast<int64_t>(edges.size()) - 1;
  }
};

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_HISTOGRAM_REF_H_
