// Range searches over histograms: L2 (MegEngine), entropy / MSE / percentile (NVIDIA), against
// the plain references of tests/reference/calib_ref.h and the worked examples of SPEC.md §10.7.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qkit/calib/entropy.h"
#include "qkit/calib/l2_search.h"
#include "qkit/calib/mse.h"
#include "qkit/calib/percentile.h"
#include "qkit/error.h"
#include "reference/calib_ref.h"
#include "util/seeded_rng.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::MakeRng;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Histogram shapes: a bell with outliers, a one-sided decay (|x| data), sparse spikes, uniform.
std::vector<int64_t> MakeHist(std::mt19937_64& rng, int64_t bins, int shape, int64_t scale) {
  std::vector<int64_t> h(static_cast<size_t>(bins), 0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double mu = bins * (0.3 + 0.4 * u(rng)), sigma = bins * (0.02 + 0.15 * u(rng));
  for (int64_t k = 0; k < bins; ++k) {
    double v = 0;
    switch (shape) {
      case 0:
        v = std::exp(-0.5 * std::pow((k - mu) / sigma, 2));
        break;
      case 1:
        v = std::exp(-static_cast<double>(k) / (sigma + 1));
        break;
      case 2:
        v = u(rng) < 0.03 ? u(rng) : 0.0;
        break;
      default:
        v = 0.5 + 0.5 * u(rng);
        break;
    }
    h[static_cast<size_t>(k)] = static_cast<int64_t>(std::floor(v * scale * (0.9 + 0.2 * u(rng))));
  }
  if (shape != 2) {  // a few far outliers
    for (int t = 0; t < 3; ++t) h[static_cast<size_t>(bins - 1 - t * (bins / 7))] += 1 + t;
  }
  return h;
}

// ---- L2 -------------------------------------------------------------------------------------

TEST(L2SearchTest, QuantErrorIsBitIdenticalToTheReference) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t bins = trial < 20 ? 2048 : 1 + static_cast<int64_t>(rng() % 300);
    const auto h = MakeHist(rng, bins, trial % 4, 1000);
    const double bw = (trial % 3 == 0 ? 3.7 : 0.0123) / static_cast<double>(bins);
    std::uniform_int_distribution<int64_t> pick(0, bins - 1);
    int64_t a = pick(rng), b = pick(rng);
    if (a > b) std::swap(a, b);
    for (int64_t dst : {int64_t{256}, int64_t{255}, int64_t{16}, int64_t{1}}) {
      const double want = ref::L2QuantErrorRef(h, bw, a, b, dst);
      const double got = L2QuantError(h.data(), bins, bw, a, b, dst);
      ASSERT_EQ(std::memcmp(&want, &got, sizeof(double)), 0)
          << "bins=" << bins << " a=" << a << " b=" << b << " dst=" << dst << " want " << want
          << " got " << got;
    }
  }
}

TEST(L2SearchTest, SearchMatchesThePlainLoop) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  struct Range {
    float lo, hi;
  };
  const Range ranges[] = {{-3.0f, 4.5f}, {0.0f, 1.0f}, {-0.001f, 0.002f}, {-200.0f, 7.0f}};
  for (int trial = 0; trial < 24; ++trial) {
    const int64_t bins = trial < 8 ? 2048 : trial < 16 ? 64 : 1 + static_cast<int64_t>(rng() % 100);
    const auto h = MakeHist(rng, bins, trial % 4, trial % 2 ? 50 : 100000);
    const Range r = ranges[trial % 4];
    for (int64_t dst : {int64_t{256}, int64_t{255}, int64_t{16}}) {
      const auto want = ref::L2SearchRef(h, r.lo, r.hi, dst);
      const auto got = L2NormSearch(h.data(), bins, r.lo, r.hi, dst);
      ASSERT_EQ(got.start_bin, want.start_bin) << "trial " << trial << " dst " << dst;
      ASSERT_EQ(got.end_bin, want.end_bin) << "trial " << trial << " dst " << dst;
      ASSERT_EQ(got.new_min, want.new_min);
      ASSERT_EQ(got.new_max, want.new_max);
      // The float32 state (MegEngine's own histogram) with fractional entries.
      std::vector<float> hf(h.size());
      for (size_t k = 0; k < h.size(); ++k) hf[k] = static_cast<float>(h[k]) * 0.375f;
      const auto want_f = ref::L2SearchRef(hf, r.lo, r.hi, dst);
      const auto got_f = L2NormSearch(hf.data(), bins, r.lo, r.hi, dst);
      ASSERT_EQ(got_f.start_bin, want_f.start_bin) << "float trial " << trial;
      ASSERT_EQ(got_f.end_bin, want_f.end_bin) << "float trial " << trial;
      ASSERT_EQ(got_f.new_min, want_f.new_min);
      ASSERT_EQ(got_f.new_max, want_f.new_max);
    }
  }
}

