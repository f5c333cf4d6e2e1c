#include "qkit/observers/range_stats.h"

#include <cmath>
#include <limits>

#include "internal/check.h"

namespace qkit {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// NaN-propagating min / max (std::min / std::max return their first argument on NaN, which
// would make the merge order-dependent).
float MinProp(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b < a ? b : a;
}
float MaxProp(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b > a ? b : a;
}

}  // namespace

const char* NonFiniteName(NonFinite policy) {
  switch (policy) {
    case NonFinite::kSkip: return "skip";
    case NonFinite::kSkipNaN: return "skip_nan";
    case NonFinite::kPropagate: return "propagate";
  }
  return "unknown";
}

RangeStats RangeStats::Empty(int64_t n) {
  QKIT_REQUIRE(n >= 0, InvalidArgument, "qkit::RangeStats::Empty: `n`=" << n << " is negative");
  RangeStats s;
  s.min.assign(static_cast<size_t>(n), kInf);
  s.max.assign(static_cast<size_t>(n), -kInf);
  s.observed.assign(static_cast<size_t>(n), 0);
  return s;
}

std::vector<float> RangeStats::FlattenFloats() const {
  const size_t n = min.size();
  std::vector<float> out(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = min[i];
    out[n + i] = -max[i];  // negation is exact, so MIN over -max is -(MAX over max)
  }
  return out;
}

std::vector<int64_t> RangeStats::FlattenCounts() const {
  const size_t n = min.size();
  std::vector<int64_t> out(2 * n + 1);
  for (size_t i = 0; i < n; ++i) {
    out[i] = observed[i];
    out[n + i] = (std::isnan(min[i]) || std::isnan(max[i])) ? 1 : 0;
  }
  out[2 * n] = nonfinite;
  return out;
}

RangeStats RangeStats::Unflatten(const float* floats, int64_t num_floats, const int64_t* counts,
                                 int64_t num_counts) {
  constexpr const char* kCaller = "qkit::RangeStats::Unflatten";
  QKIT_REQUIRE(num_floats >= 0 && num_floats % 2 == 0, InvalidArgument,
               kCaller << ": `num_floats`=" << num_floats << " must be 2 * slots");
  const int64_t n = num_floats / 2;
  QKIT_REQUIRE(num_counts == 2 * n + 1, InvalidArgument,
               kCaller << ": `num_counts`=" << num_counts << " must be 2 * slots + 1 = "
                       << 2 * n + 1 << " for `num_floats`=" << num_floats);
  QKIT_REQUIRE((floats != nullptr || n == 0) && counts != nullptr, InvalidArgument,
               kCaller << ": null buffer");
  RangeStats s;
  s.min.resize(static_cast<size_t>(n));
  s.max.resize(static_cast<size_t>(n));
  s.observed.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const bool nan = counts[n + i] > 0;
    // + 0.0f turns a -0 into +0 (round-to-nearest), leaving every other value unchanged.
    s.min[i] = nan ? std::numeric_limits<float>::quiet_NaN() : floats[i] + 0.0f;
    s.max[i] = nan ? std::numeric_limits<float>::quiet_NaN() : -floats[n + i] + 0.0f;
    s.observed[i] = counts[i];
  }
  s.nonfinite = counts[2 * n];
  s.Validate(kCaller);
  return s;
}

void RangeStats::Validate(const char* caller) const {
  const size_t n = min.size();
  QKIT_REQUIRE(max.size() == n && observed.size() == n, InvalidArgument,
               caller << ": inconsistent RangeStats (" << n << " min, " << max.size() << " max, "
                      << observed.size() << " observed)");
  QKIT_REQUIRE(nonfinite >= 0, InvalidArgument,
               caller << ": RangeStats `nonfinite`=" << nonfinite << " is negative");
  for (size_t i = 0; i < n; ++i) {
    QKIT_REQUIRE(observed[i] >= 0, InvalidArgument,
                 caller << ": RangeStats `observed[" << i << "]`=" << observed[i]
                        << " is negative");
    if (observed[i] == 0) {
      QKIT_REQUIRE(min[i] == kInf && max[i] == -kInf, InvalidArgument,
                   caller << ": RangeStats slot " << i << " is empty but holds [" << min[i]
                          << ", " << max[i] << "] (expected [inf, -inf])");
    } else {
      QKIT_REQUIRE(std::isnan(min[i]) || std::isnan(max[i]) || min[i] <= max[i],
                   InvalidArgument,
                   caller << ": RangeStats slot " << i << " has `min`=" << min[i]
                          << " > `max`=" << max[i]);
    }
  }
}

RangeStats MergeRange(const RangeStats& a, const RangeStats& b) {
  QKIT_REQUIRE(a.num_slots() == b.num_slots(), InvalidArgument,
               "qkit::MergeRange: slot counts differ (" << a.num_slots() << " vs "
                                                        << b.num_slots() << ")");
  a.Validate("qkit::MergeRange (a)");
  b.Validate("qkit::MergeRange (b)");
  const size_t n = a.min.size();
  RangeStats s;
  s.min.resize(n);
  s.max.resize(n);
  s.observed.resize(n);
  for (size_t i = 0; i < n; ++i) {
    s.min[i] = MinProp(a.min[i], b.min[i]);
    s.max[i] = MaxProp(a.max[i], b.max[i]);
    s.observed[i] = a.observed[i] + b.observed[i];
  }
  s.nonfinite = a.nonfinite + b.nonfinite;
  return s;
}

RangeStats ComputeBatchRange(const TensorView& x, const ParamLayout& layout, NonFinite policy,
                             const Context& ctx, const char* caller) {
  QKIT_REQUIRE(IsFloating(x.dtype), InvalidArgument,
               caller << ": `x` has dtype " << DTypeName(x.dtype)
                      << "; observers take float32, float16 or bfloat16");
  QKIT_REQUIRE(ctx.num_threads >= 1, InvalidArgument,
               caller << ": `num_threads`=" << ctx.num_threads << " must be >= 1");
  const int64_t n = NumParams(x, layout, caller);
  RangeStats s = RangeStats::Empty(n);
  if (x.numel() == 0) return s;
  int64_t skipped = 0;
  MinMax(x, layout, policy, s.min.data(), s.max.data(), &skipped, ctx);
  for (size_t i = 0; i < s.min.size(); ++i) {
    // MinMax leaves a slot without participating elements at its seeds (+inf, -inf); any
    // participating element makes min <= max (or NaN under kPropagate).
    const bool data = std::isnan(s.min[i]) || std::isnan(s.max[i]) || s.min[i] <= s.max[i];
    s.observed[i] = data ? 1 : 0;
  }
  s.nonfinite = skipped;
  return s;
}

}  // namespace qkit
