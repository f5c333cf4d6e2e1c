// Running min / max observer (PyTorch MinMaxObserver / PerChannelMinMaxObserver, MegEngine
// MinMaxObserver, Horizon v1 MinMaxObserver): per tensor, per channel or per group.
// Contract: docs/observers.md.
#ifndef QKIT_OBSERVERS_MINMAX_OBSERVER_H_
#define QKIT_OBSERVERS_MINMAX_OBSERVER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qkit/context.h"
#include "qkit/observers/range_stats.h"
#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

struct MinMaxObserverOptions {
  ParamLayout layout;  // per tensor by default; per channel / per group along `axis`
  // Which elements take part. kSkip (default): NaN and ±Inf are ignored and counted in
  // nonfinite_count(). kSkipNaN: ±Inf take part (MegEngine, whose min/max see Inf).
  // kPropagate: a NaN makes its slot NaN for good (torch.min/max in PyTorch's observer).
  NonFinite nonfinite = NonFinite::kSkip;

  // InvalidArgument naming `caller`, the option and its value (group_size < 1 for per group,
  // an enum value out of range).
  void Validate(const char* caller) const;
};

// Plain data, one entry per parameter slot (the Python module's buffers). Before the first
// batch with a slot count the vectors are empty; afterwards they have num_slots() entries.
struct MinMaxObserverState {
  std::vector<float> min_val;        // running min; 0 where num_batches == 0 (not data)
  std::vector<float> max_val;        // running max; 0 where num_batches == 0 (not data)
  std::vector<int64_t> num_batches;  // batches that had >= 1 participating element in the
                                     // slot; 0 = the slot is empty (never a ±inf sentinel)
  int64_t nonfinite_count = 0;       // elements left out by the NonFinite policy, all batches
};

// Not thread-safe: one observer per module. Every mutating call validates first, computes into
// locals and then commits, so a call that throws leaves the state unchanged.
class MinMaxObserver {
 public:
  static constexpr const char* kKind = "qkit.MinMaxObserver";
  static constexpr uint32_t kStateVersion = 1;

  explicit MinMaxObserver(const MinMaxObserverOptions& options = {});
  // An observer holding `state` (e.g. buffers from a state_dict); validated (InvalidArgument:
  // inconsistent lengths, negative counters, empty slots not holding 0, min > max).
  MinMaxObserver(const MinMaxObserverOptions& options, const MinMaxObserverState& state);

  const MinMaxObserverOptions& options() const { return options_; }
  const MinMaxObserverState& state() const { return state_; }
  int64_t num_slots() const { return static_cast<int64_t>(state_.min_val.size()); }
  int64_t nonfinite_count() const { return state_.nonfinite_count; }
  // True when no slot holds data (never observed, or only empty / all-non-finite batches).
  bool empty() const;

  // min_val[p] = min(min_val[p], min of x's participating elements in slot p), likewise max.
  // Exactly Commit(BatchRange(x, ctx)). x: float32 / float16 / bfloat16, any strides. Empty x
  // leaves the state unchanged (whatever its slot count). A non-empty x whose slot count differs
  // from earlier batches' throws InvalidArgument. NaN / ±Inf: options.nonfinite. Deterministic
  // for any ctx.num_threads and SIMD target. Cost: one read of x, then O(slots).
  void Observe(const TensorView& x, const Context& ctx);

  // ---- distributed protocol (range_stats.h) ---------------------------------------------
  // Phase 1: x's range per slot (does not change the observer). Checks the dtype, the layout
  // and the slot count against the state.
  RangeStats BatchRange(const TensorView& x, const Context& ctx) const;
  static RangeStats MergeRange(const RangeStats& a, const RangeStats& b) {
    return ::qkit::MergeRange(a, b);
  }
  // Phase 3: folds the merged batch range into the state (every rank holds the same result).
  // Stats with no data in any slot and nonfinite == 0 leave the state unchanged; otherwise the
  // slot count must match the state's (InvalidArgument) and `merged` must be consistent
  // (RangeStats::Validate).
  void Commit(const RangeStats& merged);

  // State-level merge, exact: per slot min of mins, max of maxes (NaN propagates), counters
  // added. REQUIRES: equal options and equal slot counts (or one side without slots);
  // InvalidArgument otherwise.
  static MinMaxObserver Merge(const MinMaxObserver& a, const MinMaxObserver& b);

  // (scale, zero_point) per slot from [min_val, max_val] via qkit::ChooseQParams(spec, rule).
  // `scale` and `zero_point` point at num_slots() floats. spec.layout must have this
  // observer's granularity and group size (InvalidArgument). FailedPrecondition if a slot is
  // empty (no data yet); ChooseQParams' InvalidArgument for a non-finite range (kSkipNaN /
  // kPropagate policies). Nothing is written when it throws.
  void ComputeQParams(const QuantSpec& spec, const QParamsRule& rule, float* scale,
                      float* zero_point) const;

  // Back to the freshly constructed state (options kept).
  void Reset();

  // ---- serialization (options included; bit-exact round trips) ------------------------------
  std::vector<uint8_t> Save() const;
  // DataLoss for a truncated, corrupted or foreign blob; never a half-built observer.
  static MinMaxObserver Load(const uint8_t* data, size_t size);
  std::string ToJson() const;
  // InvalidArgument for malformed JSON, a missing or mistyped field, or an inconsistent state.
  static MinMaxObserver FromJson(std::string_view json);

 private:
  RangeStats BatchRangeImpl(const TensorView& x, const Context& ctx, const char* caller) const;
  void CommitImpl(const RangeStats& merged, const char* caller);

  MinMaxObserverOptions options_;
  MinMaxObserverState state_;
};

}  // namespace qkit

#endif  // QKIT_OBSERVERS_MINMAX_OBSERVER_H_
