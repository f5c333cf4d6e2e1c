// Histogram op: counts bit-exact against the scalar references (tests/reference/histogram_ref.h)
// for every binning rule, SIMD target, thread count, layout and edge value.
#include "qkit/ops/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qkit/error.h"
#include "reference/histogram_ref.h"
#include "util/seeded_rng.h"
#include "util/special_values.h"
#include "util/sweeps.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::MakeRng;

struct Case {
  HistogramBinning binning;
  bool f64_range;
  const char* name;
};
const Case kCases[] = {{HistogramBinning::kTorchHistc, false, "histc"},
                       {HistogramBinning::kTorchHistcDivideFirst, false, "histc_div_first"},
                       {HistogramBinning::kNumpy, false, "numpy_f32_range"},
                       {HistogramBinning::kNumpy, true, "numpy_f64_range"}};

ref::HistRefResult Reference(const Case& c, const std::vector<float>& x, double lo, double hi,
                             int64_t nbins, bool abs_input, bool skip_zeros = false) {
  if (c.binning == HistogramBinning::kNumpy) {
    return ref::NumpyHistRef(x, lo, hi, nbins, c.f64_range, abs_input, skip_zeros);
  }
  return ref::HistcRef(x, lo, hi, nbins, c.binning == HistogramBinning::kTorchHistcDivideFirst,
                       abs_input, skip_zeros);
}

struct Got {
  std::vector<int64_t> counts;
  HistogramSkipped skipped;
};

Got RunPerTensor(const Case& c, const TensorView& x, double lo, double hi, int64_t nbins,
                 bool abs_input, int threads, bool skip_zeros = false) {
  Got g;
  g.counts.assign(static_cast<size_t>(nbins), 0);
  HistogramSlot slot{lo, hi, nbins, c.f64_range};
  HistogramOptions o;
  o.binning = c.binning;
  o.abs_input = abs_input;
  o.skip_zeros = skip_zeros;
  Histogram(x, ParamLayout::PerTensor(), &slot, o, g.counts.data(), &g.skipped, Context{threads});
  return g;
}

::testing::AssertionResult SameCounts(const ref::HistRefResult& want, const Got& got) {
  if (want.counts != got.counts) {
    for (size_t i = 0; i < want.counts.size(); ++i) {
      if (want.counts[i] != got.counts[i]) {
        return ::testing::AssertionFailure()
               << "bin " << i << ": expected " << want.counts[i] << " got " << got.counts[i];
      }
    }
  }
  if (want.nonfinite != got.skipped.nonfinite || want.out_of_range != got.skipped.out_of_range ||
      want.zeros != got.skipped.zeros) {
    return ::testing::AssertionFailure()
           << "skipped: expected nonfinite " << want.nonfinite << " out_of_range "
           << want.out_of_range << " zeros " << want.zeros << ", got " << got.skipped.nonfinite
           << " / " << got.skipped.out_of_range << " / " << got.skipped.zeros;
  }
  return ::testing::AssertionSuccess();
}

// Data spread over [lo - 10%, hi + 10%], with values exactly on and one ulp around the bin
// edges of every rule, and the special values.
std::vector<float> MakeData(std::mt19937_64& rng, int64_t n, float lo, float hi, int64_t nbins,
                            bool with_specials) {
  std::vector<float> x(static_cast<size_t>(n));
  const float pad = (hi - lo) * 0.1f;
  std::uniform_real_distribution<float> u(lo - pad, hi + pad);
  for (auto& v : x) v = u(rng);
  if (n == 0) return x;
  std::vector<float> np_edges(static_cast<size_t>(nbins + 1));
  NumpyLinspaceEdges(lo, hi, nbins, np_edges.data());
  std::uniform_int_distribution<int64_t> pick_edge(0, nbins);
  std::uniform_int_distribution<size_t> pick_pos(0, x.size() - 1);
  for (int64_t k = 0; k < std::min<int64_t>(n / 4, 64); ++k) {
    const float e = np_edges[static_cast<size_t>(pick_edge(rng))];
    const int which = static_cast<int>(k % 3);
    x[pick_pos(rng)] = which == 0 ? e : which == 1 ? test::NextUp(e) : test::NextDown(e);
  }
  x[pick_pos(rng)] = lo;
  x[pick_pos(rng)] = hi;
  if (with_specials) test::InjectSpecials(x, rng, 0.01);
  return x;
}

class HistogramTest : public test::PerTargetTest {};

