// NVIDIA-style histogram calibrator (see include/qkit/observers/histogram_calibrator.h).
#include "qkit/observers/histogram_calibrator.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <utility>

#include "internal/check.h"
#include "internal/parallel.h"
#include "internal/strided_walk.h"
#include "observers/observer_io.h"
#include "qkit/calib/entropy.h"
#include "qkit/calib/mse.h"
#include "qkit/calib/percentile.h"
#include "qkit/ops/minmax.h"

namespace qkit {
namespace {

using internal::Json;
constexpr float kInfF = std::numeric_limits<float>::infinity();

// ---- per-slot plan ----------------------------------------------------------------------------

enum class CalKind {
  kFirst,    // no histogram yet
  kAddOld,   // bin the batch, then hist[:len(old)] += old
  kRestart,  // zero-width histogram growing: start again; old counts (all zeros) to bin 0
};

struct CalPlan {
  CalKind kind = CalKind::kFirst;
  bool use_edges = false;     // numpy path after the first batch: np.histogram(x, bins=edges)
  HistogramSlot binning;      // otherwise: the range binning of the batch
  std::vector<double> edges;  // the slot's edges afterwards
  bool edges_f64 = false;
  int64_t num_bins = 0;  // the slot's num_bins afterwards
  int64_t new_len = 0;   // bins of the batch's counts (= of the new histogram)
};

std::vector<double> ToDoubles(const std::vector<float>& v) { return {v.begin(), v.end()}; }

CalPlan PlanSlot(const HistogramCalibratorOptions& o, const std::vector<int64_t>& hist,
                 const std::vector<double>& edges, bool edges_f64, int64_t num_bins, float amin,
                 float amax) {
  CalPlan plan;
  const int64_t n = o.num_bins;
  if (o.torch_hist) {
    auto first = [&](CalKind kind) {
      plan.kind = kind;
      std::vector<float> e(static_cast<size_t>(n + 1));
      TorchLinspaceEdges(0.0f, amax, n, e.data());  // all zeros when amax == 0
      plan.edges = ToDoubles(e);
      plan.num_bins = n;
      // histc(x, n, 0, x_max); x_max == 0 takes histc's data range (0, 0) widened to [-1, 1].
      plan.binning = amax > 0.0f ? HistogramSlot{0.0, amax, n} : HistogramSlot{-1.0, 1.0, n};
    };
    if (hist.empty()) {
      first(CalKind::kFirst);
    } else {
      const float last = static_cast<float>(edges.back());
      if (amax > last) {
        const float width = static_cast<float>(edges[1]) - static_cast<float>(edges[0]);
        if (!(width > 0.0f)) {
          first(CalKind::kRestart);
        } else {
          plan.kind = CalKind::kAddOld;
          const float end = amax + width;  // f32 addition
          const double count = std::ceil(static_cast<double>(end) / static_cast<double>(width));
          const float bins_f = std::ceil(amax / width);  // f32 division
          // Growing by bins of the first batch's width: a max |x| far beyond the first range
          // (FLT_MAX after [-3, 3]) would need ~1e39 bins (a crash, or upstream's allocation
          // failure); rejected before anything is written, like `num_bins` itself.
          QKIT_REQUIRE(std::isfinite(bins_f) && std::isfinite(count) &&
                           count <= static_cast<double>(kMaxHistogramBins) + 1.0,
                       InvalidArgument,
                       "qkit::HistogramCalibrator: max |x|=" << amax << " would grow the histogram"
                           << " (bin width " << width << ") to " << count << " bins, more than "
                           << kMaxHistogramBins);
          plan.num_bins = static_cast<int64_t>(bins_f);
          plan.edges.resize(static_cast<size_t>(count));
          for (size_t k = 0; k < plan.edges.size(); ++k) {
            plan.edges[k] = static_cast<float>(static_cast<double>(width) * static_cast<double>(k));
          }
          plan.binning = HistogramSlot{0.0, plan.edges.back(), plan.num_bins};
        }
      } else {
        plan.kind = CalKind::kAddOld;
        plan.edges = edges;
        plan.num_bins = num_bins;
        plan.binning =
            last > 0.0f ? HistogramSlot{0.0, last, num_bins} : HistogramSlot{-1.0, 1.0, num_bins};
      }
    }
    plan.new_len = plan.num_bins;
    return plan;
  }
  // numpy path
  if (hist.empty()) {
    plan.kind = CalKind::kFirst;
    plan.binning = HistogramSlot{amin, amax, n, false};  // np.histogram(x, n): float32 min/max
    std::vector<float> e(static_cast<size_t>(n + 1));
    if (amin == amax) {
      NumpyLinspaceEdges(static_cast<double>(amin) - 0.5, static_cast<double>(amax) + 0.5, n,
                         e.data());
    } else {
      NumpyLinspaceEdges(amin, amax, n, e.data());
    }
    plan.edges = ToDoubles(e);
    plan.edges_f64 = false;
    plan.num_bins = n;
    plan.new_len = n;
    return plan;
  }
  plan.kind = CalKind::kAddOld;
  plan.use_edges = true;
  plan.edges = edges;
  plan.edges_f64 = edges_f64;
  if (static_cast<double>(amax) > edges.back()) {
    // np.arange(edges[-1] + width, max + width, width), NumPy 1.24 (float64 result).
    double start, delta, len;
    if (!edges_f64) {
      const float w = static_cast<float>(edges[1]) - static_cast<float>(edges[0]);
      const float s = static_cast<float>(edges.back()) + w;
      const float stop = amax + w;
      len = std::ceil(static_cast<double>((stop - s) / w));  // float32 scalar arithmetic
      start = s;
      delta = static_cast<double>(s + w) - static_cast<double>(s);
    } else {
      const double w = edges[1] - edges[0];
      start = edges.back() + w;
      const double stop = static_cast<double>(amax) + w;
      len = std::ceil((stop - start) / w);
      delta = (start + w) - start;
    }
    QKIT_REQUIRE(!(len > static_cast<double>(kMaxHistogramBins)), InvalidArgument,
                 "qkit::HistogramCalibrator: max |x|=" << amax << " would grow the histogram by "
                     << len << " bins, more than " << kMaxHistogramBins);
    if (std::isfinite(len) && len > 0) {
      for (int64_t i = 0; i < static_cast<int64_t>(len); ++i) {
        plan.edges.push_back(start + static_cast<double>(i) * delta);
      }
    }
    plan.edges_f64 = true;  // np.hstack with a float64 array (even an empty one)
  }
  plan.num_bins = static_cast<int64_t>(plan.edges.size()) - 1;
  plan.new_len = plan.num_bins;
  return plan;
}

// ---- |x| range reduction for the numpy path ---------------------------------------------------

// Per slot min / max of |x| over finite (and, with skip_zeros, non-zero) elements, with the
// non-finite count: a plain pass (the numpy path is the optional one).
RangeStats AbsRange(const TensorView& x, const ParamLayout& layout, bool skip_zeros,
                    const Context& ctx, const char* caller) {
  const TensorView* views[1] = {&x};
  const internal::Walk walk(views, 1, layout, caller);
  const int64_t n = walk.num_params();
  RangeStats s = RangeStats::Empty(n);
  const int64_t numel = walk.numel();
  if (numel == 0) return s;
  const int64_t chunks = internal::NumChunks(numel, internal::kGrain);
  const int threads = internal::EffectiveThreads(chunks, ctx.num_threads);
  struct Partial {
    std::vector<float> lo, hi;
    int64_t nonfinite = 0;
  };
  std::vector<Partial> parts(static_cast<size_t>(threads));
  for (auto& p : parts) {
    p.lo.assign(static_cast<size_t>(n), kInfF);
    p.hi.assign(static_cast<size_t>(n), -kInfF);
  }
  internal::ParallelFor(chunks, threads, [&](int64_t c, int t) {
    Partial& part = parts[static_cast<size_t>(t)];
    const int64_t begin = c * internal::kGrain, end = std::min(numel, begin + internal::kGrain);
    internal::ForEachF32Block(
        walk, 1, begin, end, [&](const float* const* in, float* const*, const internal::Run& r) {
          for (int64_t j = 0; j < r.count; ++j) {
            const float v = std::fabs(in[0][j]);
            if (!std::isfinite(v)) {
              ++part.nonfinite;
              continue;
            }
            if (skip_zeros && v == 0.0f) continue;
            const size_t p = static_cast<size_t>(r.param_index + (r.param_step ? j : 0));
            part.lo[p] = std::min(part.lo[p], v);
            part.hi[p] = std::max(part.hi[p], v);
          }
        });
  });
  for (const Partial& part : parts) {  // min / max and integer sums: order-independent
    for (size_t p = 0; p < static_cast<size_t>(n); ++p) {
      s.min[p] = std::min(s.min[p], part.lo[p]);
      s.max[p] = std::max(s.max[p], part.hi[p]);
    }
    s.nonfinite += part.nonfinite;
  }
  for (size_t p = 0; p < static_cast<size_t>(n); ++p) {
    if (s.max[p] >= 0.0f) {
      s.observed[p] = 1;
      s.min[p] += 0.0f;  // +0 for a zero
      s.max[p] += 0.0f;
    }
  }
  return s;
}

// One channel of x along `axis` as a view without that dim.
TensorView ChannelSlice(const TensorView& x, int64_t axis, int64_t c) {
  TensorView v;
  v.dtype = x.dtype;
  v.data =
      static_cast<char*>(x.data) + c * x.strides[axis] * static_cast<int64_t>(DTypeSize(x.dtype));
  v.ndim = 0;
  for (int d = 0; d < x.ndim; ++d) {
    if (d == axis) continue;
    v.shape[v.ndim] = x.shape[d];
    v.strides[v.ndim] = x.strides[d];
    ++v.ndim;
  }
  return v;
}

void ValidateState(const HistogramCalibratorState& s, const char* caller) {
  const size_t n = s.hist.size();
  QKIT_REQUIRE(
      s.edges.size() == n && s.edges_f64.size() == n && s.num_bins.size() == n, InvalidArgument,
      caller << ": inconsistent state: " << n << " `hist`, " << s.edges.size() << " `edges`, "
             << s.edges_f64.size() << " `edges_f64`, " << s.num_bins.size() << " `num_bins`");
  QKIT_REQUIRE(s.nonfinite_count >= 0 && s.dropped_count >= 0, InvalidArgument,
               caller << ": negative counters (`nonfinite_count`=" << s.nonfinite_count
                      << ", `dropped_count`=" << s.dropped_count << ")");
  for (size_t p = 0; p < n; ++p) {
    const auto& h = s.hist[p];
    const auto& e = s.edges[p];
    if (h.empty()) {
      QKIT_REQUIRE(e.empty() && s.num_bins[p] == 0 && s.edges_f64[p] == 0, InvalidArgument,
                   caller << ": slot " << p << " collected nothing but holds edges or a bin count");
      continue;
    }
    QKIT_REQUIRE(e.size() >= 2 && s.num_bins[p] >= 1 && s.edges_f64[p] <= 1, InvalidArgument,
                 caller << ": slot " << p << " has " << e.size() << " edges and `num_bins`="
                        << s.num_bins[p] << " (expected >= 2 edges, >= 1 bin)");
    for (size_t k = 0; k < h.size(); ++k) {
      QKIT_REQUIRE(h[k] >= 0, InvalidArgument,
                   caller << ": slot " << p << " `hist[" << k << "]`=" << h[k] << " is negative");
    }
    for (size_t k = 0; k < e.size(); ++k) {
      QKIT_REQUIRE(std::isfinite(e[k]) && (k == 0 || e[k - 1] <= e[k]), InvalidArgument,
                   caller << ": slot " << p << " `edges[" << k << "]`=" << e[k]
                          << " is not finite or breaks the increasing order");
    }
  }
}

double DoubleFromJson(const Json& j, const std::string& path, const char* caller) {
  QKIT_REQUIRE(j.is_number(), InvalidArgument,
               caller << ": JSON field `" << path << "` must be a number");
  return j.get<double>();
}

}  // namespace

CalibMethod ParseCalibMethod(std::string_view name) {
  if (name == "entropy") return CalibMethod::kEntropy;
  if (name == "mse") return CalibMethod::kMse;
  if (name == "percentile") return CalibMethod::kPercentile;
  QKIT_FAIL(InvalidArgument, "qkit::ParseCalibMethod: unknown calibration method `"
                                 << name << "` (expected entropy, mse or percentile)");
}

const char* CalibMethodName(CalibMethod m) {
  switch (m) {
    case CalibMethod::kEntropy:
      return "entropy";
    case CalibMethod::kMse:
      return "mse";
    case CalibMethod::kPercentile:
      return "percentile";
  }
  return "unknown";
}

void HistogramCalibratorOptions::Validate(const char* caller) const {
  QKIT_REQUIRE(layout.granularity == Granularity::kPerTensor ||
                   layout.granularity == Granularity::kPerChannel,
               InvalidArgument,
               caller << ": `layout`=" << layout.ToString()
                      << " is not supported (per tensor or per channel)");
  QKIT_REQUIRE(
      num_bins >= 2 && num_bins <= kMaxHistogramBins, InvalidArgument,
      caller << ": `num_bins`=" << num_bins << " outside [2, " << kMaxHistogramBins << "]");
  QKIT_REQUIRE(num_bits >= 2 && num_bits <= 16, InvalidArgument,
               caller << ": `num_bits`=" << num_bits << " outside [2, 16]");
  QKIT_REQUIRE(torch_binning == HistogramBinning::kTorchHistc ||
                   torch_binning == HistogramBinning::kTorchHistcDivideFirst,
               InvalidArgument,
               caller << ": `torch_binning`=" << static_cast<int>(torch_binning)
                      << " must be kTorchHistc or kTorchHistcDivideFirst");
}

HistogramCalibrator::HistogramCalibrator(const HistogramCalibratorOptions& options)
    : options_(options) {
  options_.Validate("qkit::HistogramCalibrator");
}

HistogramCalibrator::HistogramCalibrator(const HistogramCalibratorOptions& options,
                                         const HistogramCalibratorState& state)
    : options_(options), state_(state) {
  options_.Validate("qkit::HistogramCalibrator");
  ValidateState(state_, "qkit::HistogramCalibrator");
}

bool HistogramCalibrator::empty() const {
  for (const auto& h : state_.hist) {
    if (!h.empty()) return false;
  }
  return true;
}

RangeStats HistogramCalibrator::BatchRangeImpl(const TensorView& x, const Context& ctx,
                                               const char* caller) const {
  QKIT_REQUIRE(IsFloating(x.dtype), InvalidArgument,
               caller << ": `x` has dtype " << DTypeName(x.dtype)
                      << "; calibrators take float32, float16 or bfloat16");
  QKIT_REQUIRE(ctx.num_threads >= 1, InvalidArgument,
               caller << ": `num_threads`=" << ctx.num_threads << " must be >= 1");
  const int64_t n = NumParams(x, options_.layout, caller);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, caller);
  bool need_min = false;
  if (!options_.torch_hist) {
    for (int64_t p = 0; p < n; ++p)
      need_min = need_min || num_slots() == 0 || state_.hist[p].empty();
  }
  RangeStats s;
  if (need_min) {
    s = AbsRange(x, options_.layout, options_.skip_zeros, ctx, caller);
  } else {
    // max|x| from the signed range (exact); min|x| is not needed.
    s = ComputeBatchRange(x, options_.layout, NonFinite::kSkip, ctx, caller);
    for (size_t p = 0; p < s.min.size(); ++p) {
      if (s.observed[p] == 0) continue;
      if (options_.skip_zeros && s.min[p] == 0.0f && s.max[p] == 0.0f) {  // only zeros
        s.min[p] = kInfF;
        s.max[p] = -kInfF;
        s.observed[p] = 0;
        continue;
      }
      s.max[p] = std::max(-s.min[p], s.max[p]) + 0.0f;
      s.min[p] = 0.0f;
    }
  }
  QKIT_REQUIRE(
      !options_.error_on_nonfinite || s.nonfinite == 0, InvalidArgument,
      caller << ": `x` holds " << s.nonfinite << " NaN / Inf values (`error_on_nonfinite` is set)");
  return s;
}

