// MegEngine-style histogram observer (see include/qkit/observers/histogram_observer.h).
#include "qkit/observers/histogram_observer.h"

#include <cfloat>
#include <cmath>
#include <utility>

#include "internal/check.h"
#include "observers/observer_io.h"
#include "qkit/calib/l2_search.h"
#include "qkit/ops/histogram.h"
#include "qkit/ops/minmax.h"

namespace qkit {
namespace {

using internal::Json;

constexpr int64_t kMaxUpsample = int64_t{1} << 16;

float SatF32(double v) {
  if (v >= static_cast<double>(FLT_MAX)) return FLT_MAX;
  if (v <= -static_cast<double>(FLT_MAX)) return -FLT_MAX;
  return static_cast<float>(v);
}

// A float32 difference, or the float64 one where float32 overflows.
double Span(float lo, float hi) {
  const float s = hi - lo;
  return std::isfinite(s) ? static_cast<double>(s)
                          : static_cast<double>(hi) - static_cast<double>(lo);
}

enum class PlanKind {
  kFirst,    // no histogram yet: bin on the batch range
  kSame,     // the adjusted range equals the stored one: counts add
  kCombine,  // re-bin the old histogram into the wider range, then add
  kRestart,  // zero-width stored range: bin on the combined range as a first batch; the old
             // counts (all at the stored value) go to that value's bin
};

// How one slot is updated by a batch whose finite elements span [bmin, bmax].
struct SlotPlan {
  PlanKind kind = PlanKind::kFirst;
  HistogramSlot binning;  // range and rule for the batch's counts
  float new_min = 0.0f, new_max = 0.0f;
  // kCombine: old bin i covers cells [start + i * up, start + (i + 1) * up) of a grid of
  // bins * down cells. huge: the grid does not fit int64; all old counts go to bin huge_bin.
  int64_t down = 0, start = 0;
  bool huge = false;
  int64_t huge_bin = 0;
};

SlotPlan PlanSlot(const HistogramObserverOptions& o, bool has_hist, float min_val, float max_val,
                  float bmin, float bmax) {
  SlotPlan plan;
  plan.binning.nbins = o.bins;
  if (!has_hist) {
    plan.kind = PlanKind::kFirst;
    plan.binning.lo = bmin;
    plan.binning.hi = bmax;
    plan.binning.numpy_f64_range = false;  // np.float32 scalars x.min(), x.max()
    plan.new_min = bmin;
    plan.new_max = bmax;
    return plan;
  }
  // Python's min/max of two np.float32 values (zeros are +0 here, so the pick is immaterial).
  const float cmin = bmin < min_val ? bmin : min_val;
  const float cmax = bmax > max_val ? bmax : max_val;
  if (min_val == max_val) {
    plan.kind = PlanKind::kRestart;
    plan.binning.lo = cmin;
    plan.binning.hi = cmax;
    plan.binning.numpy_f64_range = false;
    plan.new_min = cmin;
    plan.new_max = cmax;
    return plan;
  }
  // _adjust_min_max under NumPy 1.x promotion: float32 0-d differences, float64 otherwise.
  const double w = Span(min_val, max_val) / static_cast<double>(o.bins * o.upsample_rate);
  const double span = Span(cmin, cmax);
  const double grid = static_cast<double>(o.bins) * w;  // self.bins * hist_bin_width
  const double down = std::ceil(span / grid);
  const double e = down * grid - span;
  const double lo = static_cast<double>(cmin) - e / 2;
  const double hi = static_cast<double>(cmax) + e / 2;
  const double start = std::nearbyint((static_cast<double>(min_val) - lo) / w);  // np.round
  plan.binning.lo = lo;
  plan.binning.hi = hi;
  plan.binning.numpy_f64_range = true;
  plan.new_min = SatF32(lo);
  plan.new_max = SatF32(hi);
  if (lo == static_cast<double>(min_val) && hi == static_cast<double>(max_val)) {
    plan.kind = PlanKind::kSame;
    return plan;
  }
  plan.kind = PlanKind::kCombine;
  constexpr double kLimit = 4611686018427387904.0;  // 2^62
  if (!(down * static_cast<double>(o.bins) < kLimit) || !(start < kLimit)) {
    plan.huge = true;
    const double j = std::floor(start / down);
    plan.huge_bin =
        j >= static_cast<double>(o.bins - 1) ? o.bins - 1 : static_cast<int64_t>(std::max(j, 0.0));
    return plan;
  }
  plan.down = static_cast<int64_t>(down);
  plan.start = static_cast<int64_t>(start);
  return plan;
}

// MegEngine's _combine_histograms with integer rounding: new[j] = floor(U((j + 1) d) / r) -
// floor(U(j d) / r), U(f) = exact count mass of the upsampled grid cells below f; cells past the
// grid's end count in its last cell, so the last bin takes the remainder of the total.
void CombineInto(const int64_t* old, int64_t bins, int64_t up, const SlotPlan& plan, int64_t* out) {
  int64_t total = 0;
  for (int64_t i = 0; i < bins; ++i) total += old[i];
  if (plan.huge) {
    out[plan.huge_bin] += total;
    return;
  }
  std::vector<int64_t> prefix(static_cast<size_t>(bins + 1), 0);
  for (int64_t i = 0; i < bins; ++i) prefix[i + 1] = prefix[i] + old[i];
  using U128 = unsigned __int128;
  auto mass_below = [&](int64_t f) -> U128 {  // U(f), in units of count * cell
    const int64_t t = f - plan.start;
    if (t <= 0) return 0;
    const int64_t k = std::min(t / up, bins);  // whole old bins below f
    U128 m = static_cast<U128>(prefix[static_cast<size_t>(k)]) * static_cast<U128>(up);
    if (k < bins) m += static_cast<U128>(old[k]) * static_cast<U128>(t - k * up);
    return m;
  };
  int64_t prev = 0;  // floor(U(j d) / r)
  for (int64_t j = 0; j + 1 < bins; ++j) {
    const int64_t cur =
        static_cast<int64_t>(mass_below((j + 1) * plan.down) / static_cast<U128>(up));
    out[j] += cur - prev;
    prev = cur;
  }
  out[bins - 1] += total - prev;
}

void ValidateState(const HistogramObserverOptions& o, const HistogramObserverState& s,
                   const char* caller) {
  const size_t n = s.min_val.size();
  QKIT_REQUIRE(s.max_val.size() == n && s.num_batches.size() == n &&
                   s.histogram.size() == n * static_cast<size_t>(o.bins),
               InvalidArgument,
               caller << ": inconsistent state: " << n << " `min_val`, " << s.max_val.size()
                      << " `max_val`, " << s.num_batches.size() << " `num_batches`, "
                      << s.histogram.size() << " `histogram` entries (expected slots * bins = "
                      << n * static_cast<size_t>(o.bins) << ")");
  QKIT_REQUIRE(s.nonfinite_count >= 0, InvalidArgument,
               caller << ": `nonfinite_count`=" << s.nonfinite_count << " is negative");
  for (size_t p = 0; p < n; ++p) {
    QKIT_REQUIRE(s.num_batches[p] >= 0, InvalidArgument,
                 caller << ": `num_batches[" << p << "]`=" << s.num_batches[p] << " is negative");
    int64_t total = 0;
    for (int64_t b = 0; b < o.bins; ++b) {
      const int64_t c = s.histogram[p * static_cast<size_t>(o.bins) + static_cast<size_t>(b)];
      QKIT_REQUIRE(c >= 0 && total <= INT64_MAX - c, InvalidArgument,
                   caller << ": slot " << p << " `histogram[" << b << "]`=" << c
                          << " is negative or overflows the slot total");
      total += c;
    }
    if (s.num_batches[p] == 0) {
      QKIT_REQUIRE(s.min_val[p] == 0.0f && s.max_val[p] == 0.0f && total == 0, InvalidArgument,
                   caller << ": slot " << p << " is empty (`num_batches`=0) but holds range ["
                          << s.min_val[p] << ", " << s.max_val[p] << "] and " << total
                          << " counts (expected 0)");
    } else {
      QKIT_REQUIRE(std::isfinite(s.min_val[p]) && std::isfinite(s.max_val[p]) &&
                       s.min_val[p] <= s.max_val[p] && total > 0,
                   InvalidArgument,
                   caller << ": slot " << p << " has range [" << s.min_val[p] << ", "
                          << s.max_val[p] << "] and " << total
                          << " counts (expected finite min <= max and counts > 0)");
    }
  }
}

bool SameLayout(const ParamLayout& a, const ParamLayout& b) {
  return a.granularity == b.granularity &&
         (a.granularity == Granularity::kPerTensor || a.axis == b.axis);
}

}  // namespace

void HistogramObserverOptions::Validate(const char* caller) const {
  QKIT_REQUIRE(layout.granularity == Granularity::kPerTensor ||
                   layout.granularity == Granularity::kPerChannel,
               InvalidArgument,
               caller << ": `layout`=" << layout.ToString()
                      << " is not supported (per tensor or per channel)");
  QKIT_REQUIRE(bins >= 1 && bins <= kMaxHistogramBins, InvalidArgument,
               caller << ": `bins`=" << bins << " outside [1, " << kMaxHistogramBins << "]");
  QKIT_REQUIRE(
      upsample_rate >= 1 && upsample_rate <= kMaxUpsample, InvalidArgument,
      caller << ": `upsample_rate`=" << upsample_rate << " outside [1, " << kMaxUpsample << "]");
  QKIT_REQUIRE(
      combine == HistogramCombine::kMegEngine, InvalidArgument,
      caller << ": `combine`=" << static_cast<int>(combine) << " is not a HistogramCombine rule");
  QKIT_REQUIRE(dst_nbins >= 0, InvalidArgument,
               caller << ": `dst_nbins`=" << dst_nbins << " must be >= 0 (0: from the QuantSpec)");
}

HistogramObserver::HistogramObserver(const HistogramObserverOptions& options) : options_(options) {
  options_.Validate("qkit::HistogramObserver");
}

HistogramObserver::HistogramObserver(const HistogramObserverOptions& options,
                                     const HistogramObserverState& state)
    : options_(options), state_(state) {
  options_.Validate("qkit::HistogramObserver");
  ValidateState(options_, state_, "qkit::HistogramObserver");
}

bool HistogramObserver::empty() const {
  for (int64_t c : state_.num_batches) {
    if (c > 0) return false;
  }
  return true;
}

RangeStats HistogramObserver::BatchRangeImpl(const TensorView& x, const Context& ctx,
                                             const char* caller) const {
  const int64_t n = NumParams(x, options_.layout, caller);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, caller);
  RangeStats s = ComputeBatchRange(x, options_.layout, NonFinite::kSkip, ctx, caller);
  QKIT_REQUIRE(
      !options_.error_on_nonfinite || s.nonfinite == 0, InvalidArgument,
      caller << ": `x` holds " << s.nonfinite << " NaN / Inf values (`error_on_nonfinite` is set)");
  return s;
}

