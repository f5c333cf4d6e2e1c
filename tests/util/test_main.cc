// gtest main for qkit_tests: logs the SIMD targets every per-target test will run on, and the
// random seed (replay with --gtest_random_seed=N or QKIT_TEST_SEED=N).
#include <gtest/gtest.h>

#include <cstdio>

#include "qkit/context.h"
#include "util/seeded_rng.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  std::string names;
  for (const auto& t : qkit::AvailableTargets()) names += " " + t;
  std::printf("qkit_tests: SIMD targets compiled and supported here:%s\n", names.c_str());
  std::printf("qkit_tests: seed %u (replay: QKIT_TEST_SEED=%u)\n", qkit::test::BaseSeed(),
              qkit::test::BaseSeed());
  return RUN_ALL_TESTS();
}