RangeStats HistogramCalibrator::BatchRange(const TensorView& x, const Context& ctx) const {
  return BatchRangeImpl(x, ctx, "qkit::HistogramCalibrator::BatchRange");
}

std::vector<int64_t> HistogramCalibrator::BatchCountsImpl(const TensorView& x,
                                                          const RangeStats& merged,
                                                          const Context& ctx,
                                                          const char* caller) const {
  merged.Validate(caller);
  const int64_t n = NumParams(x, options_.layout, caller);
  QKIT_REQUIRE(merged.num_slots() == n, InvalidArgument,
               caller << ": `merged` has " << merged.num_slots() << " slots, `x` of shape "
                      << x.ShapeString() << " has " << n);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, caller);
  static const std::vector<int64_t> kNoHist;
  static const std::vector<double> kNoEdges;
  std::vector<CalPlan> plans(static_cast<size_t>(n));
  int64_t total = 0;
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) continue;
    const bool has = num_slots() > 0;
    plans[p] = PlanSlot(options_, has ? state_.hist[p] : kNoHist, has ? state_.edges[p] : kNoEdges,
                        has && state_.edges_f64[p] != 0, has ? state_.num_bins[p] : 0,
                        merged.min[p], merged.max[p]);
    total += plans[p].new_len;
  }
  std::vector<int64_t> out(static_cast<size_t>(total + n), 0);
  if (x.numel() == 0) return out;
  // Range-binned slots in one kernel call (dummy one-bin slots elsewhere, results ignored).
  std::vector<HistogramSlot> slots(static_cast<size_t>(n), HistogramSlot{0.0, 1.0, 1, false});
  std::vector<int64_t> offset(static_cast<size_t>(n), 0);
  int64_t kernel_total = 0;
  bool any_range = false;
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] > 0 && !plans[p].use_edges) {
      slots[p] = plans[p].binning;
      any_range = true;
    }
    offset[p] = kernel_total;
    kernel_total += slots[p].nbins;
  }
  std::vector<int64_t> kc;
  std::vector<HistogramSkipped> skipped(static_cast<size_t>(n));
  if (any_range) {
    kc.assign(static_cast<size_t>(kernel_total), 0);
    HistogramOptions ho;
    ho.binning = options_.torch_hist ? options_.torch_binning : HistogramBinning::kNumpy;
    ho.abs_input = true;
    ho.skip_zeros = options_.skip_zeros;
    Histogram(x, options_.layout, slots.data(), ho, kc.data(), skipped.data(), ctx);
  }
  const int64_t axis = internal::NormalizeLayoutAxis(x, options_.layout, caller);
  int64_t pos = 0;
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) continue;
    const CalPlan& plan = plans[p];
    int64_t dropped;
    if (plan.use_edges) {
      const TensorView xs = axis < 0 ? x : ChannelSlice(x, axis, p);
      HistogramSkipped sk;
      HistogramWithEdges(xs, plan.edges.data(), static_cast<int64_t>(plan.edges.size()), true,
                         options_.skip_zeros, out.data() + pos, &sk, ctx);
      dropped = sk.out_of_range;
    } else {
      std::copy(kc.begin() + offset[p], kc.begin() + offset[p] + plan.new_len, out.begin() + pos);
      dropped = skipped[p].out_of_range;
    }
    out[static_cast<size_t>(total + p)] = dropped;
    pos += plan.new_len;
  }
  return out;
}