TEST(L2SearchTest, DegenerateHistograms) {
  // Empty histogram: nothing moves (every step is a `continue`), the full range is kept and no
  // error is ever evaluated.
  std::vector<int64_t> zeros(2048, 0);
  auto r = L2NormSearch(zeros.data(), 2048, -1.0f, 1.0f, 256);
  EXPECT_EQ(r.start_bin, 0);
  EXPECT_EQ(r.end_bin, 2047);
  EXPECT_EQ(r.norm, kInf);
  EXPECT_EQ(r.evaluations, 0);
  EXPECT_EQ(r.new_min, -1.0f);
  EXPECT_EQ(r.new_max, 1.0f);
  // Zero-width range (constant data): bin width 0, every error 0; matches the plain loop.
  std::vector<int64_t> one(2048, 0);
  one[0] = 100;
  const auto want = ref::L2SearchRef(one, 2.5f, 2.5f, 256);
  r = L2NormSearch(one.data(), 2048, 2.5f, 2.5f, 256);
  EXPECT_EQ(r.start_bin, want.start_bin);
  EXPECT_EQ(r.end_bin, want.end_bin);
  EXPECT_EQ(r.new_min, 2.5f);
  EXPECT_EQ(r.new_max, 2.5f);
  // A single bin.
  std::vector<int64_t> single = {7};
  r = L2NormSearch(single.data(), 1, 0.0f, 1.0f, 256);
  EXPECT_EQ(r.start_bin, 0);
  EXPECT_EQ(r.end_bin, 0);
  EXPECT_EQ(r.new_max, 1.0f);
  // A spike in the middle: the search narrows to it.
  std::vector<int64_t> spike(2048, 0);
  spike[1000] = 5000;
  spike[0] = 1;
  spike[2047] = 1;
  const auto want_s = ref::L2SearchRef(spike, -1.0f, 1.0f, 256);
  r = L2NormSearch(spike.data(), 2048, -1.0f, 1.0f, 256);
  EXPECT_EQ(r.start_bin, want_s.start_bin);
  EXPECT_EQ(r.end_bin, want_s.end_bin);
  EXPECT_LE(r.start_bin, 1000);
  EXPECT_GE(r.end_bin, 1000);
  EXPECT_LT(r.end_bin - r.start_bin, 2047);
}

TEST(L2SearchTest, BadArgumentsAreRejected) {
  std::vector<int64_t> h = {1, 2, 3};
  EXPECT_THROW(L2NormSearch(h.data(), 0, 0.0f, 1.0f, 256), InvalidArgument);
  EXPECT_THROW(L2NormSearch(h.data(), 3, 0.0f, 1.0f, 0), InvalidArgument);
  EXPECT_THROW(L2NormSearch(h.data(), 3, 1.0f, 0.0f, 256), InvalidArgument);
  EXPECT_THROW(L2NormSearch(h.data(), 3, 0.0f, INFINITY, 256), InvalidArgument);
  h[1] = -1;
  EXPECT_THROW(L2NormSearch(h.data(), 3, 0.0f, 1.0f, 256), InvalidArgument);
  std::vector<float> hf = {1.0f, NAN};
  EXPECT_THROW(L2NormSearch(hf.data(), 2, 0.0f, 1.0f, 256), InvalidArgument);
}

// ---- entropy --------------------------------------------------------------------------------

TEST(EntropySearchTest, SpecWorkedExample) {
  // SPEC.md §10.7: hist below, bin width 0.25, num_bits 3 (4 target bins), start_bin 4,
  // stride 1: KL for i = 4..16 is 0.1810, 0.1407, 0.1006, 0.0783, 0.0418, 0.0280, 0.02095,
  // 0.02048, inf, 0.0392, inf, inf, 0.0427, so amax = edges[11] = 2.75.
  const std::vector<int64_t> hist = {40, 25, 18, 12, 9, 7, 5, 4, 3, 2, 1, 0, 1, 0, 0, 1};
  EntropySearchOptions o;
  o.num_bits = 3;
  o.start_bin = 4;
  const auto r = EntropySearch(hist.data(), 16, o);
  EXPECT_EQ(r.edge_index, 11);
  EXPECT_EQ(0.25 * r.edge_index, 2.75);
  const double want[] = {0.1810,  0.1407, 0.1006, 0.0783, 0.0418, 0.0280, 0.02095,
                         0.02048, kInf,   0.0392, kInf,   kInf,   0.0427};
  ASSERT_EQ(r.divergences.size(), 13u);
  for (size_t k = 0; k < 13; ++k) {
    if (std::isinf(want[k])) {
      EXPECT_EQ(r.divergences[k], kInf) << k;
    } else {
      EXPECT_NEAR(r.divergences[k], want[k], 0.5e-4) << k;  // the SPEC prints 3-4 digits
    }
  }
}