RangeStats HistogramObserver::BatchRange(const TensorView& x, const Context& ctx) const {
  return BatchRangeImpl(x, ctx, "qkit::HistogramObserver::BatchRange");
}

std::vector<int64_t> HistogramObserver::BatchCountsImpl(const TensorView& x,
                                                        const RangeStats& merged,
                                                        const Context& ctx,
                                                        const char* caller) const {
  merged.Validate(caller);
  const int64_t n = NumParams(x, options_.layout, caller);
  QKIT_REQUIRE(merged.num_slots() == n, InvalidArgument,
               caller << ": `merged` has " << merged.num_slots() << " slots, `x` of shape "
                      << x.ShapeString() << " has " << n);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, caller);
  std::vector<int64_t> counts(static_cast<size_t>(n * options_.bins), 0);
  if (x.numel() == 0) return counts;
  std::vector<HistogramSlot> slots(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) {
      // No finite element anywhere in this slot: every element is skipped; any valid range.
      slots[p] = HistogramSlot{0.0, 1.0, options_.bins, false};
      continue;
    }
    const bool has = num_slots() > 0 && state_.num_batches[p] > 0;
    slots[p] = PlanSlot(options_, has, has ? state_.min_val[p] : 0.0f,
                        has ? state_.max_val[p] : 0.0f, merged.min[p], merged.max[p])
                   .binning;
  }
  HistogramOptions ho;
  ho.binning = HistogramBinning::kNumpy;
  Histogram(x, options_.layout, slots.data(), ho, counts.data(), nullptr, ctx);
  return counts;
}