std::vector<int64_t> HistogramCalibrator::BatchCounts(const TensorView& x, const RangeStats& merged,
                                                      const Context& ctx) const {
  return BatchCountsImpl(x, merged, ctx, "qkit::HistogramCalibrator::BatchCounts");
}

std::vector<int64_t> HistogramCalibrator::MergeCounts(const std::vector<int64_t>& a,
                                                      const std::vector<int64_t>& b) {
  QKIT_REQUIRE(a.size() == b.size(), InvalidArgument,
               "qkit::HistogramCalibrator::MergeCounts: sizes differ (" << a.size() << " vs "
                                                                        << b.size() << ")");
  std::vector<int64_t> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

void HistogramCalibrator::Observe(const TensorView& x, const Context& ctx) {
  constexpr const char* kCaller = "qkit::HistogramCalibrator::Observe";
  if (ObserveInRange(x, ctx, kCaller)) return;
  const RangeStats range = BatchRangeImpl(x, ctx, kCaller);
  CommitImpl(range, BatchCountsImpl(x, range, ctx, kCaller), kCaller);
}

// One-pass collect on the torch path for a batch whose |x| stays within every slot's last edge:
// the plan is then histc(|x|, num_bins, 0, edges[-1]) whatever the batch max (PlanSlot's
// no-growth branch), so binning on it and finding nothing out of range gives exactly
// BatchCounts' counts; they are committed as Commit would (hist += counts). Otherwise nothing
// is committed and the caller runs the protocol.
bool HistogramCalibrator::ObserveInRange(const TensorView& x, const Context& ctx,
                                         const char* caller) {
  const int64_t n = num_slots();
  if (!options_.torch_hist || n == 0 || x.numel() == 0 || !IsFloating(x.dtype) ||
      ctx.num_threads < 1) {
    return false;
  }
  if (NumParams(x, options_.layout, caller) != n) return false;
  std::vector<HistogramSlot> slots(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    if (state_.hist[p].empty() || !(state_.edges[p].back() > 0.0)) return false;
    slots[p] = HistogramSlot{0.0, state_.edges[p].back(), state_.num_bins[p]};
  }
  int64_t total = 0;
  std::vector<int64_t> offset(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    offset[p] = total;
    total += slots[p].nbins;
  }
  std::vector<int64_t> counts(static_cast<size_t>(total), 0);
  std::vector<HistogramSkipped> skipped(static_cast<size_t>(n));
  HistogramOptions ho;
  ho.binning = options_.torch_binning;
  ho.abs_input = true;
  ho.skip_zeros = options_.skip_zeros;
  Histogram(x, options_.layout, slots.data(), ho, counts.data(), skipped.data(), ctx);
  int64_t nonfinite = 0;
  for (const auto& sk : skipped) {
    if (sk.out_of_range != 0) return false;
    nonfinite += sk.nonfinite;
  }
  QKIT_REQUIRE(
      !options_.error_on_nonfinite || nonfinite == 0, InvalidArgument,
      caller << ": `x` holds " << nonfinite << " NaN / Inf values (`error_on_nonfinite` is set)");
  for (int64_t p = 0; p < n; ++p) {
    auto& h = state_.hist[p];
    const int64_t* c = counts.data() + offset[p];
    for (size_t k = 0; k < h.size(); ++k) h[k] += c[k];
  }
  state_.nonfinite_count += nonfinite;
  return true;
}

void HistogramCalibrator::Commit(const RangeStats& merged,
                                 const std::vector<int64_t>& merged_counts) {
  CommitImpl(merged, merged_counts, "qkit::HistogramCalibrator::Commit");
}

void HistogramCalibrator::CommitImpl(const RangeStats& merged,
                                     const std::vector<int64_t>& merged_counts,
                                     const char* caller) {
  merged.Validate(caller);
  bool any = merged.nonfinite > 0;
  for (int64_t c : merged.observed) any = any || c > 0;
  if (!any) return;
  const int64_t n = merged.num_slots();
  internal::CheckSlotCount(n, num_slots(), options_.layout, nullptr, caller);
  HistogramCalibratorState next = state_;
  if (next.hist.empty()) {
    next.hist.assign(static_cast<size_t>(n), {});
    next.edges.assign(static_cast<size_t>(n), {});
    next.edges_f64.assign(static_cast<size_t>(n), 0);
    next.num_bins.assign(static_cast<size_t>(n), 0);
  }
  std::vector<CalPlan> plans(static_cast<size_t>(n));
  int64_t total = 0;
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) continue;
    QKIT_REQUIRE(merged.max[p] >= 0.0f && merged.min[p] >= 0.0f && std::isfinite(merged.max[p]),
                 InvalidArgument,
                 caller << ": `merged` slot " << p << " range [" << merged.min[p] << ", "
                        << merged.max[p] << "] is not a range of |x|");
    plans[p] = PlanSlot(options_, next.hist[p], next.edges[p], next.edges_f64[p] != 0,
                        next.num_bins[p], merged.min[p], merged.max[p]);
    total += plans[p].new_len;
  }
  QKIT_REQUIRE(static_cast<int64_t>(merged_counts.size()) == total + n, InvalidArgument,
               caller << ": `merged_counts` has " << merged_counts.size() << " entries, expected "
                      << total + n << " (the new bins of every slot with data, then one per slot)");
  for (int64_t c : merged_counts) {
    QKIT_REQUIRE(c >= 0, InvalidArgument, caller << ": `merged_counts` holds " << c);
  }
  int64_t pos = 0;
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) {
      QKIT_REQUIRE(merged_counts[static_cast<size_t>(total + p)] == 0, InvalidArgument,
                   caller << ": dropped count for slot " << p << " without data");
      continue;
    }
    const CalPlan& plan = plans[p];
    std::vector<int64_t> h(merged_counts.begin() + pos, merged_counts.begin() + pos + plan.new_len);
    pos += plan.new_len;
    const std::vector<int64_t>& old = next.hist[p];
    if (plan.kind == CalKind::kAddOld) {
      for (size_t k = 0; k < old.size(); ++k) h[std::min(k, h.size() - 1)] += old[k];
    } else if (plan.kind == CalKind::kRestart) {
      int64_t t = 0;
      for (int64_t c : old) t += c;
      h[0] += t;
    }
    next.hist[p] = std::move(h);
    next.edges[p] = plan.edges;
    next.edges_f64[p] = plan.edges_f64 ? 1 : 0;
    next.num_bins[p] = plan.num_bins;
    next.dropped_count += merged_counts[static_cast<size_t>(total + p)];
  }
  next.nonfinite_count += merged.nonfinite;
  state_ = std::move(next);
}

