// HistogramCalibrator (NVIDIA flavour): collect sequences against the plain reference of
// upstream's collect (tests/reference/histogram_ref.h), a golden from the upstream algorithm run
// with Debian's torch 1.13, SPEC.md §10.7 and the upstream test expectations, the failure-mode
// rules, the distributed protocol, merge, serialization and errors.
#include "qkit/observers/histogram_calibrator.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <random>
#include <vector>

#include "qkit/error.h"
#include "reference/histogram_ref.h"
#include "util/seeded_rng.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::MakeRng;

// What upstream's collect sees: |x| without NaN / Inf (and without zeros under skip_zeros).
std::vector<float> Participating(const std::vector<float>& x, bool skip_zeros) {
  std::vector<float> out;
  for (float v : x) {
    const float a = std::fabs(v);
    if (!std::isfinite(a) || (skip_zeros && a == 0.0f)) continue;
    out.push_back(a);
  }
  return out;
}

std::vector<float> Batch(std::mt19937_64& rng, int64_t n, float amax, bool specials) {
  std::vector<float> x(static_cast<size_t>(n));
  std::normal_distribution<float> g(0.0f, amax / 3);
  for (auto& v : x) v = std::max(-amax, std::min(amax, g(rng)));
  x[0] = amax;
  x[n / 2] = 0.0f;
  if (specials) {
    x[n / 3] = NAN;
    x[n / 4] = -INFINITY;
    x[n / 5] = -0.0f;
  }
  return x;
}

::testing::AssertionResult SameSlot(const HistogramCalibrator& c, int64_t p,
                                    const ref::NvidiaCalibratorRef& r) {
  const auto& s = c.state();
  if (s.hist[p] != r.hist) {
    for (size_t k = 0; k < std::min(s.hist[p].size(), r.hist.size()); ++k) {
      if (s.hist[p][k] != r.hist[k]) {
        return ::testing::AssertionFailure()
               << "slot " << p << " bin " << k << ": " << s.hist[p][k] << " expected " << r.hist[k];
      }
    }
    return ::testing::AssertionFailure()
           << "slot " << p << " has " << s.hist[p].size() << " bins, expected " << r.hist.size();
  }
  if (s.edges[p] != r.edges) {
    return ::testing::AssertionFailure() << "slot " << p << " edges differ (" << s.edges[p].size()
                                         << " vs " << r.edges.size() << ")";
  }
  if (s.num_bins[p] != r.cur_bins || (s.edges_f64[p] != 0) != r.edges_f64) {
    return ::testing::AssertionFailure()
           << "slot " << p << " num_bins " << s.num_bins[p] << " expected " << r.cur_bins;
  }
  return ::testing::AssertionSuccess();
}

class HistogramCalibratorTest : public test::PerTargetTest {};

TEST_P(HistogramCalibratorTest, CollectSequencesMatchTheReference) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (bool torch_hist : {true, false}) {
    for (bool skip_zeros : {false, true}) {
      for (HistogramBinning tb :
           {HistogramBinning::kTorchHistc, HistogramBinning::kTorchHistcDivideFirst}) {
        if (!torch_hist && tb != HistogramBinning::kTorchHistc) continue;
        HistogramCalibratorOptions o;
        o.num_bins = torch_hist ? 2048 : 128;
        o.torch_hist = torch_hist;
        o.skip_zeros = skip_zeros;
        o.torch_binning = tb;
        HistogramCalibrator cal(o);
        ref::NvidiaCalibratorRef r;
        r.num_bins = o.num_bins;
        r.torch_hist = torch_hist;
        r.divide_first = tb == HistogramBinning::kTorchHistcDivideFirst;
        // Grows, stays, grows a lot, stays, grows by a hair.
        const float amaxes[] = {1.0f, 0.5f, 2.75f, 2.75f, 40.0f, 3.0f, 40.000004f};
        int64_t nonfinite = 0, k = 0;
        for (float am : amaxes) {
          const auto x = Batch(rng, torch_hist ? 3001 : 401, am, k % 2 == 1);
          cal.Observe(
              TensorView::Vector(const_cast<float*>(x.data()), static_cast<int64_t>(x.size())),
              Context{1 + static_cast<int>(k % 2)});
          r.Collect(Participating(x, skip_zeros));
          for (float v : x) nonfinite += std::isfinite(v) ? 0 : 1;
          ASSERT_TRUE(SameSlot(cal, 0, r))
              << "torch_hist " << torch_hist << " skip0 " << skip_zeros << " batch " << k;
          ASSERT_EQ(cal.nonfinite_count(), nonfinite);
          ASSERT_EQ(cal.state().dropped_count, r.dropped);
          ++k;
        }
      }
    }
  }
}