TEST_P(HistogramTest, PerTensorMatchesReferenceForEveryRuleAndSize) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  const auto sizes = test::Counts(rng, /*include_large=*/false);
  std::uniform_int_distribution<int64_t> nb_dist(1, 300);
  for (const Case& c : kCases) {
    for (int64_t n : sizes) {
      const int64_t nbins = n % 5 == 0 ? 2048 : nb_dist(rng);
      const float lo = -1.5f + static_cast<float>(n % 7), hi = lo + 3.25f;
      auto x = MakeData(rng, n, lo, hi, nbins, n % 2 == 0);
      if (n > 3) {
        x[1] = 0.0f;
        x[2] = -0.0f;
      }
      for (bool abs_input : {false, true}) {
        for (bool skip_zeros : {false, true}) {
          const auto want = Reference(c, x, lo, hi, nbins, abs_input, skip_zeros);
          const auto got = RunPerTensor(c, TensorView::Vector(const_cast<float*>(x.data()), n), lo,
                                        hi, nbins, abs_input, 1, skip_zeros);
          ASSERT_TRUE(SameCounts(want, got)) << c.name << " n=" << n << " nbins=" << nbins
                                             << " abs=" << abs_input << " skip0=" << skip_zeros;
        }
      }
    }
  }
}

TEST_P(HistogramTest, OneAndTwoThreadsGiveTheReferenceCounts) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (const Case& c : kCases) {
    for (int64_t n : {(int64_t{1} << 16) + 7, 3 * (int64_t{1} << 16) + 13}) {
      const auto x = MakeData(rng, n, -2.0f, 5.0f, 2048, true);
      const auto want = Reference(c, x, -2.0, 5.0, 2048, false);
      for (int threads : {1, 2, 3}) {
        const auto got = RunPerTensor(c, TensorView::Vector(const_cast<float*>(x.data()), n), -2.0,
                                      5.0, 2048, false, threads);
        ASSERT_TRUE(SameCounts(want, got)) << c.name << " n=" << n << " threads=" << threads;
      }
    }
  }
}

TEST_P(HistogramTest, RangesFromTinyToHugeAndUnaligned) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  struct R {
    double lo, hi;
  };
  // A denormal-width range, ranges whose float32 formula overflows (float64 fallback), a range
  // with float64 ends that round to the same float32 value, and ordinary ones.
  const R ranges[] = {{0.0, 1e-44},       {-FLT_MAX, FLT_MAX}, {-1e38, 3e38},       {0.0, 3e35},
                      {1.0, 1.0 + 1e-12}, {-7.25, 1e-3},       {1e-3, 1e-3 + 1e-6}, {-0.0, 0.5}};
  for (const Case& c : kCases) {
    for (const R& r : ranges) {
      if (c.binning != HistogramBinning::kNumpy &&
          !(static_cast<float>(r.lo) < static_cast<float>(r.hi))) {
        continue;  // the torch rules require a non-empty float32 range
      }
      for (int64_t nbins : {1, 3, 2048}) {
        std::vector<float> x(1001);
        std::uniform_real_distribution<double> u(r.lo, r.hi);
        for (auto& v : x) v = static_cast<float>(u(rng));
        x[0] = static_cast<float>(r.lo);
        x[1] = static_cast<float>(r.hi);
        test::InjectSpecials(x, rng, 0.05);
        // Unaligned start: skip the first element.
        std::vector<float> xs(x.begin() + 1, x.end());
        const auto want = Reference(c, xs, r.lo, r.hi, nbins, false);
        const auto got =
            RunPerTensor(c, TensorView::Vector(x.data() + 1, 1000), r.lo, r.hi, nbins, false, 2);
        ASSERT_TRUE(SameCounts(want, got))
            << c.name << " range [" << r.lo << ", " << r.hi << "] nbins=" << nbins;
      }
    }
  }
}