HistogramCalibrator HistogramCalibrator::Merge(const HistogramCalibrator& a,
                                               const HistogramCalibrator& b) {
  constexpr const char* kCaller = "qkit::HistogramCalibrator::Merge";
  const auto& oa = a.options_;
  const auto& ob = b.options_;
  const bool same_layout =
      oa.layout.granularity == ob.layout.granularity &&
      (oa.layout.granularity == Granularity::kPerTensor || oa.layout.axis == ob.layout.axis);
  QKIT_REQUIRE(same_layout && oa.num_bins == ob.num_bins && oa.num_bits == ob.num_bits &&
                   oa.is_unsigned == ob.is_unsigned && oa.skip_zeros == ob.skip_zeros &&
                   oa.torch_hist == ob.torch_hist && oa.torch_binning == ob.torch_binning &&
                   oa.error_on_nonfinite == ob.error_on_nonfinite,
               InvalidArgument, kCaller << ": options differ");
  if (a.num_slots() == 0 || b.num_slots() == 0) {
    HistogramCalibrator out = a.num_slots() == 0 ? b : a;
    out.state_.nonfinite_count = a.state_.nonfinite_count + b.state_.nonfinite_count;
    out.state_.dropped_count = a.state_.dropped_count + b.state_.dropped_count;
    return out;
  }
  QKIT_REQUIRE(
      a.num_slots() == b.num_slots(), InvalidArgument,
      kCaller << ": slot counts differ (" << a.num_slots() << " vs " << b.num_slots() << ")");
  HistogramCalibrator out = a;
  auto& s = out.state_;
  const auto& t = b.state_;
  for (size_t p = 0; p < s.hist.size(); ++p) {
    if (t.hist[p].empty()) continue;
    if (s.hist[p].empty()) {
      s.hist[p] = t.hist[p];
      s.edges[p] = t.edges[p];
      s.edges_f64[p] = t.edges_f64[p];
      s.num_bins[p] = t.num_bins[p];
      continue;
    }
    QKIT_REQUIRE(s.edges[p] == t.edges[p] && s.num_bins[p] == t.num_bins[p] &&
                     s.hist[p].size() == t.hist[p].size() && s.edges_f64[p] == t.edges_f64[p],
                 InvalidArgument,
                 kCaller << ": slot " << p
                         << " has different bins on the two sides; histograms can only be merged "
                            "exactly over identical edges (use the distributed protocol)");
    for (size_t k = 0; k < s.hist[p].size(); ++k) s.hist[p][k] += t.hist[p][k];
  }
  s.nonfinite_count += t.nonfinite_count;
  s.dropped_count += t.dropped_count;
  return out;
}