std::vector<int64_t> HistogramObserver::BatchCounts(const TensorView& x, const RangeStats& merged,
                                                    const Context& ctx) const {
  return BatchCountsImpl(x, merged, ctx, "qkit::HistogramObserver::BatchCounts");
}

std::vector<int64_t> HistogramObserver::MergeCounts(const std::vector<int64_t>& a,
                                                    const std::vector<int64_t>& b) {
  QKIT_REQUIRE(a.size() == b.size(), InvalidArgument,
               "qkit::HistogramObserver::MergeCounts: sizes differ (" << a.size() << " vs "
                                                                      << b.size() << ")");
  std::vector<int64_t> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

void HistogramObserver::Observe(const TensorView& x, const Context& ctx) {
  constexpr const char* kCaller = "qkit::HistogramObserver::Observe";
  if (ObserveInRange(x, ctx, kCaller)) return;
  const RangeStats range = BatchRangeImpl(x, ctx, kCaller);
  CommitImpl(range, BatchCountsImpl(x, range, ctx, kCaller), kCaller);
}

// One-pass Observe for a batch inside the stored range. When every slot's stored range is one
// the adjustment keeps (PlanSlot gives kSame for bmin = min, bmax = max; with the defaults that
// is every non-degenerate range), the plan of any batch with bmin >= min and bmax <= max is that
// same kSame plan: it depends on the state only. So the batch is binned on it directly; if no
// finite element fell outside (out_of_range == 0, i.e. the batch is inside), the counts are
// exactly BatchCounts' and are committed as Commit would (counts add, num_batches + 1 where the
// slot had data). Otherwise nothing is committed and the caller runs the protocol.
bool HistogramObserver::ObserveInRange(const TensorView& x, const Context& ctx,
                                       const char* caller) {
  const int64_t n = num_slots();
  if (n == 0 || x.numel() == 0 || !IsFloating(x.dtype) || ctx.num_threads < 1) return false;
  for (int64_t p = 0; p < n; ++p) {
    if (state_.num_batches[p] == 0) return false;
  }
  if (NumParams(x, options_.layout, caller) != n) return false;
  std::vector<HistogramSlot> slots(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    const SlotPlan plan = PlanSlot(options_, true, state_.min_val[p], state_.max_val[p],
                                   state_.min_val[p], state_.max_val[p]);
    if (plan.kind != PlanKind::kSame) return false;
    slots[p] = plan.binning;
  }
  const int64_t bins = options_.bins;
  std::vector<int64_t> counts(static_cast<size_t>(n * bins), 0);
  std::vector<HistogramSkipped> skipped(static_cast<size_t>(n));
  HistogramOptions ho;
  ho.binning = HistogramBinning::kNumpy;
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
    int64_t* hist = state_.histogram.data() + p * bins;
    const int64_t* c = counts.data() + p * bins;
    bool any = false;
    for (int64_t b = 0; b < bins; ++b) {
      hist[b] += c[b];
      any = any || c[b] != 0;
    }
    if (any) ++state_.num_batches[p];
  }
  state_.nonfinite_count += nonfinite;
  return true;
}