TEST_P(HistogramTest, NumpyValuesAroundEveryEdgeAtManyDistances) {
  // The SIMD kNumpy path skips the edge correction for lanes whose t is far enough from an
  // integer (histogram.cc: NumpySafeMargin). Values 0..48 ulps on both sides of edges probe
  // that margin from inside to well outside, for ranges near and far from 0 and both range
  // scalar types.
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  struct R {
    double lo, hi;
    int64_t nbins;
  };
  const R ranges[] = {{-3.3, 7.1, 2048}, {1000.0, 1000.5, 64},       {0.0, 1.0, 100000},
                      {-1e-3, 2e-3, 7},  {12345.678, 12399.0, 2048}, {-2.0, -1.0, 3}};
  for (const Case& c : {kCases[2], kCases[3]}) {
    for (const R& r : ranges) {
      std::vector<float> e(static_cast<size_t>(r.nbins + 1));
      NumpyLinspaceEdges(r.lo, r.hi, r.nbins, e.data());
      std::uniform_int_distribution<int64_t> pick(0, r.nbins);
      std::vector<float> x;
      for (int s = 0; s < 60; ++s) {
        const float edge = e[static_cast<size_t>(pick(rng))];
        float up = edge, down = edge;
        for (int k = 0; k <= 48; ++k) {
          x.push_back(up);
          x.push_back(down);
          up = test::NextUp(up);
          down = test::NextDown(down);
        }
      }
      const auto want = Reference(c, x, r.lo, r.hi, r.nbins, false);
      const auto got = RunPerTensor(c, TensorView::Vector(x.data(), static_cast<int64_t>(x.size())),
                                    r.lo, r.hi, r.nbins, false, 1);
      ASSERT_TRUE(SameCounts(want, got))
          << c.name << " [" << r.lo << ", " << r.hi << "] n " << r.nbins;
    }
  }
}

TEST_P(HistogramTest, NumpyWidensAnEmptyRangeByAHalf) {
  // np.histogram([3, 3, 3], 4, range=(3, 3)) bins over [2.5, 3.5]: the values sit in bin 2
  // (edges 2.5, 2.75, 3.0, 3.25, 3.5; 3.0 is the left edge of bin 2).
  std::vector<float> x = {3.0f, 3.0f, 3.0f, 2.6f, 3.5f, 4.0f};
  const Case c = kCases[2];
  const auto got = RunPerTensor(c, TensorView::Vector(x.data(), 6), 3.0, 3.0, 4, false, 1);
  EXPECT_EQ(got.counts, (std::vector<int64_t>{1, 0, 3, 1}));
  EXPECT_EQ(got.skipped.out_of_range, 1);
  const auto want = Reference(c, x, 3.0, 3.0, 4, false);
  EXPECT_TRUE(SameCounts(want, got));
}

TEST_P(HistogramTest, StridedNegativeBroadcastAndHalfInputs) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  const int64_t rows = 37, cols = 53;
  auto base = MakeData(rng, rows * cols, -1.0f, 1.0f, 64, true);
  for (const Case& c : kCases) {
    // Transposed view (column-major walk).
    TensorView t;
    t.data = base.data();
    t.dtype = DType::kFloat32;
    t.ndim = 2;
    t.shape[0] = cols;
    t.shape[1] = rows;
    t.strides[0] = 1;
    t.strides[1] = cols;
    std::vector<float> logical;
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < rows; ++j) logical.push_back(base[j * cols + i]);
    }
    EXPECT_TRUE(SameCounts(Reference(c, logical, -1.0, 1.0, 64, false),
                           RunPerTensor(c, t, -1.0, 1.0, 64, false, 2)))
        << c.name << " transposed";
    // Negative stride (reversed vector).
    TensorView rev =
        TensorView::Vector(base.data() + base.size() - 1, static_cast<int64_t>(base.size()));
    rev.strides[0] = -1;
    std::vector<float> reversed(base.rbegin(), base.rend());
    EXPECT_TRUE(SameCounts(Reference(c, reversed, -1.0, 1.0, 64, true),
                           RunPerTensor(c, rev, -1.0, 1.0, 64, true, 1)))
        << c.name << " reversed";
    // Broadcast (stride 0).
    TensorView bc = TensorView::Vector(base.data() + 5, 777);
    bc.strides[0] = 0;
    std::vector<float> rep(777, base[5]);
    EXPECT_TRUE(SameCounts(Reference(c, rep, -1.0, 1.0, 64, false),
                           RunPerTensor(c, bc, -1.0, 1.0, 64, false, 1)))
        << c.name << " broadcast";
    // float16 and bfloat16 inputs are binned as their float32 values.
    std::vector<_Float16> h(base.size());
    std::vector<float> hf(base.size());
    for (size_t i = 0; i < base.size(); ++i) {
      h[i] = static_cast<_Float16>(base[i]);
      hf[i] = static_cast<float>(h[i]);
    }
    TensorView hv =
        TensorView::Vector(reinterpret_cast<float*>(h.data()), static_cast<int64_t>(h.size()));
    hv.dtype = DType::kFloat16;
    EXPECT_TRUE(SameCounts(Reference(c, hf, -1.0, 1.0, 64, false),
                           RunPerTensor(c, hv, -1.0, 1.0, 64, false, 2)))
        << c.name << " float16";
    std::vector<uint16_t> bf(base.size());
    std::vector<float> bff(base.size());
    for (size_t i = 0; i < base.size(); ++i) {
      uint32_t u;
      std::memcpy(&u, &base[i], 4);
      bf[i] = static_cast<uint16_t>(u >> 16);  // truncation: any bfloat16 value will do
      const uint32_t back = static_cast<uint32_t>(bf[i]) << 16;
      std::memcpy(&bff[i], &back, 4);
    }
    TensorView bv =
        TensorView::Vector(reinterpret_cast<float*>(bf.data()), static_cast<int64_t>(bf.size()));
    bv.dtype = DType::kBFloat16;
    EXPECT_TRUE(SameCounts(Reference(c, bff, -1.0, 1.0, 64, false),
                           RunPerTensor(c, bv, -1.0, 1.0, 64, false, 1)))
        << c.name << " bfloat16";
  }
}