TEST(EntropySearchTest, MatchesThePlainAlgorithm) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (int trial = 0; trial < 16; ++trial) {
    const int64_t bins = trial < 4 ? 512 : 16 + static_cast<int64_t>(rng() % 200);
    const auto h = MakeHist(rng, bins, trial % 4, trial % 2 ? 30 : 200000);
    EntropySearchOptions o;
    o.num_bits = 2 + trial % 7;
    o.is_unsigned = trial % 3 == 0;
    o.stride = 1 + trial % 3;
    o.start_bin = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(bins / 2));
    const auto want = ref::EntropyRef(h, o.num_bits, o.is_unsigned, o.stride, o.start_bin);
    const auto got = EntropySearch(h.data(), bins, o);
    ASSERT_EQ(got.edge_index, want.edge_index) << "trial " << trial;
    ASSERT_EQ(got.divergences.size(), want.divergences.size());
    for (size_t k = 0; k < want.divergences.size(); ++k) {
      const double w = want.divergences[k], g = got.divergences[k];
      if (std::isnan(w) || std::isinf(w)) {
        ASSERT_TRUE((std::isnan(w) && std::isnan(g)) || w == g) << k << ": " << w << " vs " << g;
      } else {
        // The fast evaluation regroups sums of up to `bins` terms of size <= ln(total):
        // |error| <~ bins * eps * ln(total) ~ 1e-12; 1e-9 leaves a wide margin.
        ASSERT_NEAR(g, w, 1e-9) << "trial " << trial << " candidate " << k;
      }
    }
    // The chosen candidate was re-evaluated with the plain formula: bit-identical.
    const size_t chosen = static_cast<size_t>((got.edge_index - o.start_bin) / o.stride);
    if (std::isfinite(want.divergences[chosen])) {
      EXPECT_EQ(got.divergences[chosen], want.divergences[chosen]);
    }
  }
}

TEST(EntropySearchTest, TiesGoToTheLastCandidate) {
  // With 128 target levels and at most 16 source bins every bin is its own bucket, so q == p
  // wherever nothing is folded: all candidates past the last non-empty bin (11) have KL
  // exactly 0 and the LAST one (i = 16) wins; a first-argmin rule would pick i = 12.
  const std::vector<int64_t> hist = {9, 9, 7, 5, 4, 3, 3, 2, 2, 1, 1, 1, 0, 0, 0, 0};
  EntropySearchOptions o;
  o.num_bits = 8;
  o.start_bin = 4;
  const auto r = EntropySearch(hist.data(), 16, o);
  EXPECT_EQ(r.edge_index, 16);
  for (int64_t i = 12; i <= 16; ++i) EXPECT_EQ(r.divergences[static_cast<size_t>(i - 4)], 0.0) << i;
  EXPECT_EQ(ref::EntropyRef(hist, 8, false, 1, 4).edge_index, 16);
}

TEST(EntropySearchTest, InfiniteAndNanCandidates) {
  // bins[i-1] == 0 with a non-empty tail gives +inf; an all-empty prefix gives NaN (sum q = 0),
  // and a NaN is chosen like np.argmin on the reversed list: the last NaN candidate.
  const std::vector<int64_t> hist = {0, 0, 0, 0, 5, 0, 3, 0};
  EntropySearchOptions o;
  o.num_bits = 2;
  o.start_bin = 1;
  const auto r = EntropySearch(hist.data(), 8, o);
  ASSERT_EQ(r.divergences.size(), 8u);
  for (int k = 0; k < 4; ++k) EXPECT_TRUE(std::isnan(r.divergences[k])) << k;
  EXPECT_EQ(r.divergences[5], kInf);  // i = 6: bin 5 empty, tail {3}
  EXPECT_EQ(r.edge_index, 4);         // the last NaN candidate, i = 4
  EXPECT_EQ(ref::EntropyRef(hist, 2, false, 1, 1).edge_index, 4);
  // All candidates +inf: the last one.
  const std::vector<int64_t> alt = {4, 4, 0, 4, 0, 4, 0, 4};
  o.start_bin = 3;
  o.stride = 2;  // i = 3, 5, 7: each ends on an empty bin with a non-empty tail
  const auto r2 = EntropySearch(alt.data(), 8, o);
  EXPECT_EQ(r2.divergences, (std::vector<double>{kInf, kInf, kInf}));
  EXPECT_EQ(r2.edge_index, 7);
}