void HistogramObserver::Commit(const RangeStats& merged,
                               const std::vector<int64_t>& merged_counts) {
  CommitImpl(merged, merged_counts, "qkit::HistogramObserver::Commit");
}

void HistogramObserver::CommitImpl(const RangeStats& merged,
                                   const std::vector<int64_t>& merged_counts, const char* caller) {
  merged.Validate(caller);
  const int64_t n = merged.num_slots();
  const int64_t bins = options_.bins;
  QKIT_REQUIRE(static_cast<int64_t>(merged_counts.size()) == n * bins, InvalidArgument,
               caller << ": `merged_counts` has " << merged_counts.size()
                      << " entries, expected slots * bins = " << n * bins);
  bool any = merged.nonfinite > 0;
  for (int64_t c : merged.observed) any = any || c > 0;
  if (!any) return;
  internal::CheckSlotCount(n, num_slots(), options_.layout, nullptr, caller);
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t b = 0; b < bins; ++b) {
      const int64_t c = merged_counts[static_cast<size_t>(p * bins + b)];
      QKIT_REQUIRE(c >= 0 && (merged.observed[p] > 0 || c == 0), InvalidArgument,
                   caller << ": `merged_counts[" << p * bins + b << "]`=" << c
                          << (c < 0 ? " is negative" : " in a slot without data"));
    }
  }

  HistogramObserverState next = state_;
  if (next.min_val.empty()) {
    next.min_val.assign(static_cast<size_t>(n), 0.0f);
    next.max_val.assign(static_cast<size_t>(n), 0.0f);
    next.num_batches.assign(static_cast<size_t>(n), 0);
    next.histogram.assign(static_cast<size_t>(n * bins), 0);
  }
  std::vector<int64_t> fresh(static_cast<size_t>(bins));
  for (int64_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) continue;
    const bool has = next.num_batches[p] > 0;
    const SlotPlan plan =
        PlanSlot(options_, has, next.min_val[p], next.max_val[p], merged.min[p], merged.max[p]);
    int64_t* hist = next.histogram.data() + p * bins;
    const int64_t* batch = merged_counts.data() + p * bins;
    std::copy(batch, batch + bins, fresh.begin());
    switch (plan.kind) {
      case PlanKind::kFirst:
        break;
      case PlanKind::kSame:
        for (int64_t b = 0; b < bins; ++b) fresh[b] += hist[b];
        break;
      case PlanKind::kCombine:
        CombineInto(hist, bins, options_.upsample_rate, plan, fresh.data());
        break;
      case PlanKind::kRestart: {
        // Every old element equals the stored value c: count them in c's bin of the new
        // binning (the same rule, applied to c itself).
        int64_t total = 0;
        for (int64_t b = 0; b < bins; ++b) total += hist[b];
        float c = next.min_val[p];
        std::vector<int64_t> one(static_cast<size_t>(bins), 0);
        HistogramOptions ho;
        ho.binning = HistogramBinning::kNumpy;
        Histogram(TensorView::Vector(&c, 1), ParamLayout::PerTensor(), &plan.binning, ho,
                  one.data(), nullptr, Context{});
        for (int64_t b = 0; b < bins; ++b) fresh[b] += one[b] * total;
        break;
      }
    }
    std::copy(fresh.begin(), fresh.end(), hist);
    next.min_val[p] = plan.new_min;
    next.max_val[p] = plan.new_max;
    ++next.num_batches[p];
  }
  next.nonfinite_count += merged.nonfinite;
  state_ = std::move(next);
}