std::optional<std::vector<float>> HistogramCalibrator::ComputeAmax(CalibMethod method,
                                                                   int64_t stride,
                                                                   int64_t start_bin,
                                                                   double percentile) const {
  constexpr const char* kCaller = "qkit::HistogramCalibrator::ComputeAmax";
  QKIT_REQUIRE(method == CalibMethod::kEntropy || method == CalibMethod::kMse ||
                   method == CalibMethod::kPercentile,
               InvalidArgument,
               kCaller << ": unknown calibration method " << static_cast<int>(method));
  QKIT_REQUIRE(stride >= 1, InvalidArgument, kCaller << ": `stride`=" << stride << " must be >= 1");
  QKIT_REQUIRE(start_bin >= 0, InvalidArgument,
               kCaller << ": `start_bin`=" << start_bin << " must be >= 0");
  QKIT_REQUIRE(method != CalibMethod::kPercentile || (percentile >= 0.0 && percentile <= 100.0),
               InvalidArgument, kCaller << ": `percentile`=" << percentile << " outside [0, 100]");
  if (empty()) return std::nullopt;
  std::vector<float> out(static_cast<size_t>(num_slots()), std::numeric_limits<float>::quiet_NaN());
  for (int64_t p = 0; p < num_slots(); ++p) {
    const auto& h = state_.hist[p];
    if (h.empty()) continue;
    const auto& e = state_.edges[p];
    // Edge k; past the stored ones (torch.arange one short), the arange formula f32(width * k).
    auto edge_at = [&](int64_t k) -> float {
      if (k < static_cast<int64_t>(e.size())) return static_cast<float>(e[k]);
      const float w = static_cast<float>(e[1]) - static_cast<float>(e[0]);
      return static_cast<float>(static_cast<double>(w) * static_cast<double>(k));
    };
    const int64_t nh = static_cast<int64_t>(h.size());
    switch (method) {
      case CalibMethod::kEntropy: {
        EntropySearchOptions o;
        o.num_bits = options_.num_bits;
        o.is_unsigned = options_.is_unsigned;
        o.stride = stride;
        o.start_bin = start_bin;
        out[p] = edge_at(EntropySearch(h.data(), nh, o).edge_index);
        break;
      }
      case CalibMethod::kMse: {
        MseSearchOptions o;
        o.num_bits = options_.num_bits;
        o.is_unsigned = options_.is_unsigned;
        o.stride = stride;
        o.start_bin = start_bin;
        std::vector<float> ef(e.size());
        for (size_t k = 0; k < e.size(); ++k) ef[k] = static_cast<float>(e[k]);  // .float()
        out[p] = MseSearch(h.data(), nh, ef.data(), static_cast<int64_t>(ef.size()), o).amax;
        break;
      }
      case CalibMethod::kPercentile:
        out[p] = edge_at(PercentileSearch(h.data(), nh, percentile));
        break;
    }
  }
  return out;
}

