// One replayable RNG per test: the seed comes from QKIT_TEST_SEED, else --gtest_random_seed,
// else a fixed default; failures print it (QKIT_SEED_TRACE).
#ifndef QKIT_TESTS_UTIL_SEEDED_RNG_H_
#define QKIT_TESTS_UTIL_SEEDED_RNG_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

namespace qkit::test {

inline uint32_t BaseSeed() {
  if (const char* env = std::getenv("QKIT_TEST_SEED")) {
    return static_cast<uint32_t>(std::strtoul(env, nullptr, 10));
  }
  const int g = testing::GTEST_FLAG(random_seed);
  return g != 0 ? static_cast<uint32_t>(g) : 20261122u;
}

// Seeded from the base seed and the current test's full name, so tests are independent.
inline std::mt19937_64 MakeRng() {
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
  uint64_t h = 1469598103934665603ull;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return std::mt19937_64(h ^ BaseSeed());
}

}  // namespace qkit::test

// Put at the top of a randomized test: a failure then prints how to replay it.
#define QKIT_SEED_TRACE()                                                                   \
  SCOPED_TRACE(testing::Message() << "replay with QKIT_TEST_SEED=" << ::qkit::test::BaseSeed())

#endif  // QKIT_TESTS_UTIL_SEEDED_RNG_H_