TEST_P(HistogramCalibratorTest, PerChannelSlotsGrowIndependently) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (bool torch_hist : {true, false}) {
    for (int axis : {0, 1}) {
      HistogramCalibratorOptions o;
      o.layout = ParamLayout::PerChannel(axis);
      o.num_bins = 64;
      o.torch_hist = torch_hist;
      HistogramCalibrator cal(o);
      const int64_t ch = 3, len = 300;
      std::vector<ref::NvidiaCalibratorRef> refs(ch);
      for (auto& r : refs) {
        r.num_bins = 64;
        r.torch_hist = torch_hist;
      }
      for (int step = 0; step < 4; ++step) {
        std::vector<std::vector<float>> per(ch);
        for (int64_t c = 0; c < ch; ++c)
          per[c] = Batch(rng, len, 1.0f + c * step * 0.7f, step == 1);
        if (step == 2) {
          for (auto& v : per[1]) v = NAN;  // channel 1 holds nothing this time
        }
        std::vector<float> x(static_cast<size_t>(ch * len));
        for (int64_t c = 0; c < ch; ++c) {
          for (int64_t i = 0; i < len; ++i) x[axis == 0 ? c * len + i : i * ch + c] = per[c][i];
        }
        const TensorView v = axis == 0
                                 ? TensorView::Contiguous(x.data(), DType::kFloat32, {ch, len})
                                 : TensorView::Contiguous(x.data(), DType::kFloat32, {len, ch});
        cal.Observe(v, Context{2});
        for (int64_t c = 0; c < ch; ++c) {
          refs[c].Collect(Participating(per[c], false));
          ASSERT_TRUE(SameSlot(cal, c, refs[c]))
              << "torch " << torch_hist << " axis " << axis << " step " << step;
        }
      }
    }
  }
}

QKIT_INSTANTIATE_PER_TARGET(HistogramCalibratorTest);

TEST(HistogramCalibratorGoldenTest, UpstreamTorchPathWithTorch113) {
  // pytorch-quantization 2.2.1's collect (torch path) transcribed to Python and run with
  // Debian's torch 1.13 (whose torch.histc divides first), num_bins 50, three batches
  // x_i = f32(((i * m) % 1009) / 1009 * scale - off) of (n, scale, off, m) below; then
  // _compute_amax_entropy / _compute_amax_percentile with scipy 1.10. The second batch grows
  // the histogram to 150 bins of width 0x1.47ae14p-6.
  struct B {
    int64_t n;
    double scale, off;
    int64_t m;
  };
  const B batches[] = {
      {2000, 2.0, 1.0, 7919}, {1500, 5.0, 2.0, 104729}, {3000, 3.0, 1.5, 15485863}};
  HistogramCalibratorOptions o;
  o.num_bins = 50;
  o.torch_binning = HistogramBinning::kTorchHistcDivideFirst;
  HistogramCalibrator cal(o);
  for (const B& b : batches) {
    std::vector<float> x(static_cast<size_t>(b.n));
    for (int64_t i = 0; i < b.n; ++i) {
      x[i] = static_cast<float>(static_cast<double>((i * b.m) % 1009) / 1009.0 * b.scale - b.off);
    }
    cal.Observe(TensorView::Vector(x.data(), b.n), Context{});
  }
  const std::vector<int64_t> want = {
      96, 87, 92, 91, 91, 91, 98, 92, 94, 84, 92, 95, 91, 95, 92, 89, 90, 94, 96, 96, 88, 93,
      88, 88, 92, 95, 95, 92, 90, 92, 94, 89, 96, 94, 85, 88, 94, 93, 98, 94, 93, 90, 86, 93,
      97, 87, 94, 91, 91, 90, 55, 57, 54, 47, 48, 52, 48, 57, 55, 54, 45, 52, 54, 55, 49, 52,
      54, 44, 54, 55, 58, 49, 55, 50, 46, 15, 15, 14, 12, 10, 9,  12, 13, 15, 12, 12, 8,  11,
      12, 15, 13, 12, 10, 9,  13, 14, 15, 12, 11, 8,  6,  4,  8,  8,  8,  4,  4,  4,  6,  8,
      8,  6,  4,  4,  4,  8,  8,  8,  4,  4,  4,  7,  10, 8,  5,  4,  4,  6,  8,  8,  7,  4,
      4,  4,  8,  8,  8,  5,  4,  4,  6,  8,  8,  7,  4,  4,  4,  8,  8,  8};
  EXPECT_EQ(cal.state().hist[0], want);
  EXPECT_EQ(cal.state().num_bins[0], 150);
  EXPECT_EQ(cal.state().edges[0].size(), 151u);
  EXPECT_EQ(cal.state().edges[0].back(), 0x1.8p+1);
  EXPECT_EQ(static_cast<float>(cal.state().edges[0][1]), 0x1.47ae14p-6f);
  HistogramCalibratorOptions o4 = o;
  o4.num_bits = 4;
  EXPECT_EQ(HistogramCalibrator(o4, cal.state()).ComputeAmax(CalibMethod::kEntropy, 1, 8)->at(0),
            0x1.7d70a4p+1f);
  HistogramCalibratorOptions o3 = o;
  o3.num_bits = 3;
  const HistogramCalibrator cal3(o3, cal.state());
  EXPECT_EQ(cal3.ComputeAmax("entropy", 3, 20)->at(0), 0x1.7d70a4p+1f);
  EXPECT_EQ(cal.ComputeAmax("percentile", 1, 128, 99.0)->at(0), 0x1.666666p+1f);
  EXPECT_EQ(cal.ComputeAmax("percentile", 1, 128, 50.0)->at(0), 0x1.666666p-1f);
}

