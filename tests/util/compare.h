// Bit-exact comparison (NaN-aware: any NaN equals any NaN; +0 and -0 differ).
#ifndef QKIT_TESTS_UTIL_COMPARE_H_
#define QKIT_TESTS_UTIL_COMPARE_H_

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace qkit::test {

inline bool SameFloat(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub;
}

// Expects got[i] == want[i] bit for bit for all i < n; reports the first few mismatches with
// index, input (if given), expected and actual values.
inline ::testing::AssertionResult BitwiseEqual(const float* want, const float* got, int64_t n,
                                               const float* input = nullptr) {
  int shown = 0;
  int64_t bad = 0;
  auto res = ::testing::AssertionSuccess();
  std::string msg;
  for (int64_t i = 0; i < n; ++i) {
    if (SameFloat(want[i], got[i])) continue;
    ++bad;
    if (shown++ < 5) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "\n  [%lld] input=%.9g expected=%.9g (0x%08x) got=%.9g",
                    static_cast<long long>(i), input ? input[i] : 0.0f, want[i],
                    [](float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }(want[i]),
                    got[i]);
      msg += buf;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << n << " elements differ:" << msg;
}

}  // namespace qkit::test

#endif  // QKIT_TESTS_UTIL_COMPARE_H_