TEST_P(HistogramTest, PerChannelEachSlotHasItsOwnRangeAndBins) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (const Case& c : kCases) {
    for (int64_t channels : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{1000}}) {
      const int64_t inner = channels >= 64 ? 5 : 301;
      for (int axis : {0, 1}) {  // axis 1 = the innermost dim: every element its own slot
        const int64_t d0 = axis == 0 ? channels : inner, d1 = axis == 0 ? inner : channels;
        std::vector<float> x(static_cast<size_t>(d0 * d1));
        std::vector<HistogramSlot> slots(static_cast<size_t>(channels));
        std::uniform_real_distribution<float> u(-3.0f, 3.0f);
        std::uniform_int_distribution<int64_t> nb(1, 40);
        for (int64_t ch = 0; ch < channels; ++ch) {
          const float a = u(rng), b = u(rng);
          slots[ch] = {std::min(a, b), std::max(a, b) + 0.01f, nb(rng), c.f64_range};
        }
        for (auto& v : x) v = u(rng);
        test::InjectSpecials(x, rng, 0.01);
        int64_t total = 0;
        for (const auto& s : slots) total += s.nbins;
        std::vector<int64_t> counts(static_cast<size_t>(total), 0);
        std::vector<HistogramSkipped> skipped(static_cast<size_t>(channels));
        HistogramOptions o;
        o.binning = c.binning;
        Histogram(TensorView::Contiguous(x.data(), DType::kFloat32, {d0, d1}),
                  ParamLayout::PerChannel(axis), slots.data(), o, counts.data(), skipped.data(),
                  Context{2});
        int64_t off = 0;
        for (int64_t ch = 0; ch < channels; ++ch) {
          std::vector<float> xc;
          for (int64_t i = 0; i < d0; ++i) {
            for (int64_t j = 0; j < d1; ++j) {
              if ((axis == 0 ? i : j) == ch) xc.push_back(x[i * d1 + j]);
            }
          }
          const auto& s = slots[ch];
          const auto want = Reference(c, xc, s.lo, s.hi, s.nbins, false);
          Got got;
          got.counts.assign(counts.begin() + off, counts.begin() + off + s.nbins);
          got.skipped = skipped[ch];
          ASSERT_TRUE(SameCounts(want, got))
              << c.name << " channels=" << channels << " axis=" << axis << " ch=" << ch;
          off += s.nbins;
        }
      }
    }
  }
}