TEST(HistogramCalibratorGoldenTest, UpstreamNumpyPathWithNumpy124) {
  // pytorch-quantization 2.2.1's collect, numpy path (torch_hist=False), transcribed to Python
  // and run with Debian's NumPy 1.24.2: num_bins 16, batches x_i = f32(((i * m) % 1009) / 1009 *
  // scale - off) of (n, scale, off, m) below. The histogram starts at min|x| and grows twice by
  // np.arange; the edges become float64.
  struct B {
    int64_t n;
    double scale, off;
    int64_t m;
  };
  const B batches[] = {{500, 2.0, 1.0, 7919}, {300, 5.0, 2.0, 104729}, {700, 9.0, 1.5, 15485863}};
  HistogramCalibratorOptions o;
  o.num_bins = 16;
  o.torch_hist = false;
  HistogramCalibrator cal(o);
  for (const B& b : batches) {
    std::vector<float> x(static_cast<size_t>(b.n));
    for (int64_t i = 0; i < b.n; ++i) {
      x[i] = static_cast<float>(static_cast<double>((i * b.m) % 1009) / 1009.0 * b.scale - b.off);
    }
    cal.Observe(TensorView::Vector(x.data(), b.n), Context{});
  }
  const std::vector<int64_t> want = {
      53, 52, 45, 46, 47, 46, 47, 46, 54, 52, 53, 48, 45, 45, 46, 46, 13, 19, 21, 21,
      22, 14, 15, 14, 16, 15, 14, 15, 14, 14, 11, 8,  1,  10, 7,  14, 7,  15, 7,  15,
      2,  8,  0,  14, 7,  15, 7,  14, 7,  6,  0,  0,  1,  7,  7,  7,  7,  7,  7,  3,
      0,  0,  4,  7,  7,  7,  7,  7,  7,  1,  0,  0,  7,  7,  7,  7,  7,  7,  5,  0,
      0,  3,  7,  7,  7,  7,  7,  7,  2,  0,  0,  5,  7,  7,  7,  7,  7,  6,  0,  0,
      1,  7,  7,  7,  7,  7,  7,  4,  0,  0,  4,  7,  7,  7,  7,  7,  7,  1};
  const auto& s = cal.state();
  EXPECT_EQ(s.hist[0], want);
  ASSERT_EQ(s.edges[0].size(), 119u);
  EXPECT_EQ(s.edges_f64[0], 1);
  EXPECT_EQ(s.edges[0][0], 0x1.03ce46p-10);
  EXPECT_EQ(s.edges[0][1], 0x1.03ce46p-4);
  EXPECT_EQ(s.edges[0][16], 0x1p+0);
  EXPECT_EQ(s.edges[0][17], 0x1.0ffbfp+0);
  EXPECT_EQ(s.edges[0][117], 0x1.d39979ea2p+2);
  EXPECT_EQ(s.edges[0][118], 0x1.d798761dcp+2);
}

