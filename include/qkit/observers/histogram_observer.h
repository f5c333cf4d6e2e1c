// Histogram observer with the L2 range search: MegEngine's HistogramObserver (a port of an early
// PyTorch HistogramObserver; SPEC.md §3.3), per tensor or per channel, with exact int64 counts.
// Contract: docs/observers.md; formulas: docs/calibration.md §histogram-observer.
#ifndef QKIT_OBSERVERS_HISTOGRAM_OBSERVER_H_
#define QKIT_OBSERVERS_HISTOGRAM_OBSERVER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qkit/context.h"
#include "qkit/observers/range_stats.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

// How a batch that widens the range is combined with the stored histogram.
enum class HistogramCombine : uint8_t {
  // MegEngine's _adjust_min_max / _combine_histograms: float64 scalars (NumPy 1.x), the slack
  // split evenly on both sides, np.histogram binning. (PyTorch 2.x before 2024 puts the slack
  // on the max, computes in float32 tensors, bins with torch.histc and resets on tiny ranges;
  // it is not implemented.)
  kMegEngine,
};

struct HistogramObserverOptions {
  ParamLayout layout;           // per tensor (default) or per channel along `axis`
  int64_t bins = 2048;          // [1, 2^24]
  int64_t upsample_rate = 128;  // [1, 2^16]
  HistogramCombine combine = HistogramCombine::kMegEngine;
  // Target levels of the L2 search: 0 (default) takes qmax - qmin + 1 of the QuantSpec passed to
  // ComputeRange / ComputeQParams (MegEngine: 256 for qint8, 255 for qint8_narrow, 16 for
  // qint4); > 0 fixes it (PyTorch 2.x before 2024 always uses 256).
  int64_t dst_nbins = 0;
  // NaN and ±Inf are left out and counted (nonfinite_count) by default. true: a batch holding
  // any throws InvalidArgument (MegEngine's np.histogram raises on a non-finite range).
  bool error_on_nonfinite = false;

  // InvalidArgument naming `caller`, the option and its value.
  void Validate(const char* caller) const;
};

// Plain data, per slot (the Python module's buffers). Empty before the first non-empty batch;
// afterwards min_val / max_val / num_batches have num_slots() entries and histogram has
// num_slots() * bins (slot-major).
struct HistogramObserverState {
  std::vector<float> min_val;  // range the slot's histogram covers (0 while empty)
  std::vector<float> max_val;
  std::vector<int64_t> histogram;    // exact counts (MegEngine: float32, see below)
  std::vector<int64_t> num_batches;  // batches with >= 1 finite element in the slot; 0 = empty
  int64_t nonfinite_count = 0;       // NaN / ±Inf elements left out, all batches
};

// The update of one slot with a batch whose finite elements span [bmin, bmax]
// (docs/calibration.md §histogram-observer; MegEngine's sideeffect_forward):
//  * first batch: range (bmin, bmax) as float32 scalars, np.histogram binning (HistogramBinning::
//    kNumpy; a zero-width range is binned over [c - 0.5, c + 0.5], the stored range stays [c, c]);
//  * later batches, _adjust_min_max in float64 (NumPy 1.x promotion): w = f64(f32(max - min)) /
//    (bins * upsample_rate); d = ceil(f64(f32(cmax - cmin)) / (bins * w)); e = d * (bins * w) -
//    f64(f32(cmax - cmin)); range [cmin - e/2, cmax + e/2] (the slack split evenly, float64
//    scalars); start = RNE((min - new_min) / w). The batch is binned on that range. If it equals
//    the stored range, counts add; otherwise the old histogram is upsampled (each bin repeated
//    upsample_rate times), placed at `start` in a grid of bins * d cells, and every d cells are
//    summed and divided by upsample_rate.
//  * int64 counts: that division is done on the cumulative sums, new[j] = floor(U_j / r) -
//    floor(U_{j-1} / r) with U the exact cumulative upsampled counts, so each combined bin is
//    within 1 of MegEngine's fractional float64 value and totals are conserved exactly
//    (MegEngine rounds its float64 histogram to float32, exact only up to 2^24 per bin).
//  * stored range f32(new range), saturated at ±FLT_MAX.
// Reference failure modes, given documented results instead:
//  * a zero-width stored range (constant data so far) and a batch that widens it (MegEngine
//    divides by w = 0): the slot restarts on [min(bmin, c), max(bmax, c)] as a first batch,
//    and its old counts (all at the value c) go to the bin c falls in;
//  * the upsampled old histogram overrunning the bins * d grid (start + bins * upsample_rate
//    > bins * d, from rounding; numpy's slice assignment raises): the overrun cells are added
//    to the last cell;
//  * growth so large that bins * d exceeds 2^62: the old histogram goes to the new bin that
//    contains its first cell;
//  * a stored range wider than FLT_MAX (f32(max - min) = inf): w uses the float64 difference.
//
// Not thread-safe: one observer per module. Every mutating call validates first, computes into
// locals and then commits, so a call that throws leaves the state unchanged.
class HistogramObserver {
 public:
  static constexpr const char* kKind = "qkit.HistogramObserver";
  static constexpr uint32_t kStateVersion = 1;

