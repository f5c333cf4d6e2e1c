// Moving-average min / max observer with each reference system's exact update rule
// (SPEC.md 2.3, 3.3, 5.2, 6.5, 7.3, 9.5; worked numbers 10.4). Per tensor, per channel or per
// group. Contract and formulas: docs/observers.md.
//
// Why there is no state-level Merge: a moving average depends on the order and the number of
// the batches it has seen. Two observers that saw different batch sequences hold
//   A = f(...f(f(a0, b1), b2)..., bk)   and   B = f(...f(f(a0, c1), c2)..., cj),
// and no function of (A, B) equals the state after any single sequence of those batches (the
// weights of old batches decay per update, and float32 rounds each step), so "merged EMA
// states" would be a new, ill-defined statistic. Data-parallel training instead merges the
// *batch* statistics before the update: every rank runs BatchRange on its shard, the ranges are
// all-reduced exactly (min of mins, max of maxes; range_stats.h), and every rank Commits the
// same merged range. That is bit-identical to one process that Observe()d the concatenated
// batch, on every rank.
#ifndef QKIT_OBSERVERS_MOVING_AVERAGE_OBSERVER_H_
#define QKIT_OBSERVERS_MOVING_AVERAGE_OBSERVER_H_

#include <cstdint>
#include <optional>
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

// Whose update rule. All arithmetic is float32 in the system's operation order, with m the
// resolved momentum (MovingAverageObserverOptions::Momentum()) and (cur_min, cur_max) the batch
// range of the slot:
enum class MovingAverageVariant : uint8_t {
  // OneFlow MovingAverageMinMaxObserver (SPEC 2.3), m = momentum = 0.95:
  //   v = (v == 0) ? cur : f32(f32(v * m) + f32(cur * f32(1 - m)))
  // per buffer, re-initialising whenever the stored value is exactly 0 (not only on the first
  // call). RunningRange::kAbsMax (symmetric / cambricon): cur = max(|cur_min|, |cur_max|) is
  // averaged into max_val and min_val := max_val. kMinMax (affine): min and max independently.
  kOneFlow,
  // MegEngine ExponentialMovingAverageObserver (SPEC 3.3), m = momentum = 0.9:
  //   v = f32(f32(v * rm) + f32(f32(1 - rm) * cur)), rm = 0 on a slot's first update (a copy),
  //   m afterwards (MegEngine's runtime_momentum).
  kMegEngineEma,
  // PyTorch MovingAverage(PerChannel)MinMaxObserver and Horizon (SPEC 6.5, 7.3),
  // c = averaging_constant = 0.01: the first update copies, then v = f32(v + f32(c * f32(cur - v))).
  kTorch,
  // Intel Distiller FakeLinearQuantization's EMA (SPEC 5.2), d = ema_decay = 0.999, t = the
  // slot's update count including this one:
  //   biased = f32(f32(biased * d) + f32(f32(1 - d) * cur))
  //   v = f32(biased / f32(1 - powf(d, float(t))))       (bias correction, float32 pow)
  // Both biased and corrected values are stored; the corrected one is used for qparams.
  kDistiller,
};

// What the running statistics track.
enum class RunningRange : uint8_t {
  kMinMax,  // min and max independently (every variant; OneFlow "affine")
  kAbsMax,  // OneFlow "symmetric" / "cambricon" only: max(|min|, |max|) into max_val,
            // min_val := max_val (both hold the positive running abs max, as OneFlow's buffers)
};

struct MovingAverageObserverOptions {
  MovingAverageVariant variant = MovingAverageVariant::kTorch;
  // The variant's constant (see MovingAverageVariant: OneFlow/MegEngine momentum = weight of
  // the old value, PyTorch averaging_constant = weight of the new one, Distiller ema_decay =
  // weight of the old one). Unset: the system's default (0.95, 0.9, 0.01, 0.999).
  // Must be in [0, 1] ([0, 1) for kDistiller, whose bias correction divides by 1 - d^t).
  std::optional<float> momentum;
  RunningRange range = RunningRange::kMinMax;
  // Step gate (OneFlow): an update happens only when current_train_step <= this value.
  // Unset: 1 for kOneFlow (OneFlow's default), no step gate for the other variants. Must be
  // > 0 when set (OneFlow's op check).
  std::optional<int64_t> stop_update_after_iters;
  ParamLayout layout;
  NonFinite nonfinite = NonFinite::kSkip;  // as MinMaxObserverOptions::nonfinite

  float Momentum() const;                           // resolved
  std::optional<int64_t> StopUpdateAfterIters() const;  // resolved

  // Each system's defaults. OneFlow: `symmetric` selects kAbsMax (scheme "symmetric" /
  // "cambricon") or kMinMax ("affine").
  static MovingAverageObserverOptions OneFlow(bool symmetric = true);
  static MovingAverageObserverOptions MegEngine();
  static MovingAverageObserverOptions Torch();
  static MovingAverageObserverOptions Distiller();