TEST_P(HistogramTest, GoldenCountsFromNumpyAndTorch) {
  // Values one and two ulps around the 10 interior edges of 11 bins on
  // [0x1.31ea5ap-2f, 0x1.389de2p+0f], where the rules disagree. Expected counts computed on
  // Debian 12 with NumPy 1.24.2 np.histogram(x, 11, range=(lo, hi)) (float32 and float64
  // range scalars give the same counts here) and torch 1.13 torch.histc(x, 11, lo, hi)
  // (divide first); the multiply-first counts are the current PyTorch formula evaluated with
  // NumPy float32 arithmetic (no torch build with it is available here).
  const std::vector<float> x = {
      0x1.87c8ap-2f,  0x1.87c8a2p-2f, 0x1.87c8a4p-2f, 0x1.87c8a6p-2f, 0x1.87c8a8p-2f,
      0x1.dda6eap-2f, 0x1.dda6ecp-2f, 0x1.dda6eep-2f, 0x1.dda6fp-2f,  0x1.dda6f2p-2f,
      0x1.19c298p-1f, 0x1.19c29ap-1f, 0x1.19c29cp-1f, 0x1.19c29ep-1f, 0x1.19c2ap-1f,
      0x1.44b1bcp-1f, 0x1.44b1bep-1f, 0x1.44b1cp-1f,  0x1.44b1c2p-1f, 0x1.44b1c4p-1f,
      0x1.6fa0e2p-1f, 0x1.6fa0e4p-1f, 0x1.6fa0e6p-1f, 0x1.6fa0e8p-1f, 0x1.6fa0eap-1f,
      0x1.9a9008p-1f, 0x1.9a900ap-1f, 0x1.9a900cp-1f, 0x1.9a900ep-1f, 0x1.9a901p-1f,
      0x1.c57f2cp-1f, 0x1.c57f2ep-1f, 0x1.c57f3p-1f,  0x1.c57f32p-1f, 0x1.c57f34p-1f,
      0x1.f06e5p-1f,  0x1.f06e52p-1f, 0x1.f06e54p-1f, 0x1.f06e56p-1f, 0x1.f06e58p-1f,
      0x1.0daeb8p+0f, 0x1.0daebap+0f, 0x1.0daebcp+0f, 0x1.0daebep+0f, 0x1.0daecp+0f,
      0x1.23264cp+0f, 0x1.23264ep+0f, 0x1.23265p+0f,  0x1.232652p+0f, 0x1.232654p+0f,
  };
  const double lo = 0x1.31ea5ap-2, hi = 0x1.389de2p+0;
  const int64_t n = static_cast<int64_t>(x.size());
  const TensorView v = TensorView::Vector(const_cast<float*>(x.data()), n);
  EXPECT_EQ(RunPerTensor(kCases[2], v, lo, hi, 11, false, 1).counts,
            (std::vector<int64_t>{2, 5, 5, 5, 5, 5, 5, 5, 5, 5, 3}));
  EXPECT_EQ(RunPerTensor(kCases[3], v, lo, hi, 11, false, 1).counts,
            (std::vector<int64_t>{2, 5, 5, 5, 5, 5, 5, 5, 5, 5, 3}));
  EXPECT_EQ(RunPerTensor(kCases[1], v, lo, hi, 11, false, 1).counts,
            (std::vector<int64_t>{3, 5, 5, 5, 4, 5, 5, 7, 4, 4, 3}));
  EXPECT_EQ(RunPerTensor(kCases[0], v, lo, hi, 11, false, 1).counts,
            (std::vector<int64_t>{2, 5, 5, 6, 5, 4, 5, 5, 6, 4, 3}));
}

TEST_P(HistogramTest, FoldsIntoTheCountsPassedIn) {
  std::vector<float> x = {0.1f, 0.6f, 0.6f, 2.0f, NAN};
  std::vector<int64_t> counts = {10, 20};
  HistogramSkipped sk{1, 2};
  HistogramSlot slot{0.0, 1.0, 2};
  Histogram(TensorView::Vector(x.data(), 5), ParamLayout::PerTensor(), &slot, HistogramOptions{},
            counts.data(), &sk, Context{1});
  EXPECT_EQ(counts, (std::vector<int64_t>{11, 22}));
  EXPECT_EQ(sk.nonfinite, 2);
  EXPECT_EQ(sk.out_of_range, 3);
  // An empty tensor adds nothing.
  Histogram(TensorView::Vector(x.data(), 0), ParamLayout::PerTensor(), &slot, HistogramOptions{},
            counts.data(), &sk, Context{1});
  EXPECT_EQ(counts, (std::vector<int64_t>{11, 22}));
}

