#include "qkit/observers/minmax_observer.h"

#include <cmath>
#include <limits>
#include <utility>

#include "internal/check.h"
#include "observers/observer_io.h"

namespace qkit {
namespace {

using internal::Json;

// NaN-propagating min / max: a NaN already in the state or in the batch stays NaN
// (kPropagate); under kSkip neither side is ever NaN.
float MinProp(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b < a ? b : a;
}
float MaxProp(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b > a ? b : a;
}

void ValidateState(const MinMaxObserverState& s, const char* caller) {
  const size_t n = s.min_val.size();
  QKIT_REQUIRE(s.max_val.size() == n && s.num_batches.size() == n, InvalidArgument,
               caller << ": inconsistent state: " << n << " `min_val`, " << s.max_val.size()
                      << " `max_val`, " << s.num_batches.size() << " `num_batches`");
  QKIT_REQUIRE(s.nonfinite_count >= 0, InvalidArgument,
               caller << ": `nonfinite_count`=" << s.nonfinite_count << " is negative");
  for (size_t p = 0; p < n; ++p) {
    QKIT_REQUIRE(s.num_batches[p] >= 0, InvalidArgument,
                 caller << ": `num_batches[" << p << "]`=" << s.num_batches[p] << " is negative");
    if (s.num_batches[p] == 0) {
      QKIT_REQUIRE(s.min_val[p] == 0.0f && s.max_val[p] == 0.0f, InvalidArgument,
                   caller << ": slot " << p << " is empty (`num_batches`=0) but holds ["
                          << s.min_val[p] << ", " << s.max_val[p] << "] (expected 0)");
    } else {
      QKIT_REQUIRE(std::isnan(s.min_val[p]) || std::isnan(s.max_val[p]) ||
                       s.min_val[p] <= s.max_val[p],
                   InvalidArgument,
                   caller << ": slot " << p << " has `min_val`=" << s.min_val[p]
                          << " > `max_val`=" << s.max_val[p]);
    }
  }
}

}  // namespace

void MinMaxObserverOptions::Validate(const char* caller) const {
  QKIT_REQUIRE(static_cast<int>(layout.granularity) <= 2, InvalidArgument,
               caller << ": `layout.granularity`=" << static_cast<int>(layout.granularity)
                      << " is not a Granularity");
  QKIT_REQUIRE(layout.granularity != Granularity::kPerGroup || layout.group_size >= 1,
               InvalidArgument,
               caller << ": `layout.group_size`=" << layout.group_size << " must be >= 1");
  QKIT_REQUIRE(static_cast<int>(nonfinite) <= 2, InvalidArgument,
               caller << ": `nonfinite`=" << static_cast<int>(nonfinite)
                      << " is not a NonFinite policy");
}

MinMaxObserver::MinMaxObserver(const MinMaxObserverOptions& options) : options_(options) {
  options_.Validate("qkit::MinMaxObserver");
}

MinMaxObserver::MinMaxObserver(const MinMaxObserverOptions& options,
                               const MinMaxObserverState& state)
    : options_(options), state_(state) {
  options_.Validate("qkit::MinMaxObserver");
  ValidateState(state_, "qkit::MinMaxObserver");
}

bool MinMaxObserver::empty() const {
  for (int64_t c : state_.num_batches) {
    if (c > 0) return false;
  }
  return true;
}

RangeStats MinMaxObserver::BatchRangeImpl(const TensorView& x, const Context& ctx,
                                          const char* caller) const {
  // The slot count is checked before x is read; an empty x changes nothing and may have any.
  const int64_t n = NumParams(x, options_.layout, caller);
  if (x.numel() > 0) internal::CheckSlotCount(n, num_slots(), options_.layout, &x, caller);
  return ComputeBatchRange(x, options_.layout, options_.nonfinite, ctx, caller);
}

RangeStats MinMaxObserver::BatchRange(const TensorView& x, const Context& ctx) const {
  return BatchRangeImpl(x, ctx, "qkit::MinMaxObserver::BatchRange");
}

void MinMaxObserver::Observe(const TensorView& x, const Context& ctx) {
  constexpr const char* kCaller = "qkit::MinMaxObserver::Observe";
  CommitImpl(BatchRangeImpl(x, ctx, kCaller), kCaller);
}

void MinMaxObserver::Commit(const RangeStats& merged) {
  CommitImpl(merged, "qkit::MinMaxObserver::Commit");
}

void MinMaxObserver::CommitImpl(const RangeStats& merged, const char* caller) {
  merged.Validate(caller);
  bool any = merged.nonfinite > 0;
  for (int64_t c : merged.observed) any = any || c > 0;
  if (!any) return;  // an empty batch leaves the state unchanged, whatever its slot count
  internal::CheckSlotCount(merged.num_slots(), num_slots(), options_.layout, nullptr, caller);

  MinMaxObserverState next = state_;
  const size_t n = merged.min.size();
  if (next.min_val.empty()) {
    next.min_val.assign(n, 0.0f);
    next.max_val.assign(n, 0.0f);
    next.num_batches.assign(n, 0);
  }
  for (size_t p = 0; p < n; ++p) {
    if (merged.observed[p] == 0) continue;
    if (next.num_batches[p] == 0) {
      next.min_val[p] = merged.min[p];
      next.max_val[p] = merged.max[p];
    } else {
      next.min_val[p] = MinProp(next.min_val[p], merged.min[p]);
      next.max_val[p] = MaxProp(next.max_val[p], merged.max[p]);
    }
    ++next.num_batches[p];
  }
  next.nonfinite_count += merged.nonfinite;
  state_ = std::move(next);
}

MinMaxObserver MinMaxObserver::Merge(const MinMaxObserver& a, const MinMaxObserver& b) {
  constexpr const char* kCaller = "qkit::MinMaxObserver::Merge";
  const auto& oa = a.options_;
  const auto& ob = b.options_;
  const bool same_layout =
      oa.layout.granularity == ob.layout.granularity &&
      (oa.layout.granularity == Granularity::kPerTensor || oa.layout.axis == ob.layout.axis) &&
      (oa.layout.granularity != Granularity::kPerGroup ||
       oa.layout.group_size == ob.layout.group_size);
  QKIT_REQUIRE(same_layout, InvalidArgument,
               kCaller << ": layouts differ (" << oa.layout.ToString() << " vs "
                       << ob.layout.ToString() << ")");
  QKIT_REQUIRE(oa.nonfinite == ob.nonfinite, InvalidArgument,
               kCaller << ": `nonfinite` policies differ (" << NonFiniteName(oa.nonfinite)
                       << " vs " << NonFiniteName(ob.nonfinite) << ")");
  if (b.num_slots() == 0) {
    MinMaxObserver out = a;
    out.state_.nonfinite_count += b.state_.nonfinite_count;
    return out;
  }
  if (a.num_slots() == 0) {
    MinMaxObserver out = b;
    out.state_.nonfinite_count += a.state_.nonfinite_count;
    return out;
  }
  QKIT_REQUIRE(a.num_slots() == b.num_slots(), InvalidArgument,
               kCaller << ": slot counts differ (" << a.num_slots() << " vs " << b.num_slots()
                       << ")");
  MinMaxObserver out = a;
  MinMaxObserverState& s = out.state_;
  const MinMaxObserverState& t = b.state_;
  for (size_t p = 0; p < s.min_val.size(); ++p) {
    if (t.num_batches[p] == 0) continue;
    if (s.num_batches[p] == 0) {
      s.min_val[p] = t.min_val[p];
      s.max_val[p] = t.max_val[p];
    } else {
      s.min_val[p] = MinProp(s.min_val[p], t.min_val[p]);
      s.max_val[p] = MaxProp(s.max_val[p], t.max_val[p]);
    }
    s.num_batches[p] += t.num_batches[p];
  }
  s.nonfinite_count += t.nonfinite_count;
  return out;
}

void MinMaxObserver::ComputeQParams(const QuantSpec& spec, const QParamsRule& rule, float* scale,
                                    float* zero_point) const {
  internal::ComputeQParamsFromRanges(options_.layout, state_.min_val, state_.max_val,
                                     state_.num_batches, spec, rule, scale, zero_point,
                                     "qkit::MinMaxObserver::ComputeQParams");
}

void MinMaxObserver::Reset() { state_ = MinMaxObserverState{}; }

std::vector<uint8_t> MinMaxObserver::Save() const {
  BlobWriter w(kKind, kStateVersion);
  internal::WriteLayout(w, options_.layout);
  internal::WriteNonFinite(w, options_.nonfinite);
  w.F32Vector(state_.min_val);
  w.F32Vector(state_.max_val);
  w.I64Vector(state_.num_batches);
  w.I64(state_.nonfinite_count);
  return w.Finish();
}

MinMaxObserver MinMaxObserver::Load(const uint8_t* data, size_t size) {
  constexpr const char* kCaller = "qkit::MinMaxObserver::Load";
  BlobReader r(data, size, kKind, kStateVersion, kCaller);
  MinMaxObserverOptions o;
  o.layout = internal::ReadLayout(r, kCaller);
  o.nonfinite = internal::ReadNonFinite(r, kCaller);
  MinMaxObserverState s;
  s.min_val = r.F32Vector();
  const auto n = static_cast<int64_t>(s.min_val.size());
  s.max_val = r.F32Vector(n);
  s.num_batches = r.I64Vector(n);
  s.nonfinite_count = r.I64();
  r.ExpectEnd();
  try {
    return MinMaxObserver(o, s);
  } catch (const InvalidArgument& e) {
    throw DataLoss(std::string(kCaller) + ": state blob holds an invalid observer: " + e.what());
  }
}

std::string MinMaxObserver::ToJson() const {
  Json j = internal::ObserverJsonHeader(kKind, kStateVersion);
  j["options"] = {{"layout", internal::LayoutToJson(options_.layout)},
                  {"nonfinite", NonFiniteName(options_.nonfinite)}};
  j["state"] = {{"min_val", internal::FloatsToJson(state_.min_val)},
                {"max_val", internal::FloatsToJson(state_.max_val)},
                {"num_batches", state_.num_batches},
                {"nonfinite_count", state_.nonfinite_count}};
  return j.dump();
}

MinMaxObserver MinMaxObserver::FromJson(std::string_view json) {
  constexpr const char* kCaller = "qkit::MinMaxObserver::FromJson";
  using internal::JsonField;
  const Json j = internal::ParseObserverJson(json, kKind, kStateVersion, kCaller);
  const Json& jo = JsonField(j, "options", "", kCaller);
  const Json& js = JsonField(j, "state", "", kCaller);
  MinMaxObserverOptions o;
  o.layout = internal::LayoutFromJson(JsonField(jo, "layout", "options", kCaller),
                                      "options.layout", kCaller);
  o.nonfinite = internal::NonFiniteFromJson(JsonField(jo, "nonfinite", "options", kCaller),
                                            "options.nonfinite", kCaller);
  MinMaxObserverState s;
  s.min_val = internal::FloatsFromJson(JsonField(js, "min_val", "state", kCaller),
                                       "state.min_val", kCaller);
  s.max_val = internal::FloatsFromJson(JsonField(js, "max_val", "state", kCaller),
                                       "state.max_val", kCaller);
  s.num_batches = internal::Int64sFromJson(JsonField(js, "num_batches", "state", kCaller),
                                           "state.num_batches", kCaller);
  s.nonfinite_count = internal::Int64FromJson(JsonField(js, "nonfinite_count", "state", kCaller),
                                              "state.nonfinite_count", kCaller);
  return MinMaxObserver(o, s);
}

}  // namespace qkit