TEST(EntropySearchTest, BadArgumentsAreRejected) {
  std::vector<int64_t> h = {1, 2, 3, 4};
  EntropySearchOptions o;
  o.start_bin = 1;
  EXPECT_THROW(EntropySearch(h.data(), 1, o), InvalidArgument);
  o.start_bin = 0;
  EXPECT_THROW(EntropySearch(h.data(), 4, o), InvalidArgument);
  o.start_bin = 5;
  EXPECT_THROW(EntropySearch(h.data(), 4, o), InvalidArgument);
  o.start_bin = 1;
  o.stride = 0;
  EXPECT_THROW(EntropySearch(h.data(), 4, o), InvalidArgument);
  o.stride = 1;
  o.num_bits = 0;
  EXPECT_THROW(EntropySearch(h.data(), 4, o), InvalidArgument);
  o.num_bits = 17;
  EXPECT_THROW(EntropySearch(h.data(), 4, o), InvalidArgument);
  o.num_bits = 8;
  h[2] = -1;
  EXPECT_THROW(EntropySearch(h.data(), 4, o), InvalidArgument);
}

// ---- mse ------------------------------------------------------------------------------------

class MseSearchTest : public test::PerTargetTest {};

TEST_P(MseSearchTest, SpecWorkedExample) {
  // SPEC.md §10.7: counts [0,10,5,1,0,0,0,1], edges 0..8, num_bits 3 (narrow [-3, 3]),
  // start_bin 1: mse for amax 1.5..7.5 = 5.625, 3.2847, 2.1563, 1.3125, 0.92014, 0.83681,
  // 1.375, so amax = 6.5.
  const std::vector<int64_t> counts = {0, 10, 5, 1, 0, 0, 0, 1};
  const std::vector<float> edges = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  MseSearchOptions o;
  o.num_bits = 3;
  o.start_bin = 1;
  const auto r = MseSearch(counts.data(), 8, edges.data(), 9, o);
  EXPECT_EQ(r.amax, 6.5f);
  EXPECT_EQ(r.center_index, 6);
  const double want[] = {5.625, 3.2847, 2.1563, 1.3125, 0.92014, 0.83681, 1.375};
  ASSERT_EQ(r.mses.size(), 7u);
  for (size_t k = 0; k < 7; ++k) EXPECT_NEAR(r.mses[k], want[k], 1e-4 * want[k]) << k;
}

TEST_P(MseSearchTest, MatchesTheReference) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t bins = trial < 3 ? 2048 : 8 + static_cast<int64_t>(rng() % 300);
    const auto h = MakeHist(rng, bins, trial % 4, trial % 2 ? 40 : 1000000);
    std::vector<float> edges(static_cast<size_t>(bins + 1));
    const float w = trial % 3 == 0 ? 0.001953125f : 0.0371f;
    for (int64_t k = 0; k <= bins; ++k) edges[k] = w * static_cast<float>(k);
    MseSearchOptions o;
    o.num_bits = 2 + trial % 7;
    o.is_unsigned = trial % 4 == 1;
    o.stride = 1 + trial % 2;
    o.start_bin = static_cast<int64_t>(rng() % static_cast<uint64_t>(bins / 2));
    const auto want = ref::MseRef(h, edges, o.num_bits, o.is_unsigned, o.stride, o.start_bin);
    const auto got = MseSearch(h.data(), bins, edges.data(), bins + 1, o);
    ASSERT_EQ(got.mses.size(), want.mses.size());
    for (size_t k = 0; k < want.mses.size(); ++k) {
      // Same float32 terms; the float64 sums differ only in order (n <= 2048 terms):
      // relative difference <= n * 2^-53 before the final rounding to float32, so the float32
      // means differ by at most one ulp.
      ASSERT_NEAR(got.mses[k], want.mses[k], std::fabs(want.mses[k]) * 1.2e-7)
          << "trial " << trial << " candidate " << k;
    }
    ASSERT_EQ(got.center_index, want.center_index) << "trial " << trial;
    ASSERT_EQ(got.amax, want.amax);
  }
}