  // InvalidArgument naming `caller`, the option and its value.
  void Validate(const char* caller) const;
};

// When an update may happen (OneFlow passes both; the others use `training` only, e.g.
// MegEngine and Distiller observe only in training mode). The default is always open.
struct UpdateGate {
  bool training = true;
  int64_t current_train_step = 0;  // compared with stop_update_after_iters when that is set
};

// Plain data, one entry per parameter slot. Before the first batch with a slot count the
// vectors are empty; then they have num_slots() entries, all 0 (OneFlow's and Distiller's
// buffers start at 0; for the other variants a 0 in an empty slot is not data).
struct MovingAverageObserverState {
  std::vector<float> min_val;  // the running min used for qparams (OneFlow moving_min,
                               // MegEngine/PyTorch min_val, Distiller tracked_min)
  std::vector<float> max_val;  // likewise (OneFlow moving_max, ..., Distiller tracked_max)
  std::vector<float> biased_min;  // kDistiller: tracked_min_biased; empty for other variants
  std::vector<float> biased_max;  // kDistiller: tracked_max_biased; empty for other variants
  std::vector<int64_t> num_updates;  // updates applied to the slot; 0 = empty (explicit, never
                                     // a sentinel). Distiller's step t; MegEngine's
                                     // runtime_momentum is 0 exactly when this is 0.
  int64_t nonfinite_count = 0;       // elements left out by the NonFinite policy (gated-out
                                     // batches are not looked at and not counted)
};

// Not thread-safe: one observer per module. A call that throws leaves the state unchanged.
class MovingAverageObserver {
 public:
  static constexpr const char* kKind = "qkit.MovingAverageObserver";
  static constexpr uint32_t kStateVersion = 1;

  explicit MovingAverageObserver(const MovingAverageObserverOptions& options = {});
  // From existing buffers; validated (InvalidArgument).
  MovingAverageObserver(const MovingAverageObserverOptions& options,
                        const MovingAverageObserverState& state);

  const MovingAverageObserverOptions& options() const { return options_; }
  const MovingAverageObserverState& state() const { return state_; }
  int64_t num_slots() const { return static_cast<int64_t>(state_.min_val.size()); }
  int64_t nonfinite_count() const { return state_.nonfinite_count; }
  bool empty() const;  // no slot has been updated

  // Whether `gate` lets an update through: gate.training and (no step gate or
  // gate.current_train_step <= stop_update_after_iters).
  bool GateOpen(const UpdateGate& gate) const;

  // One update per slot with data, exactly Commit(BatchRange(x, ctx), gate). When the gate is
  // closed x is validated but not read, and the state is unchanged. Empty x (whatever its slot
  // count), or a slot without participating elements, leaves that state unchanged (no update,
  // no step). A non-empty x whose slot count differs from earlier batches' throws
  // InvalidArgument. Deterministic for any ctx.num_threads and SIMD target. Cost: one read of
  // x, then O(slots).
  void Observe(const TensorView& x, const Context& ctx, const UpdateGate& gate = {});

  // ---- distributed protocol (range_stats.h) ---------------------------------------------
  RangeStats BatchRange(const TensorView& x, const Context& ctx) const;
  static RangeStats MergeRange(const RangeStats& a, const RangeStats& b) {
    return ::qkit::MergeRange(a, b);
  }
  // Applies one update from the merged batch range (every rank commits the same stats and
  // gate, so every rank holds the same state).
  void Commit(const RangeStats& merged, const UpdateGate& gate = {});

  // (scale, zero_point) per slot from [min_val, max_val] via qkit::ChooseQParams (for kAbsMax
  // both are the abs max, so an affine spec is InvalidArgument). As
  // MinMaxObserver::ComputeQParams.
  void ComputeQParams(const QuantSpec& spec, const QParamsRule& rule, float* scale,
                      float* zero_point) const;

  void Reset();  // OneFlow's reset_running_stats(): back to the constructed state

  std::vector<uint8_t> Save() const;
  static MovingAverageObserver Load(const uint8_t* data, size_t size);
  std::string ToJson() const;
  static MovingAverageObserver FromJson(std::string_view json);

 private:
  RangeStats BatchRangeImpl(const TensorView& x, const Context& ctx, const char* caller) const;
  void CommitImpl(const RangeStats& merged, const UpdateGate& gate, const char* caller);

  MovingAverageObserverOptions options_;
  MovingAverageObserverState state_;
};

const char* MovingAverageVariantName(MovingAverageVariant v);  // "oneflow", "megengine_ema", ...

}  // namespace qkit

#endif  // QKIT_OBSERVERS_MOVING_AVERAGE_OBSERVER_H_