// A calibrator holding a given histogram over edges 0, w, 2w, ...
HistogramCalibrator WithHistogram(const std::vector<int64_t>& hist, double width, int num_bits) {
  HistogramCalibratorOptions o;
  o.num_bits = num_bits;
  o.num_bins = static_cast<int64_t>(hist.size());
  HistogramCalibratorState s;
  s.hist = {hist};
  std::vector<double> e;
  for (size_t k = 0; k <= hist.size(); ++k) e.push_back(width * static_cast<double>(k));
  s.edges = {e};
  s.edges_f64 = {0};
  s.num_bins = {static_cast<int64_t>(hist.size())};
  return HistogramCalibrator(o, s);
}

TEST(HistogramCalibratorGoldenTest, SpecWorkedExamples) {
  // SPEC.md §10.7 through compute_amax.
  const auto ent = WithHistogram({40, 25, 18, 12, 9, 7, 5, 4, 3, 2, 1, 0, 1, 0, 0, 1}, 0.25, 3);
  EXPECT_EQ(ent.ComputeAmax("entropy", 1, 4)->at(0), 2.75f);
  const auto mse = WithHistogram({0, 10, 5, 1, 0, 0, 0, 1}, 1.0, 3);
  EXPECT_EQ(mse.ComputeAmax("mse", 1, 1)->at(0), 6.5f);
  const auto pct = WithHistogram({10, 20, 30, 25, 10, 5}, 1.0, 8);
  EXPECT_EQ(pct.ComputeAmax("percentile", 1, 128, 90.0)->at(0), 4.0f);
  EXPECT_EQ(pct.ComputeAmax("percentile", 1, 128, 99.0)->at(0), 5.0f);
}

TEST(HistogramCalibratorGoldenTest, UpstreamTestExpectations) {
  // pytorch-quantization tests/calibrator_test.py, as listed in SPEC.md §10.7.
  {  // arange(100), percentile 90 -> ~89 (within 100 / 1024)
    std::vector<float> x(100);
    for (int i = 0; i < 100; ++i) x[i] = static_cast<float>(i);
    HistogramCalibrator cal;
    cal.Observe(TensorView::Vector(x.data(), 100), Context{});
    EXPECT_NEAR(cal.ComputeAmax("percentile", 1, 128, 90.0)->at(0), 89.0f, 100.0 / 1024);
  }
  {  // uniform(0, 1) with one outlier at 10: entropy amax < 1.1
    std::mt19937_64 rng(12345);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> x(1 << 16);
    for (auto& v : x) v = u(rng);
    x[1] = 10.0f;
    HistogramCalibrator cal;
    cal.Observe(TensorView::Vector(x.data(), static_cast<int64_t>(x.size())), Context{});
    EXPECT_LT(cal.ComputeAmax("entropy")->at(0), 1.1f);
  }
  {  // 255s with one 256: mse amax closer to 255
    std::vector<float> x(4096, 255.0f);
    x[7] = 256.0f;
    HistogramCalibrator cal;
    cal.Observe(TensorView::Vector(x.data(), 4096), Context{});
    const float a = cal.ComputeAmax("mse")->at(0);
    EXPECT_LT(std::fabs(a - 255.0f), std::fabs(a - 256.0f)) << a;
  }
}