std::optional<std::vector<float>> HistogramCalibrator::ComputeAmax(std::string_view method,
                                                                   int64_t stride,
                                                                   int64_t start_bin,
                                                                   double percentile) const {
  return ComputeAmax(ParseCalibMethod(method), stride, start_bin, percentile);
}

void HistogramCalibrator::Reset() { state_ = HistogramCalibratorState{}; }

// ---- serialization ----------------------------------------------------------------------------

std::vector<uint8_t> HistogramCalibrator::Save() const {
  BlobWriter w(kKind, kStateVersion);
  internal::WriteLayout(w, options_.layout);
  w.I64(options_.num_bins);
  w.I32(options_.num_bits);
  w.Bool(options_.is_unsigned);
  w.Bool(options_.skip_zeros);
  w.Bool(options_.torch_hist);
  w.U8(static_cast<uint8_t>(options_.torch_binning));
  w.Bool(options_.error_on_nonfinite);
  w.I64(num_slots());
  for (int64_t p = 0; p < num_slots(); ++p) {
    w.I64Vector(state_.hist[p]);
    w.I64(static_cast<int64_t>(state_.edges[p].size()));
    for (double v : state_.edges[p]) w.F64(v);
    w.U8(state_.edges_f64[p]);
    w.I64(state_.num_bins[p]);
  }
  w.I64(state_.nonfinite_count);
  w.I64(state_.dropped_count);
  return w.Finish();
}