HistogramObserver HistogramObserver::Merge(const HistogramObserver& a, const HistogramObserver& b) {
  constexpr const char* kCaller = "qkit::HistogramObserver::Merge";
  const auto& oa = a.options_;
  const auto& ob = b.options_;
  QKIT_REQUIRE(SameLayout(oa.layout, ob.layout) && oa.bins == ob.bins &&
                   oa.upsample_rate == ob.upsample_rate && oa.combine == ob.combine &&
                   oa.dst_nbins == ob.dst_nbins && oa.error_on_nonfinite == ob.error_on_nonfinite,
               InvalidArgument, kCaller << ": options differ");
  if (b.num_slots() == 0 || a.num_slots() == 0) {
    HistogramObserver out = b.num_slots() == 0 ? a : b;
    out.state_.nonfinite_count = a.state_.nonfinite_count + b.state_.nonfinite_count;
    return out;
  }
  QKIT_REQUIRE(
      a.num_slots() == b.num_slots(), InvalidArgument,
      kCaller << ": slot counts differ (" << a.num_slots() << " vs " << b.num_slots() << ")");
  HistogramObserver out = a;
  HistogramObserverState& s = out.state_;
  const HistogramObserverState& t = b.state_;
  const int64_t bins = oa.bins;
  for (size_t p = 0; p < s.min_val.size(); ++p) {
    if (t.num_batches[p] == 0) continue;
    int64_t* hs = s.histogram.data() + p * bins;
    const int64_t* ht = t.histogram.data() + p * bins;
    if (s.num_batches[p] == 0) {
      s.min_val[p] = t.min_val[p];
      s.max_val[p] = t.max_val[p];
      std::copy(ht, ht + bins, hs);
    } else {
      QKIT_REQUIRE(s.min_val[p] == t.min_val[p] && s.max_val[p] == t.max_val[p], InvalidArgument,
                   kCaller << ": slot " << p << " covers [" << s.min_val[p] << ", " << s.max_val[p]
                           << "] in `a` but [" << t.min_val[p] << ", " << t.max_val[p]
                           << "] in `b`; histograms over different ranges cannot be merged "
                              "exactly (use the distributed protocol)");
      for (int64_t k = 0; k < bins; ++k) hs[k] += ht[k];
    }
    s.num_batches[p] += t.num_batches[p];
  }
  s.nonfinite_count += t.nonfinite_count;
  return out;
}