TEST(HistogramCalibratorTest2, AllZerosAndTheZeroWidthRestart) {
  HistogramCalibratorOptions o;
  o.num_bins = 8;
  HistogramCalibrator cal(o);
  std::vector<float> z(5, 0.0f);
  cal.Observe(TensorView::Vector(z.data(), 5), Context{});
  // torch.histc(zeros, 8, min=0, max=0) bins over [-1, 1]: the zeros land in bin 4; every edge
  // of linspace(0, 0, 9) is 0, so every method gives amax 0.
  EXPECT_EQ(cal.state().hist[0], (std::vector<int64_t>{0, 0, 0, 0, 5, 0, 0, 0}));
  EXPECT_EQ(cal.ComputeAmax("percentile", 1, 0, 50.0)->at(0), 0.0f);
  EXPECT_EQ(cal.ComputeAmax("entropy", 1, 2)->at(0), 0.0f);
  EXPECT_EQ(cal.ComputeAmax("mse", 1, 0)->at(0), 0.0f);
  // Growth from zero width (upstream divides by it): start again, old zeros in bin 0.
  std::vector<float> y = {2.0f, 1.0f, 0.0f};
  cal.Observe(TensorView::Vector(y.data(), 3), Context{});
  EXPECT_EQ(cal.state().hist[0], (std::vector<int64_t>{6, 0, 0, 0, 1, 0, 0, 1}));
  EXPECT_EQ(cal.state().edges[0].back(), 2.0);
  // skip_zeros: a batch of zeros collects nothing at all.
  HistogramCalibratorOptions os = o;
  os.skip_zeros = true;
  HistogramCalibrator skip(os);
  skip.Observe(TensorView::Vector(z.data(), 5), Context{});
  EXPECT_TRUE(skip.empty());
  EXPECT_FALSE(skip.ComputeAmax("entropy").has_value());
}

TEST(HistogramCalibratorTest2, ArangeOneEdgeShortDropsLikeUpstream) {
  // Found with a float32 search: 2 bins up to m = 0x1.1cf65ep+2 give width w = 0x1.1cf65ep+1;
  // a batch max x = 0x1.f2af26p+3 then gives num_bins = ceil(f32(x / w)) = 8, but f32(x + w) / w
  // rounds to exactly 8 so torch.arange makes only 8 edges, one short, the last
  // f32(7 w) = 0x1.f2af24p+3 < x: torch.histc bins over [0, 7 w] and drops x (upstream
  // reproduced; counted in dropped_count).
  HistogramCalibratorOptions o;
  o.num_bins = 2;
  HistogramCalibrator cal(o);
  std::vector<float> a = {0x1.1cf65ep+2f, 1.0f};
  cal.Observe(TensorView::Vector(a.data(), 2), Context{});
  ASSERT_EQ(static_cast<float>(cal.state().edges[0][1]), 0x1.1cf65ep+1f);
  std::vector<float> b = {0x1.f2af26p+3f, 0.25f};
  cal.Observe(TensorView::Vector(b.data(), 2), Context{});
  const auto& s = cal.state();
  EXPECT_EQ(s.num_bins[0], 8);
  EXPECT_EQ(s.edges[0].size(), 8u);  // one short of num_bins + 1
  EXPECT_EQ(s.edges[0].back(), 0x1.f2af24p+3);
  EXPECT_EQ(s.dropped_count, 1);
  // The upstream collect run with Debian's torch 1.13 gives the same: _num_bins 8, 8 edges
  // ending at 0x1.f2af24p+3, histogram [2, 1, 0, 0, 0, 0, 0, 0] (sum 3).
  EXPECT_EQ(s.hist[0], (std::vector<int64_t>{2, 1, 0, 0, 0, 0, 0, 0}));
  ref::NvidiaCalibratorRef r;
  r.num_bins = 2;
  r.Collect(a);
  r.Collect(b);
  EXPECT_TRUE(SameSlot(cal, 0, r));
  EXPECT_EQ(r.dropped, 1);
}

TEST(HistogramCalibratorTest2, AmaxPastTheStoredEdgesUsesTheArangeFormula) {
  // 16 bins but only 16 edges (torch.arange one short). The entropy tie rule picks the last
  // candidate i = 16 (KL is exactly 0 from i = 12 on, see calib_test), whose edge index 16 is
  // not stored: it is f32(width * 16) (upstream raises IndexError).
  HistogramCalibratorOptions o;
  o.num_bins = 16;
  HistogramCalibratorState s;
  s.hist = {{9, 9, 7, 5, 4, 3, 3, 2, 2, 1, 1, 1, 0, 0, 0, 0}};
  std::vector<double> e;
  for (int k = 0; k < 16; ++k) e.push_back(static_cast<float>(0.1 * k));
  s.edges = {e};
  s.edges_f64 = {0};
  s.num_bins = {16};
  const HistogramCalibrator cal(o, s);
  const float w = static_cast<float>(e[1]) - static_cast<float>(e[0]);
  EXPECT_EQ(cal.ComputeAmax("entropy", 1, 4)->at(0),
            static_cast<float>(static_cast<double>(w) * 16.0));
}