HistogramCalibrator HistogramCalibrator::Load(const uint8_t* data, size_t size) {
  constexpr const char* kCaller = "qkit::HistogramCalibrator::Load";
  BlobReader r(data, size, kKind, kStateVersion, kCaller);
  HistogramCalibratorOptions o;
  o.layout = internal::ReadLayout(r, kCaller);
  o.num_bins = r.I64();
  o.num_bits = r.I32();
  o.is_unsigned = r.Bool();
  o.skip_zeros = r.Bool();
  o.torch_hist = r.Bool();
  o.torch_binning =
      static_cast<HistogramBinning>(internal::ReadEnum(r, 3, "torch_binning", kCaller));
  o.error_on_nonfinite = r.Bool();
  HistogramCalibratorState s;
  const int64_t n = r.I64();
  // Every slot takes at least 8 + 8 + 1 + 8 bytes, so a corrupted count fails on the reads.
  QKIT_REQUIRE(n >= 0 && n <= static_cast<int64_t>(size), DataLoss,
               kCaller << ": slot count " << n << " is not plausible");
  for (int64_t p = 0; p < n; ++p) {
    s.hist.push_back(r.I64Vector());
    const int64_t ne = r.I64();
    QKIT_REQUIRE(ne >= 0 && ne <= static_cast<int64_t>(size), DataLoss,
                 kCaller << ": edge count " << ne << " is not plausible");
    std::vector<double> e(static_cast<size_t>(ne));
    for (auto& v : e) v = r.F64();
    s.edges.push_back(std::move(e));
    s.edges_f64.push_back(r.U8());
    s.num_bins.push_back(r.I64());
  }
  s.nonfinite_count = r.I64();
  s.dropped_count = r.I64();
  r.ExpectEnd();
  try {
    return HistogramCalibrator(o, s);
  } catch (const InvalidArgument& e) {
    throw DataLoss(std::string(kCaller) + ": state blob holds an invalid calibrator: " + e.what());
  }
}