// The SIMD body has a lean pass (only ordinary in-range lanes binned in SIMD, everything else
// recomputed by the scalar rule) and a full pass (out-of-range, non-finite and skipped-zero lanes
// in SIMD), switching per 512-element block on how many lanes the lean pass left over. Runs of
// blocks of every kind, long enough to switch back and forth, in one call.
TEST_P(HistogramTest, LeanAndFullPassesSwitchWithinOneCall) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  const float lo = -2.5f, hi = 3.0f;
  std::normal_distribution<float> inside(0.25f, 0.9f);
  std::uniform_real_distribution<float> wide(-40.0f, 40.0f);
  const auto sv = test::SpecialValues();
  std::uniform_int_distribution<size_t> pick_sv(0, sv.size() - 1);
  std::vector<float> x;
  // kind 0: in range (a few specials); 1: mostly out of range / non-finite; 2: mostly zeros.
  const int kinds[] = {0, 0, 1, 0, 2, 2, 0, 1, 1, 1, 0, 2, 0};
  for (int kind : kinds) {
    const size_t len = kind == 0 ? 512 * 70 + 3 : 512 * 3 + 101;  // > 64 blocks for kind 0
    for (size_t i = 0; i < len; ++i) {
      float v = std::clamp(inside(rng), lo, hi);
      if (kind == 1 && i % 4 != 0) v = i % 7 == 0 ? sv[pick_sv(rng)] : wide(rng);
      if (kind == 2 && i % 3 != 0) v = i % 2 ? 0.0f : -0.0f;
      if (kind == 0 && i % 1009 == 0) v = sv[pick_sv(rng)];
      x.push_back(v);
    }
  }
  const int64_t n = static_cast<int64_t>(x.size());
  for (const Case& c : kCases) {
    for (int64_t nbins : {int64_t{2048}, int64_t{37}, int64_t{20000}}) {  // 20000: one sub-hist.
      for (bool abs_input : {false, true}) {
        for (bool skip_zeros : {false, true}) {
          const double l = abs_input ? 0.0 : lo;
          const auto want = Reference(c, x, l, hi, nbins, abs_input, skip_zeros);
          for (int threads : {1, 2}) {
            const auto got = RunPerTensor(c, TensorView::Vector(x.data(), n), l, hi, nbins,
                                          abs_input, threads, skip_zeros);
            ASSERT_TRUE(SameCounts(want, got))
                << c.name << " nbins=" << nbins << " abs=" << abs_input << " skip0=" << skip_zeros
                << " threads=" << threads;
          }
        }
      }
    }
  }
}

// The kNumpy lean pass decides "inside the range" from t = f32(f32(x - lo) * norm) alone (no
// comparison with lo and hi). Values 0..64 ulps outside and inside both ends, and the ends
// themselves, each alone in a block of ordinary values (so the lean pass runs), for ranges near
// and far from 0, tiny ones with denormal ends, negative ones, both range scalar types.
TEST_P(HistogramTest, NumpyValuesJustOutsideTheRangeInTheLeanPass) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  struct R {
    double lo, hi;
    int64_t nbins;
  };
  const R ranges[] = {{-4.0, 4.0, 2048},          {-5.3125, 5.25, 2048}, {1000.0, 1000.5, 64},
                      {12345.678, 12399.0, 2048}, {-2.0, -1.0, 3},       {0.0, 1.0, 100000},
                      {-3e-39, 5e-39, 16},        {1e-3, 1e-3 + 1e-6, 7}, {-1e30, 1e30, 2048}};
  for (const Case& c : {kCases[2], kCases[3]}) {
    for (const R& r : ranges) {
      std::uniform_real_distribution<double> u(r.lo, r.hi);
      std::vector<float> probes;
      for (const float end : {static_cast<float>(r.lo), static_cast<float>(r.hi)}) {
        float up = end, down = end;
        for (int k = 0; k <= 64; ++k) {
          probes.push_back(up);
          probes.push_back(down);
          up = test::NextUp(up);
          down = test::NextDown(down);
        }
      }
      for (const float p : test::SpecialValues()) probes.push_back(p);
      // Each probe at a different lane position of its own 512-element block.
      std::vector<float> x;
      for (size_t i = 0; i < probes.size(); ++i) {
        for (size_t k = 0; k < 512; ++k) {
          x.push_back(k == (i * 7) % 512 ? probes[i] : static_cast<float>(u(rng)));
        }
      }
      x.push_back(probes[0]);  // and in the scalar tail
      const auto want = Reference(c, x, r.lo, r.hi, r.nbins, false);
      const auto got = RunPerTensor(c, TensorView::Vector(x.data(), static_cast<int64_t>(x.size())),
                                    r.lo, r.hi, r.nbins, false, 1);
      ASSERT_TRUE(SameCounts(want, got))
          << c.name << " [" << r.lo << ", " << r.hi << "] n " << r.nbins;
    }
  }
}

// Runs of one value (the same bin over and over), with four sub-histograms (small nbins) and with
// one (nbins large enough that four copies would not fit), at every length around the unrolled
// counting loop and the vector width.
TEST_P(HistogramTest, RepeatedBinsWithOneAndFourSubHistograms) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Case& c : kCases) {
    for (int64_t nbins : {int64_t{5}, int64_t{2048}, int64_t{30000}}) {
      for (int64_t n : {1, 7, 15, 16, 17, 31, 33, 511, 512, 513, 1500, 70001}) {
        std::vector<float> x(static_cast<size_t>(n), 0.3f);
        for (int64_t i = n / 2; i < n; i += 3) x[static_cast<size_t>(i)] = u(rng);
        const auto want = Reference(c, x, -1.0, 1.0, nbins, false);
        const auto got = RunPerTensor(c, TensorView::Vector(x.data(), n), -1.0, 1.0, nbins,
                                      false, 1);
        ASSERT_TRUE(SameCounts(want, got)) << c.name << " nbins=" << nbins << " n=" << n;
      }
    }
  }
}

