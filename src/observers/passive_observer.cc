#include "qkit/observers/passive_observer.h"

#include <utility>

#include "internal/check.h"
#include "observers/observer_io.h"
#include "qkit/ops/minmax.h"

namespace qkit {
namespace {

using internal::Json;

void ValidateState(const PassiveObserverOptions& o, const PassiveObserverState& s,
                   const char* caller) {
  const size_t n = s.scale.size();
  QKIT_REQUIRE(s.zero_point.size() == n && s.orig_scale.size() == n, InvalidArgument,
               caller << ": inconsistent state: " << n << " `scale`, " << s.zero_point.size()
                      << " `zero_point`, " << s.orig_scale.size() << " `orig_scale`");
  if (n == 0) return;
  ValidateQParams(s.scale.data(), s.zero_point.data(), static_cast<int64_t>(n), o.spec, caller);
  // orig_scale only needs to be a valid scale; the zero points were checked above.
  ValidateQParams(s.orig_scale.data(), s.zero_point.data(), static_cast<int64_t>(n), o.spec,
                  caller);
}

}  // namespace

void PassiveObserverOptions::Validate(const char* caller) const {
  spec.Validate(caller);
  // A fake-quantization option: an observer's parameters stay inside the quant range (and the
  // save formats have no field for it).
  QKIT_REQUIRE(!spec.allow_zero_point_outside_range, InvalidArgument,
               caller << ": `spec.allow_zero_point_outside_range`=true is not an observer option");
}

PassiveObserver::PassiveObserver(const PassiveObserverOptions& options) : options_(options) {
  options_.Validate("qkit::PassiveObserver");
}

PassiveObserver::PassiveObserver(const PassiveObserverOptions& options,
                                 const PassiveObserverState& state)
    : options_(options), state_(state) {
  options_.Validate("qkit::PassiveObserver");
  ValidateState(options_, state_, "qkit::PassiveObserver");
}

void PassiveObserver::SetQParams(const float* scale, const float* zero_point, int64_t count) {
  constexpr const char* kCaller = "qkit::PassiveObserver::SetQParams";
  QKIT_REQUIRE(count >= 1, InvalidArgument, kCaller << ": `count`=" << count << " must be >= 1");
  QKIT_REQUIRE(scale != nullptr, InvalidArgument, kCaller << ": null `scale`");
  QKIT_REQUIRE(!has_qparams() || count == num_slots(), InvalidArgument,
               kCaller << ": `count`=" << count << " but the observer holds " << num_slots()
                       << " slots (channel count mismatch)");
  const auto n = static_cast<size_t>(count);
  std::vector<float> s(scale, scale + n);
  std::vector<float> z = zero_point ? std::vector<float>(zero_point, zero_point + n)
                                    : std::vector<float>(n, 0.0f);
  ValidateQParams(s.data(), z.data(), count, options_.spec, kCaller);
  if (state_.orig_scale.empty()) state_.orig_scale = s;
  state_.scale = std::move(s);
  state_.zero_point = std::move(z);
}

void PassiveObserver::SetScale(const float* scale, int64_t count) {
  constexpr const char* kCaller = "qkit::PassiveObserver::SetScale";
  QKIT_REQUIRE(has_qparams(), FailedPrecondition,
               kCaller << ": no parameters yet (call SetQParams first)");
  QKIT_REQUIRE(count == num_slots(), InvalidArgument,
               kCaller << ": `count`=" << count << " but the observer holds " << num_slots()
                       << " slots");
  QKIT_REQUIRE(scale != nullptr, InvalidArgument, kCaller << ": null `scale`");
  std::vector<float> s(scale, scale + count);
  ValidateQParams(s.data(), state_.zero_point.data(), count, options_.spec, kCaller);
  state_.scale = std::move(s);
}

void PassiveObserver::Observe(const TensorView& x, const Context& ctx) const {
  constexpr const char* kCaller = "qkit::PassiveObserver::Observe";
  QKIT_REQUIRE(IsFloating(x.dtype), InvalidArgument,
               kCaller << ": `x` has dtype " << DTypeName(x.dtype)
                       << "; observers take float32, float16 or bfloat16");
  const int64_t n = NumParams(x, options_.spec.layout, kCaller);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.spec.layout, &x, kCaller);
}