void HistogramObserver::ComputeRange(const QuantSpec& spec, float* min_out, float* max_out) const {
  constexpr const char* kCaller = "qkit::HistogramObserver::ComputeRange";
  spec.Validate(kCaller);
  QKIT_REQUIRE(min_out != nullptr && max_out != nullptr, InvalidArgument,
               kCaller << ": null output");
  QKIT_REQUIRE(num_slots() > 0, FailedPrecondition,
               kCaller << ": the observer has not seen any data");
  for (int64_t p = 0; p < num_slots(); ++p) {
    QKIT_REQUIRE(state_.num_batches[p] > 0, FailedPrecondition,
                 kCaller << ": slot " << p << " has not seen any data");
  }
  const int64_t dst =
      options_.dst_nbins > 0 ? options_.dst_nbins : spec.QuantMax() - spec.QuantMin() + 1;
  std::vector<float> lo(static_cast<size_t>(num_slots())), hi(lo.size());
  for (int64_t p = 0; p < num_slots(); ++p) {
    const L2SearchResult r = L2NormSearch(state_.histogram.data() + p * options_.bins,
                                          options_.bins, state_.min_val[p], state_.max_val[p], dst);
    lo[p] = r.new_min;
    hi[p] = r.new_max;
  }
  std::copy(lo.begin(), lo.end(), min_out);
  std::copy(hi.begin(), hi.end(), max_out);
}

void HistogramObserver::ComputeQParams(const QuantSpec& spec, const QParamsRule& rule, float* scale,
                                       float* zero_point) const {
  constexpr const char* kCaller = "qkit::HistogramObserver::ComputeQParams";
  std::vector<float> lo(static_cast<size_t>(num_slots())), hi(lo.size());
  if (num_slots() > 0 && !empty()) {
    bool all = true;
    for (int64_t c : state_.num_batches) all = all && c > 0;
    if (all) ComputeRange(spec, lo.data(), hi.data());
  }
  // Checks the spec's layout, emptiness (FailedPrecondition) and the range, then writes.
  internal::ComputeQParamsFromRanges(options_.layout, lo, hi, state_.num_batches, spec, rule, scale,
                                     zero_point, kCaller);
}

void HistogramObserver::Reset() { state_ = HistogramObserverState{}; }

// ---- serialization ----------------------------------------------------------------------------

std::vector<uint8_t> HistogramObserver::Save() const {
  BlobWriter w(kKind, kStateVersion);
  internal::WriteLayout(w, options_.layout);
  w.I64(options_.bins);
  w.I64(options_.upsample_rate);
  w.U8(static_cast<uint8_t>(options_.combine));
  w.I64(options_.dst_nbins);
  w.Bool(options_.error_on_nonfinite);
  w.F32Vector(state_.min_val);
  w.F32Vector(state_.max_val);
  w.I64Vector(state_.num_batches);
  w.I64Vector(state_.histogram);
  w.I64(state_.nonfinite_count);
  return w.Finish();
}