TEST(HistogramCalibratorTest2, ProtocolOnShardsEqualsObserveOfTheConcatenation) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (bool torch_hist : {true, false}) {
    for (int axis : {-1, 1}) {
      HistogramCalibratorOptions o;
      o.num_bins = 256;
      o.torch_hist = torch_hist;
      o.skip_zeros = axis >= 0;
      if (axis >= 0) o.layout = ParamLayout::PerChannel(axis);
      HistogramCalibrator single(o), ra(o), rb(o);
      const float amaxes[] = {1.0f, 3.0f, 2.0f, 3.5f};
      for (float am : amaxes) {
        const int64_t na = 200, nb = 150;  // shards [na, 2] and [nb, 2], concatenated on dim 0
        auto a = Batch(rng, 2 * na, am * 0.6f, true);
        auto b = Batch(rng, 2 * nb, am, false);
        std::vector<float> cat(a);
        cat.insert(cat.end(), b.begin(), b.end());
        const TensorView va = TensorView::Contiguous(a.data(), DType::kFloat32, {na, 2});
        const TensorView vb = TensorView::Contiguous(b.data(), DType::kFloat32, {nb, 2});
        const Context ctx{2};
        single.Observe(TensorView::Contiguous(cat.data(), DType::kFloat32, {na + nb, 2}), ctx);
        const RangeStats merged =
            HistogramCalibrator::MergeRange(ra.BatchRange(va, ctx), rb.BatchRange(vb, ctx));
        const auto counts = HistogramCalibrator::MergeCounts(ra.BatchCounts(va, merged, ctx),
                                                             rb.BatchCounts(vb, merged, ctx));
        ra.Commit(merged, counts);
        rb.Commit(merged, counts);
        for (const HistogramCalibrator* r : {&ra, &rb}) {
          EXPECT_EQ(r->state().hist, single.state().hist);
          EXPECT_EQ(r->state().edges, single.state().edges);
          EXPECT_EQ(r->state().num_bins, single.state().num_bins);
          EXPECT_EQ(r->state().edges_f64, single.state().edges_f64);
          EXPECT_EQ(r->state().dropped_count, single.state().dropped_count);
          EXPECT_EQ(r->nonfinite_count(), single.nonfinite_count());
        }
      }
    }
  }
}

TEST(HistogramCalibratorTest2, ComputeAmaxArgumentsAndEmptySlots) {
  HistogramCalibrator cal;
  EXPECT_FALSE(cal.ComputeAmax("entropy").has_value());                         // upstream: None
  EXPECT_THROW(cal.ComputeAmax("percentile", 1, 128, 100.5), InvalidArgument);  // checked first
  EXPECT_THROW(cal.ComputeAmax("percentile", 1, 128, -1.0), InvalidArgument);
  EXPECT_THROW(cal.ComputeAmax("max"), InvalidArgument);  // upstream: TypeError
  EXPECT_THROW(cal.ComputeAmax("entropy", 0), InvalidArgument);
  EXPECT_THROW(cal.ComputeAmax("entropy", 1, -1), InvalidArgument);
  EXPECT_THROW(ParseCalibMethod("Entropy"), InvalidArgument);
  std::vector<float> x = {0.5f, 1.0f, 0.25f};
  cal.Observe(TensorView::Vector(x.data(), 3), Context{});
  EXPECT_THROW(cal.ComputeAmax("entropy", 1, 2049), InvalidArgument);  // no candidate left
  EXPECT_THROW(cal.ComputeAmax("mse", 1, 2048), InvalidArgument);
  EXPECT_EQ(cal.ComputeAmax("percentile", 1, 128, 100.0)->size(), 1u);
  // Per channel with one channel empty: NaN there.
  HistogramCalibratorOptions o;
  o.layout = ParamLayout::PerChannel(0);
  o.num_bins = 16;
  HistogramCalibrator pc(o);
  std::vector<float> y = {1, 2, 3, NAN, NAN, NAN};
  pc.Observe(TensorView::Contiguous(y.data(), DType::kFloat32, {2, 3}), Context{});
  const auto a = pc.ComputeAmax("percentile", 1, 0, 50.0);
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE(std::isnan(a->at(0)));
  EXPECT_TRUE(std::isnan(a->at(1)));
  EXPECT_EQ(pc.nonfinite_count(), 3);
}