// Per channel along the outer dim with long rows of in-range values (the lean SIMD pass per
// slot), and enough slots that the sub-histograms drop from four to one.
TEST_P(HistogramTest, PerChannelLongRowsInRange) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Case& c : kCases) {
    for (int64_t channels : {int64_t{3}, int64_t{9}}) {  // 9 * 2051 bins > 16384: one sub-hist.
      const int64_t inner = 3001;
      std::vector<float> x(static_cast<size_t>(channels * inner));
      std::vector<HistogramSlot> slots(static_cast<size_t>(channels));
      for (int64_t ch = 0; ch < channels; ++ch) {
        const float scale = 0.5f + static_cast<float>(ch);
        float mn = FLT_MAX, mx = -FLT_MAX;
        for (int64_t i = 0; i < inner; ++i) {
          const float v = nd(rng) * scale;
          x[static_cast<size_t>(ch * inner + i)] = v;
          mn = std::min(mn, v);
          mx = std::max(mx, v);
        }
        slots[static_cast<size_t>(ch)] = {mn, mx, 2048, c.f64_range};
      }
      std::vector<int64_t> counts(static_cast<size_t>(channels * 2048), 0);
      std::vector<HistogramSkipped> skipped(static_cast<size_t>(channels));
      HistogramOptions o;
      o.binning = c.binning;
      Histogram(TensorView::Contiguous(x.data(), DType::kFloat32, {channels, inner}),
                ParamLayout::PerChannel(0), slots.data(), o, counts.data(), skipped.data(),
                Context{2});
      for (int64_t ch = 0; ch < channels; ++ch) {
        const std::vector<float> xc(x.begin() + ch * inner, x.begin() + (ch + 1) * inner);
        const auto& s = slots[static_cast<size_t>(ch)];
        const auto want = Reference(c, xc, s.lo, s.hi, s.nbins, false);
        Got got;
        got.counts.assign(counts.begin() + ch * 2048, counts.begin() + (ch + 1) * 2048);
        got.skipped = skipped[static_cast<size_t>(ch)];
        ASSERT_TRUE(SameCounts(want, got)) << c.name << " channels=" << channels << " ch=" << ch;
      }
    }
  }
}

QKIT_INSTANTIATE_PER_TARGET(HistogramTest);

TEST(HistogramCountsTest, MoreThan2To24InOneBinStayExact) {
  // float32 counts (torch.histc, NVIDIA) saturate at 2^24 = 16777216: adding 1 no longer
  // changes the value. 2^24 + 5 copies of one value (a broadcast view, no memory) must count
  // exactly, with any thread count.
  float v = 0.25f;
  const int64_t n = (int64_t{1} << 24) + 5;
  TensorView x = TensorView::Vector(&v, n);
  x.strides[0] = 0;
  for (int threads : {1, 2}) {
    std::vector<int64_t> counts(4, 0);
    HistogramSlot slot{0.0, 1.0, 4};
    Histogram(x, ParamLayout::PerTensor(), &slot, HistogramOptions{}, counts.data(), nullptr,
              Context{threads});
    EXPECT_EQ(counts, (std::vector<int64_t>{0, n, 0, 0})) << threads << " threads";
  }
}