TEST_P(MseSearchTest, TiesGoToTheFirstCandidateAndTinyAmaxQuantizesToZero) {
  // Only the center 0 (edges -0.5, 0.5) holds data: every candidate quantizes it to exactly 0,
  // all MSEs are 0 and the FIRST candidate wins.
  const std::vector<int64_t> counts = {100, 0, 0, 0, 0};
  const std::vector<float> edges = {-0.5f, 0.5f, 1.5f, 2.5f, 3.5f, 4.5f};
  MseSearchOptions o;
  o.start_bin = 1;
  const auto r = MseSearch(counts.data(), 5, edges.data(), 6, o);
  EXPECT_EQ(r.mses, (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(r.center_index, 1);
  EXPECT_EQ(r.amax, 1.0f);
  // amax below 2^-24 quantizes everything to 0 (CUDA's strict comparison).
  const std::vector<float> tiny = {0.0f, 0x1p-26f, 0x1p-25f, 1.0f};
  const std::vector<int64_t> c2 = {1, 1, 1};
  o.start_bin = 0;
  const auto r2 = MseSearch(c2.data(), 3, tiny.data(), 4, o);
  const auto want = ref::MseRef(c2, tiny, 8, false, 1, 0);
  ASSERT_EQ(r2.mses.size(), 3u);
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(r2.mses[k], want.mses[k]) << k;
}

QKIT_INSTANTIATE_PER_TARGET(MseSearchTest);

TEST(MseSearchErrorsTest, BadArgumentsAreRejected) {
  const std::vector<int64_t> c = {1, 2, 3};
  const std::vector<float> e = {0, 1, 2, 3};
  MseSearchOptions o;
  o.start_bin = 3;  // no candidate: upstream's argmin of an empty list raises
  EXPECT_THROW(MseSearch(c.data(), 3, e.data(), 4, o), InvalidArgument);
  o.start_bin = 0;
  EXPECT_THROW(MseSearch(c.data(), 3, e.data(), 1, o), InvalidArgument);
  o.num_bits = 1;
  EXPECT_THROW(MseSearch(c.data(), 3, e.data(), 4, o), InvalidArgument);
  o.num_bits = 8;
  o.stride = 0;
  EXPECT_THROW(MseSearch(c.data(), 3, e.data(), 4, o), InvalidArgument);
  o.stride = 1;
  const std::vector<float> bad = {0, NAN, 2, 3};
  EXPECT_THROW(MseSearch(c.data(), 3, bad.data(), 4, o), InvalidArgument);
}

// ---- percentile -----------------------------------------------------------------------------

TEST(PercentileSearchTest, SpecWorkedExample) {
  // SPEC.md §10.7: hist [10,20,30,25,10,5], edges 0..6, cdf [0.1,0.3,0.6,0.85,0.95,1.0]: the
  // 90th percentile gives idx 4 (amax = 4.0, the left edge of its bin), the 99th gives 5.
  const std::vector<int64_t> h = {10, 20, 30, 25, 10, 5};
  EXPECT_EQ(PercentileSearch(h.data(), 6, 90.0), 4);
  EXPECT_EQ(PercentileSearch(h.data(), 6, 99.0), 5);
  EXPECT_EQ(PercentileSearch(h.data(), 6, 0.0), 0);
  EXPECT_EQ(PercentileSearch(h.data(), 6, 100.0), 5);
  // cdf[1] = 0.1 + 0.2 = 0.30000000000000004 in float64: the 30th percentile is reached there.
  EXPECT_EQ(PercentileSearch(h.data(), 6, 30.0), 1);
}

TEST(PercentileSearchTest, MatchesTheReference) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t bins = 1 + static_cast<int64_t>(rng() % 3000);
    auto h = MakeHist(rng, bins, trial % 4, 1000);
    h[0] += 1;  // non-empty
    for (double p : {0.0, 1e-9, 50.0, 99.0, 99.99, 99.9999, 100.0}) {
      EXPECT_EQ(PercentileSearch(h.data(), bins, p), ref::PercentileRef(h, p))
          << "bins " << bins << " p " << p;
    }
  }
}

TEST(PercentileSearchTest, ErrorsAndEdgeCases) {
  const std::vector<int64_t> h = {1, 2, 3};
  EXPECT_THROW(PercentileSearch(h.data(), 3, -0.1), InvalidArgument);
  EXPECT_THROW(PercentileSearch(h.data(), 3, 100.5), InvalidArgument);
  EXPECT_THROW(PercentileSearch(h.data(), 3, NAN), InvalidArgument);
  const std::vector<int64_t> z = {0, 0};
  EXPECT_THROW(PercentileSearch(z.data(), 2, 50.0), FailedPrecondition);
  EXPECT_THROW(PercentileSearch(h.data(), 0, 50.0), InvalidArgument);
}

}  // namespace
}  // namespace qkit