HistogramObserver HistogramObserver::Load(const uint8_t* data, size_t size) {
  constexpr const char* kCaller = "qkit::HistogramObserver::Load";
  BlobReader r(data, size, kKind, kStateVersion, kCaller);
  HistogramObserverOptions o;
  o.layout = internal::ReadLayout(r, kCaller);
  o.bins = r.I64();
  o.upsample_rate = r.I64();
  o.combine = static_cast<HistogramCombine>(internal::ReadEnum(r, 1, "combine", kCaller));
  o.dst_nbins = r.I64();
  o.error_on_nonfinite = r.Bool();
  HistogramObserverState s;
  s.min_val = r.F32Vector();
  const auto n = static_cast<int64_t>(s.min_val.size());
  s.max_val = r.F32Vector(n);
  s.num_batches = r.I64Vector(n);
  s.histogram = r.I64Vector();
  s.nonfinite_count = r.I64();
  r.ExpectEnd();
  try {
    return HistogramObserver(o, s);
  } catch (const InvalidArgument& e) {
    throw DataLoss(std::string(kCaller) + ": state blob holds an invalid observer: " + e.what());
  }
}

std::string HistogramObserver::ToJson() const {
  Json j = internal::ObserverJsonHeader(kKind, kStateVersion);
  j["options"] = {{"layout", internal::LayoutToJson(options_.layout)},
                  {"bins", options_.bins},
                  {"upsample_rate", options_.upsample_rate},
                  {"combine", "megengine"},
                  {"dst_nbins", options_.dst_nbins},
                  {"error_on_nonfinite", options_.error_on_nonfinite}};
  j["state"] = {{"min_val", internal::FloatsToJson(state_.min_val)},
                {"max_val", internal::FloatsToJson(state_.max_val)},
                {"num_batches", state_.num_batches},
                {"histogram", state_.histogram},
                {"nonfinite_count", state_.nonfinite_count}};
  return j.dump();
}

HistogramObserver HistogramObserver::FromJson(std::string_view json) {
  constexpr const char* kCaller = "qkit::HistogramObserver::FromJson";
  using internal::JsonField;
  const Json j = internal::ParseObserverJson(json, kKind, kStateVersion, kCaller);
  const Json& jo = JsonField(j, "options", "", kCaller);
  const Json& js = JsonField(j, "state", "", kCaller);
  HistogramObserverOptions o;
  o.layout = internal::LayoutFromJson(JsonField(jo, "layout", "options", kCaller), "options.layout",
                                      kCaller);
  o.bins =
      internal::Int64FromJson(JsonField(jo, "bins", "options", kCaller), "options.bins", kCaller);
  o.upsample_rate = internal::Int64FromJson(JsonField(jo, "upsample_rate", "options", kCaller),
                                            "options.upsample_rate", kCaller);
  const std::string combine = internal::StringFromJson(JsonField(jo, "combine", "options", kCaller),
                                                       "options.combine", kCaller);
  QKIT_REQUIRE(combine == "megengine", InvalidArgument,
               kCaller << ": `options.combine`=\"" << combine << "\" is not \"megengine\"");
  o.dst_nbins = internal::Int64FromJson(JsonField(jo, "dst_nbins", "options", kCaller),
                                        "options.dst_nbins", kCaller);
  o.error_on_nonfinite =
      internal::BoolFromJson(JsonField(jo, "error_on_nonfinite", "options", kCaller),
                             "options.error_on_nonfinite", kCaller);
  HistogramObserverState s;
  s.min_val = internal::FloatsFromJson(JsonField(js, "min_val", "state", kCaller), "state.min_val",
                                       kCaller);
  s.max_val = internal::FloatsFromJson(JsonField(js, "max_val", "state", kCaller), "state.max_val",
                                       kCaller);
  s.num_batches = internal::Int64sFromJson(JsonField(js, "num_batches", "state", kCaller),
                                           "state.num_batches", kCaller);
  s.histogram = internal::Int64sFromJson(JsonField(js, "histogram", "state", kCaller),
                                         "state.histogram", kCaller);
  s.nonfinite_count = internal::Int64FromJson(JsonField(js, "nonfinite_count", "state", kCaller),
                                              "state.nonfinite_count", kCaller);
  return HistogramObserver(o, s);
}

}  // namespace qkit