void PassiveObserver::ComputeQParams(const QuantSpec& spec, const QParamsRule& rule,
                                     float* scale, float* zero_point) const {
  constexpr const char* kCaller = "qkit::PassiveObserver::ComputeQParams";
  (void)rule;
  QKIT_REQUIRE(has_qparams(), FailedPrecondition,
               kCaller << ": no parameters set (call SetQParams first)");
  QKIT_REQUIRE(scale != nullptr && zero_point != nullptr, InvalidArgument,
               kCaller << ": null `scale` or `zero_point` output");
  spec.Validate(kCaller);
  ValidateQParams(state_.scale.data(), state_.zero_point.data(), num_slots(), spec, kCaller);
  for (size_t p = 0; p < state_.scale.size(); ++p) {
    scale[p] = state_.scale[p];
    zero_point[p] = state_.zero_point[p];
  }
}

void PassiveObserver::Reset() { state_ = PassiveObserverState{}; }

std::vector<uint8_t> PassiveObserver::Save() const {
  BlobWriter w(kKind, kStateVersion);
  internal::WriteSpec(w, options_.spec);
  w.F32Vector(state_.scale);
  w.F32Vector(state_.zero_point);
  w.F32Vector(state_.orig_scale);
  return w.Finish();
}

PassiveObserver PassiveObserver::Load(const uint8_t* data, size_t size) {
  constexpr const char* kCaller = "qkit::PassiveObserver::Load";
  BlobReader r(data, size, kKind, kStateVersion, kCaller);
  PassiveObserverOptions o;
  o.spec = internal::ReadSpec(r, kCaller);
  PassiveObserverState s;
  s.scale = r.F32Vector();
  const auto n = static_cast<int64_t>(s.scale.size());
  s.zero_point = r.F32Vector(n);
  s.orig_scale = r.F32Vector(n);
  r.ExpectEnd();
  try {
    return PassiveObserver(o, s);
  } catch (const InvalidArgument& e) {
    throw DataLoss(std::string(kCaller) + ": state blob holds an invalid observer: " + e.what());
  }
}

std::string PassiveObserver::ToJson() const {
  Json j = internal::ObserverJsonHeader(kKind, kStateVersion);
  j["options"] = {{"spec", internal::SpecToJson(options_.spec)}};
  j["state"] = {{"scale", internal::FloatsToJson(state_.scale)},
                {"zero_point", internal::FloatsToJson(state_.zero_point)},
                {"orig_scale", internal::FloatsToJson(state_.orig_scale)}};
  return j.dump();
}

PassiveObserver PassiveObserver::FromJson(std::string_view json) {
  constexpr const char* kCaller = "qkit::PassiveObserver::FromJson";
  using internal::JsonField;
  const Json j = internal::ParseObserverJson(json, kKind, kStateVersion, kCaller);
  const Json& jo = JsonField(j, "options", "", kCaller);
  const Json& js = JsonField(j, "state", "", kCaller);
  PassiveObserverOptions o;
  o.spec = internal::SpecFromJson(JsonField(jo, "spec", "options", kCaller), "options.spec",
                                  kCaller);
  PassiveObserverState s;
  s.scale = internal::FloatsFromJson(JsonField(js, "scale", "state", kCaller), "state.scale",
                                     kCaller);
  s.zero_point = internal::FloatsFromJson(JsonField(js, "zero_point", "state", kCaller),
                                          "state.zero_point", kCaller);
  s.orig_scale = internal::FloatsFromJson(JsonField(js, "orig_scale", "state", kCaller),
                                          "state.orig_scale", kCaller);
  return PassiveObserver(o, s);
}

}  // namespace qkit
