// Per-SIMD-target test fixture: TEST_P bodies run once per compiled and supported Highway
// target, with dispatch forced to it (gtest names end in /AVX3, /AVX2, /SSE4, /SSSE3, /SCALAR).
//   class FakeQuantTest : public qkit::test::PerTargetTest {};
//   TEST_P(FakeQuantTest, Foo) { ... }
//   QKIT_INSTANTIATE_PER_TARGET(FakeQuantTest);
#ifndef QKIT_TESTS_UTIL_TARGETS_H_
#define QKIT_TESTS_UTIL_TARGETS_H_

#include <gtest/gtest.h>

#include <string>

#include "qkit/context.h"

namespace qkit::test {

class PerTargetTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { qkit::ForceTarget(GetParam()); }
  void TearDown() override { qkit::ForceTarget(""); }
};

inline std::string TargetParamName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

}  // namespace qkit::test

#define QKIT_INSTANTIATE_PER_TARGET(suite)                                               \
  INSTANTIATE_TEST_SUITE_P(Targets, suite, ::testing::ValuesIn(::qkit::AvailableTargets()), \
                           ::qkit::test::TargetParamName)

#endif  // QKIT_TESTS_UTIL_TARGETS_H_