  explicit HistogramObserver(const HistogramObserverOptions& options = {});
  // An observer holding `state` (validated: lengths, counters >= 0, counts >= 0, empty slots
  // holding 0 and no counts, non-empty slots with finite min <= max and a positive total).
  HistogramObserver(const HistogramObserverOptions& options, const HistogramObserverState& state);

  const HistogramObserverOptions& options() const { return options_; }
  const HistogramObserverState& state() const { return state_; }
  int64_t num_slots() const { return static_cast<int64_t>(state_.min_val.size()); }
  int64_t nonfinite_count() const { return state_.nonfinite_count; }
  bool empty() const;

  // Exactly Commit(BatchRange(x), BatchCounts(x, BatchRange(x))). x: float32 / float16 /
  // bfloat16, any strides. Empty x leaves the state unchanged; a non-empty x whose slot count
  // differs from earlier batches' throws InvalidArgument. Deterministic for any
  // ctx.num_threads and SIMD target. Cost: one read of x when the batch lies inside the stored
  // range (it is then binned on the state's own plan, which is the protocol's plan for any such
  // batch), otherwise three (that attempt, the range, the histogram); plus O(bins).
  void Observe(const TensorView& x, const Context& ctx);

  // ---- distributed protocol (docs/observers.md) --------------------------------------------
  // Phase 1: per-slot finite min / max of x (qkit::MinMax, NaN / ±Inf skipped and counted).
  RangeStats BatchRange(const TensorView& x, const Context& ctx) const;
  static RangeStats MergeRange(const RangeStats& a, const RangeStats& b) {
    return ::qkit::MergeRange(a, b);
  }
  // Phase 2: the local x binned on the range every rank derives from its (identical) state and
  // the merged batch range; num_slots * bins int64 counts (slot-major; zeros for slots without
  // data). all_reduce(SUM) them (or MergeCounts).
  std::vector<int64_t> BatchCounts(const TensorView& x, const RangeStats& merged,
                                   const Context& ctx) const;
  static std::vector<int64_t> MergeCounts(const std::vector<int64_t>& a,
                                          const std::vector<int64_t>& b);
  // Phase 3: applies the merged range and counts (the same result on every rank).
  void Commit(const RangeStats& merged, const std::vector<int64_t>& merged_counts);

  // State-level merge; exact only for observers whose non-empty slots cover identical ranges
  // (counts add, counters add; a slot empty on one side takes the other's). Any other pair
  // throws InvalidArgument: histograms over different ranges cannot be merged exactly (the
  // combination re-bins and depends on order); use the protocol instead.
  static HistogramObserver Merge(const HistogramObserver& a, const HistogramObserver& b);

  // Per slot, the L2 search (qkit::L2NormSearch) on the slot's histogram with dst_nbins
  // levels (options.dst_nbins, or spec.QuantMax() - spec.QuantMin() + 1): min_out[p] =
  // new_min, max_out[p] = new_max. FailedPrecondition if a slot is empty. Writes num_slots()
  // floats to each output.
  void ComputeRange(const QuantSpec& spec, float* min_out, float* max_out) const;
  // ComputeRange, then qkit::ChooseQParams per slot (MegEngine's _calculate_qparams is the rule
  // {kHalfRange, widen to zero, eps 1e-5, RHAZ zero point, no clamp}; see docs/qparams.md).
  // spec.layout must have the observer's granularity. Nothing is written when it throws.
  void ComputeQParams(const QuantSpec& spec, const QParamsRule& rule, float* scale,
                      float* zero_point) const;

  void Reset();  // back to the freshly constructed state (options kept)

  // ---- serialization (options included; bit-exact round trips) ------------------------------
  std::vector<uint8_t> Save() const;
  static HistogramObserver Load(const uint8_t* data, size_t size);  // DataLoss on bad input
  std::string ToJson() const;
  static HistogramObserver FromJson(std::string_view json);  // InvalidArgument on bad input

 private:
  RangeStats BatchRangeImpl(const TensorView& x, const Context& ctx, const char* caller) const;
  std::vector<int64_t> BatchCountsImpl(const TensorView& x, const RangeStats& merged,
                                       const Context& ctx, const char* caller) const;
  void CommitImpl(const RangeStats& merged, const std::vector<int64_t>& merged_counts,
                  const char* caller);
  bool ObserveInRange(const TensorView& x, const Context& ctx, const char* caller);

  HistogramObserverOptions options_;
  HistogramObserverState state_;
};

}  // namespace qkit

#endif  // QKIT_OBSERVERS_HISTOGRAM_OBSERVER_H_