TEST(HistogramEdgesTest, MatchesTheCumulativeDefinition) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  // Uniform-ish edges that grew by appending (NVIDIA numpy path), repeated edges, one bin.
  std::vector<std::vector<double>> edge_sets;
  {
    std::vector<float> e(65);
    NumpyLinspaceEdges(0.0, 1.0, 64, e.data());
    std::vector<double> ed(e.begin(), e.end());
    // Appended float64 edges (np.arange), not representable in float32.
    const double w = ed[1] - ed[0] + 1e-12;
    for (int k = 1; k <= 20; ++k) ed.push_back(ed[64] + w * k);
    edge_sets.push_back(ed);
  }
  edge_sets.push_back({0.0, 0.5, 0.5, 0.5, 1.0, 2.0});
  edge_sets.push_back({-1.0, 1.0});
  edge_sets.push_back({1.0, 1.0});
  edge_sets.push_back({0.1, 0.2, 0.30000000000000004, 0.4});
  for (const auto& e : edge_sets) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{17}, int64_t{1000}, int64_t{70000}}) {
      std::vector<float> x(static_cast<size_t>(n));
      std::uniform_real_distribution<float> u(static_cast<float>(e.front()) - 0.5f,
                                              static_cast<float>(e.back()) + 0.5f);
      std::uniform_int_distribution<size_t> pe(0, e.size() - 1);
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] = i % 3 == 0 ? static_cast<float>(e[pe(rng)]) : u(rng);
        if (i % 7 == 0) x[i] = std::nextafter(x[i], 2.0f);
      }
      test::InjectSpecials(x, rng, 0.01);
      if (n > 5000) {  // the reference is quadratic: check a prefix through the op's threading
        x.resize(5000);
        n = 5000;
      }
      const std::vector<double>& ed = e;
      for (bool abs_input : {false, true}) {
        const bool skip_zeros = abs_input;
        const auto want = ref::EdgesHistRef(x, ed, abs_input, skip_zeros);
        for (int threads : {1, 2}) {
          Got got;
          got.counts.assign(e.size() - 1, 0);
          HistogramWithEdges(TensorView::Vector(x.data(), n), ed.data(),
                             static_cast<int64_t>(e.size()), abs_input, skip_zeros,
                             got.counts.data(), &got.skipped, Context{threads});
          ASSERT_TRUE(SameCounts(want, got)) << "n=" << n << " edges=" << e.size();
        }
      }
    }
  }
}

TEST(HistogramErrorsTest, BadArgumentsAreRejectedWithTheirValues) {
  float x[4] = {0, 1, 2, 3};
  std::vector<int64_t> counts(8, 0);
  const TensorView v = TensorView::Vector(x, 4);
  auto run = [&](HistogramSlot s, HistogramOptions o = {}, ParamLayout l = {}) {
    Histogram(v, l, &s, o, counts.data(), nullptr, Context{1});
  };
  auto message = [&](auto&& f) {
    try {
      f();
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { run({0, 1, 0}); }).find("`slots[0].nbins`=0"), std::string::npos);
  EXPECT_NE(message([&] { run({0, 1, kMaxHistogramBins + 1}); }).find("nbins"), std::string::npos);
  EXPECT_NE(message([&] { run({0, INFINITY, 4}); }).find("not finite"), std::string::npos);
  EXPECT_NE(message([&] { run({NAN, 1, 4}); }).find("not finite"), std::string::npos);
  EXPECT_NE(message([&] { run({1, 1, 4}); }).find("empty in float32"), std::string::npos);
  EXPECT_NE(message([&] { run({1, 1 + 1e-12, 4}); }).find("empty in float32"), std::string::npos);
  HistogramOptions np;
  np.binning = HistogramBinning::kNumpy;
  EXPECT_NE(message([&] { run({2, 1, 4}, np); }).find("max must be >= min"), std::string::npos);
  EXPECT_THROW(run({0, 1, 4}, {}, ParamLayout::PerGroup(0, 2)), InvalidArgument);
  EXPECT_THROW(run({0, 1, 4}, {}, ParamLayout::PerChannel(3)), OutOfRange);
  int32_t ints[2] = {1, 2};
  TensorView iv = TensorView::Contiguous(ints, DType::kInt32, {2});
  HistogramSlot s{0, 1, 4};
  EXPECT_THROW(Histogram(iv, {}, &s, {}, counts.data(), nullptr, Context{1}), InvalidArgument);
  EXPECT_THROW(Histogram(v, {}, &s, {}, counts.data(), nullptr, Context{0}), InvalidArgument);
  EXPECT_THROW(Histogram(v, {}, nullptr, {}, counts.data(), nullptr, Context{1}), InvalidArgument);
  // Edges: too few, not finite, decreasing.
  const double e1[1] = {0};
  const double e_nan[3] = {0, NAN, 1};
  const double e_dec[3] = {0, 2, 1};
  EXPECT_THROW(HistogramWithEdges(v, e1, 1, false, false, counts.data(), nullptr, Context{1}),
               InvalidArgument);
  EXPECT_THROW(HistogramWithEdges(v, e_nan, 3, false, false, counts.data(), nullptr, Context{1}),
               InvalidArgument);
  EXPECT_NE(message([&] {
              HistogramWithEdges(v, e_dec, 3, false, false, counts.data(), nullptr, Context{1});
            }).find("edges[1]=2 > edges[2]=1"),
            std::string::npos);
  // Nothing was written by the failed calls.
  EXPECT_EQ(counts, std::vector<int64_t>(8, 0));
}

}  // namespace
}  // namespace qkit