TEST(HistogramCalibratorTest2, MergeSaveLoadJsonAndErrors) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  HistogramCalibratorOptions o;
  o.num_bins = 32;
  o.torch_hist = false;  // float64 edges after growth: the JSON / blob must keep them exactly
  HistogramCalibrator cal(o);
  for (float am : {1.0f, 3.3f, 2.0f}) {
    auto x = Batch(rng, 100, am, true);
    cal.Observe(TensorView::Vector(x.data(), 100), Context{});
  }
  ASSERT_EQ(cal.state().edges_f64[0], 1);
  auto same = [&](const HistogramCalibrator& t) {
    EXPECT_EQ(t.state().hist, cal.state().hist);
    EXPECT_EQ(t.state().edges, cal.state().edges);
    EXPECT_EQ(t.state().edges_f64, cal.state().edges_f64);
    EXPECT_EQ(t.state().num_bins, cal.state().num_bins);
    EXPECT_EQ(t.state().dropped_count, cal.state().dropped_count);
    EXPECT_EQ(t.nonfinite_count(), cal.nonfinite_count());
    EXPECT_FALSE(t.options().torch_hist);
    EXPECT_EQ(t.options().num_bins, 32);
  };
  const auto blob = cal.Save();
  same(HistogramCalibrator::Load(blob.data(), blob.size()));
  same(HistogramCalibrator::FromJson(cal.ToJson()));
  for (size_t n = 0; n < blob.size(); n += 11) {
    EXPECT_THROW(HistogramCalibrator::Load(blob.data(), n), DataLoss) << n;
  }
  for (size_t i = 0; i < blob.size(); i += 13) {
    auto bad = blob;
    bad[i] ^= 0x10;
    EXPECT_THROW(HistogramCalibrator::Load(bad.data(), bad.size()), DataLoss) << i;
  }
  EXPECT_THROW(HistogramCalibrator::FromJson("{\"kind\": 1}"), InvalidArgument);
  std::string j = cal.ToJson();
  std::string bad_bits = j;
  bad_bits.replace(bad_bits.find("\"edges_f64\":[1]"), 15, "\"edges_f64\":[7]");
  EXPECT_THROW(HistogramCalibrator::FromJson(bad_bits), InvalidArgument);
  // Merge: identical edges add; different edges are refused; options must agree.
  const auto twice = HistogramCalibrator::Merge(cal, cal);
  for (size_t k = 0; k < cal.state().hist[0].size(); ++k) {
    EXPECT_EQ(twice.state().hist[0][k], 2 * cal.state().hist[0][k]);
  }
  HistogramCalibrator other(o);
  std::vector<float> z = {0.1f, 0.2f};
  other.Observe(TensorView::Vector(z.data(), 2), Context{});
  EXPECT_THROW(HistogramCalibrator::Merge(cal, other), InvalidArgument);
  EXPECT_EQ(HistogramCalibrator::Merge(cal, HistogramCalibrator(o)).state().hist, cal.state().hist);
  EXPECT_THROW(HistogramCalibrator::Merge(cal, HistogramCalibrator{}), InvalidArgument);
  // Options and states that make no sense.
  HistogramCalibratorOptions bad;
  bad.num_bins = 1;
  EXPECT_THROW(HistogramCalibrator{bad}, InvalidArgument);
  bad = {};
  bad.num_bits = 1;
  EXPECT_THROW(HistogramCalibrator{bad}, InvalidArgument);
  bad = {};
  bad.torch_binning = HistogramBinning::kNumpy;
  EXPECT_THROW(HistogramCalibrator{bad}, InvalidArgument);
  HistogramCalibratorState st = cal.state();
  st.edges[0][3] = st.edges[0][2] - 1.0;  // decreasing
  EXPECT_THROW(HistogramCalibrator(o, st), InvalidArgument);
  // A failing Observe leaves the state unchanged.
  HistogramCalibratorOptions strict = o;
  strict.error_on_nonfinite = true;
  HistogramCalibrator sc(strict, cal.state());
  const auto before = sc.Save();
  std::vector<float> with_nan = {1.0f, NAN};
  EXPECT_THROW(sc.Observe(TensorView::Vector(with_nan.data(), 2), Context{}), InvalidArgument);
  EXPECT_EQ(sc.Save(), before);
  int32_t ints[2] = {1, 2};
  EXPECT_THROW(sc.Observe(TensorView::Contiguous(ints, DType::kInt32, {2}), Context{}),
               InvalidArgument);
  EXPECT_EQ(sc.Save(), before);
}

}  // namespace
}  // namespace qkit
