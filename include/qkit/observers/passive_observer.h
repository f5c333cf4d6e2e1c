// Passive observer: holds quantization parameters set by the user instead of observing data
// (MegEngine PassiveObserver, SPEC 3.3; Horizon FixedScaleObserver). Contract: docs/observers.md.
#ifndef QKIT_OBSERVERS_PASSIVE_OBSERVER_H_
#define QKIT_OBSERVERS_PASSIVE_OBSERVER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qkit/context.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

struct PassiveObserverOptions {
  // The spec the parameters are validated against (integer range, scale mode, layout).
  QuantSpec spec;
  void Validate(const char* caller) const;  // spec.Validate
};

// Plain data. Empty vectors until SetQParams; then one entry per slot.
struct PassiveObserverState {
  std::vector<float> scale;       // as spec.scale_mode reads it (step, or multiplier)
  std::vector<float> zero_point;  // code of real 0, a float (integral unless set otherwise)
  std::vector<float> orig_scale;  // the scales of the first SetQParams (MegEngine orig_scale)
};

// Not thread-safe. A call that throws leaves the state unchanged.
class PassiveObserver {
 public:
  static constexpr const char* kKind = "qkit.PassiveObserver";
  static constexpr uint32_t kStateVersion = 1;

  explicit PassiveObserver(const PassiveObserverOptions& options = {});
  // From existing buffers; validated like SetQParams (InvalidArgument).
  PassiveObserver(const PassiveObserverOptions& options, const PassiveObserverState& state);

  const PassiveObserverOptions& options() const { return options_; }
  const PassiveObserverState& state() const { return state_; }
  int64_t num_slots() const { return static_cast<int64_t>(state_.scale.size()); }
  bool has_qparams() const { return !state_.scale.empty(); }

  // Sets `count` >= 1 (scale, zero_point) pairs after qkit::ValidateQParams(options.spec)
  // (scale finite and > 0 (>= 0 for kMultiplier), zero point finite inside [qmin, qmax]).
  // `zero_point` may be null: 0 everywhere. Once set, the slot count is fixed (a different
  // count throws InvalidArgument). The first call also records orig_scale.
  void SetQParams(const float* scale, const float* zero_point, int64_t count);
  // Replaces the scales only (MegEngine's scale setter), same checks; needs SetQParams first
  // (FailedPrecondition).
  void SetScale(const float* scale, int64_t count);

  // The identity on data: validates x (floating dtype, layout, slot count once set) and
  // changes nothing. Cost: no read of x.
  void Observe(const TensorView& x, const Context& ctx) const;

  // Copies the stored parameters (num_slots() each) after validating them against `spec`
  // (which may differ from options.spec only in fields the check ignores); `rule` is unused
  // (a passive observer chooses nothing). FailedPrecondition before SetQParams.
  void ComputeQParams(const QuantSpec& spec, const QParamsRule& rule, float* scale,
                      float* zero_point) const;

  void Reset();  // forget the parameters

  std::vector<uint8_t> Save() const;
  static PassiveObserver Load(const uint8_t* data, size_t size);
  std::string ToJson() const;
  static PassiveObserver FromJson(std::string_view json);

 private:
  PassiveObserverOptions options_;
  PassiveObserverState state_;
};

}  // namespace qkit

#endif  // QKIT_OBSERVERS_PASSIVE_OBSERVER_H_