std::string HistogramCalibrator::ToJson() const {
  Json j = internal::ObserverJsonHeader(kKind, kStateVersion);
  j["options"] = {{"layout", internal::LayoutToJson(options_.layout)},
                  {"num_bins", options_.num_bins},
                  {"num_bits", options_.num_bits},
                  {"unsigned", options_.is_unsigned},
                  {"skip_zeros", options_.skip_zeros},
                  {"torch_hist", options_.torch_hist},
                  {"torch_binning", options_.torch_binning == HistogramBinning::kTorchHistc
                                        ? "torch_histc"
                                        : "torch_histc_divide_first"},
                  {"error_on_nonfinite", options_.error_on_nonfinite}};
  Json edges = Json::array();
  for (const auto& e : state_.edges) edges.push_back(e);
  j["state"] = {{"hist", state_.hist},
                {"edges", edges},
                {"edges_f64", state_.edges_f64},
                {"num_bins", state_.num_bins},
                {"nonfinite_count", state_.nonfinite_count},
                {"dropped_count", state_.dropped_count}};
  return j.dump();
}

HistogramCalibrator HistogramCalibrator::FromJson(std::string_view json) {
  constexpr const char* kCaller = "qkit::HistogramCalibrator::FromJson";
  using internal::JsonField;
  const Json j = internal::ParseObserverJson(json, kKind, kStateVersion, kCaller);
  const Json& jo = JsonField(j, "options", "", kCaller);
  const Json& js = JsonField(j, "state", "", kCaller);
  HistogramCalibratorOptions o;
  o.layout = internal::LayoutFromJson(JsonField(jo, "layout", "options", kCaller), "options.layout",
                                      kCaller);
  o.num_bins = internal::Int64FromJson(JsonField(jo, "num_bins", "options", kCaller),
                                       "options.num_bins", kCaller);
  const int64_t bits = internal::Int64FromJson(JsonField(jo, "num_bits", "options", kCaller),
                                               "options.num_bits", kCaller);
  QKIT_REQUIRE(bits >= 0 && bits <= 64, InvalidArgument,
               kCaller << ": `options.num_bits`=" << bits << " out of range");
  o.num_bits = static_cast<int>(bits);
  o.is_unsigned = internal::BoolFromJson(JsonField(jo, "unsigned", "options", kCaller),
                                         "options.unsigned", kCaller);
  o.skip_zeros = internal::BoolFromJson(JsonField(jo, "skip_zeros", "options", kCaller),
                                        "options.skip_zeros", kCaller);
  o.torch_hist = internal::BoolFromJson(JsonField(jo, "torch_hist", "options", kCaller),
                                        "options.torch_hist", kCaller);
  const std::string tb = internal::StringFromJson(
      JsonField(jo, "torch_binning", "options", kCaller), "options.torch_binning", kCaller);
  QKIT_REQUIRE(tb == "torch_histc" || tb == "torch_histc_divide_first", InvalidArgument,
               kCaller << ": `options.torch_binning`=\"" << tb
                       << "\" is not torch_histc or torch_histc_divide_first");
  o.torch_binning = tb == "torch_histc" ? HistogramBinning::kTorchHistc
                                        : HistogramBinning::kTorchHistcDivideFirst;
  o.error_on_nonfinite =
      internal::BoolFromJson(JsonField(jo, "error_on_nonfinite", "options", kCaller),
                             "options.error_on_nonfinite", kCaller);
  HistogramCalibratorState s;
  const Json& jh = JsonField(js, "hist", "state", kCaller);
  const Json& je = JsonField(js, "edges", "state", kCaller);
  QKIT_REQUIRE(jh.is_array() && je.is_array(), InvalidArgument,
               kCaller << ": `state.hist` and `state.edges` must be arrays");
  for (size_t p = 0; p < jh.size(); ++p) {
    s.hist.push_back(
        internal::Int64sFromJson(jh[p], "state.hist[" + std::to_string(p) + "]", kCaller));
  }
  for (size_t p = 0; p < je.size(); ++p) {
    const std::string path = "state.edges[" + std::to_string(p) + "]";
    QKIT_REQUIRE(je[p].is_array(), InvalidArgument,
                 kCaller << ": JSON field `" << path << "` must be an array");
    std::vector<double> e;
    for (size_t k = 0; k < je[p].size(); ++k) {
      e.push_back(DoubleFromJson(je[p][k], path + "[" + std::to_string(k) + "]", kCaller));
    }
    s.edges.push_back(std::move(e));
  }
  for (int64_t v : internal::Int64sFromJson(JsonField(js, "edges_f64", "state", kCaller),
                                            "state.edges_f64", kCaller)) {
    QKIT_REQUIRE(v == 0 || v == 1, InvalidArgument,
                 kCaller << ": `state.edges_f64` entries must be 0 or 1; got " << v);
    s.edges_f64.push_back(static_cast<uint8_t>(v));
  }
  s.num_bins = internal::Int64sFromJson(JsonField(js, "num_bins", "state", kCaller),
                                        "state.num_bins", kCaller);
  s.nonfinite_count = internal::Int64FromJson(JsonField(js, "nonfinite_count", "state", kCaller),
                                              "state.nonfinite_count", kCaller);
  s.dropped_count = internal::Int64FromJson(JsonField(js, "dropped_count", "state", kCaller),
                                            "state.dropped_count", kCaller);
  return HistogramCalibrator(o, s);
}

}  // namespace qkit
