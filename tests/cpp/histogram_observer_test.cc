// HistogramObserver (MegEngine flavour): batch sequences against the plain reference of the
// MegEngine algorithm (tests/reference/histogram_ref.h), failure-mode rules, the L2 search and
// qparams, the distributed protocol, merge, serialization and errors.
#include "qkit/observers/histogram_observer.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <random>
#include <vector>

#include "qkit/calib/l2_search.h"
#include "qkit/error.h"
#include "qkit/qparams.h"
#include "reference/calib_ref.h"
#include "reference/histogram_ref.h"
#include "util/seeded_rng.h"
#include "util/special_values.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::MakeRng;

std::vector<float> Finite(const std::vector<float>& x) {
  std::vector<float> f;
  for (float v : x) {
    if (std::isfinite(v)) f.push_back(v);
  }
  return f;
}

int64_t NonFiniteCount(const std::vector<float>& x) {
  int64_t n = 0;
  for (float v : x) n += std::isfinite(v) ? 0 : 1;
  return n;
}

// A batch of n values in [lo, hi] (both ends present), with some special values mixed in.
std::vector<float> Batch(std::mt19937_64& rng, int64_t n, float lo, float hi, bool specials) {
  std::vector<float> x(static_cast<size_t>(n));
  std::normal_distribution<float> g(0.5f * (lo + hi), 0.2f * (hi - lo) + 1e-6f);
  for (auto& v : x) v = std::min(hi, std::max(lo, g(rng)));
  x.front() = lo;
  x.back() = hi;
  if (specials) {
    const float nan = NAN, inf = INFINITY;
    x[x.size() / 3] = nan;
    x[x.size() / 2] = -inf;
  }
  return x;
}

::testing::AssertionResult SameSlot(const HistogramObserver& obs, int64_t p,
                                    const ref::MegEngineSlotRef& r) {
  const auto& s = obs.state();
  const int64_t bins = obs.options().bins;
  if (s.min_val[p] != r.min_val || s.max_val[p] != r.max_val) {
    return ::testing::AssertionFailure()
           << "slot " << p << " range [" << s.min_val[p] << ", " << s.max_val[p] << "] expected ["
           << r.min_val << ", " << r.max_val << "]";
  }
  for (int64_t b = 0; b < bins; ++b) {
    if (s.histogram[p * bins + b] != r.hist[b]) {
      return ::testing::AssertionFailure()
             << "slot " << p << " bin " << b << ": " << s.histogram[p * bins + b] << " expected "
             << r.hist[b];
    }
  }
  return ::testing::AssertionSuccess();
}

class HistogramObserverTest : public test::PerTargetTest {};

TEST_P(HistogramObserverTest, SequencesMatchTheMegEngineReference) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  struct Cfg {
    int64_t bins, up;
  };
  // The defaults (bins * upsample_rate a power of two), and rates where float error can make
  // downsample_rate = upsample_rate + 1.
  const Cfg cfgs[] = {{2048, 128}, {64, 8}, {100, 3}, {37, 5}};
  int64_t overruns = 0;
  for (const Cfg& cfg : cfgs) {
    HistogramObserverOptions o;
    o.bins = cfg.bins;
    o.upsample_rate = cfg.up;
    HistogramObserver obs(o);
    ref::MegEngineSlotRef r;
    r.bins = cfg.bins;
    r.up = cfg.up;
    int64_t nonfinite = 0;
    // Ranges: grows on both sides, stays inside, grows only downwards (the overrun case), only
    // upwards, stays identical, tiny and huge steps.
    const float ranges[][2] = {{-1.0f, 2.0f},    {-0.5f, 1.0f},  {-3.0f, 2.0f},   {-3.0f, 2.5f},
                               {-3.0f, 2.5f},    {-3.25f, 2.5f}, {-7.1f, 2.5f},   {-7.2f, 9.9f},
                               {-0.1f, 0.1f},    {-7.3f, 10.0f}, {-70.0f, 10.0f}, {-71.0f, 10.5f},
                               {-1000.0f, 10.5f}};
    int k = 0;
    for (const auto& rg : ranges) {
      const auto x = Batch(rng, 257 + 101 * k, rg[0], rg[1], k % 3 == 1);
      obs.Observe(TensorView::Vector(const_cast<float*>(x.data()), static_cast<int64_t>(x.size())),
                  Context{1 + k % 2});
      r.Observe(Finite(x));
      nonfinite += NonFiniteCount(x);
      ASSERT_TRUE(SameSlot(obs, 0, r)) << "bins " << cfg.bins << " up " << cfg.up << " batch " << k;
      ASSERT_EQ(obs.nonfinite_count(), nonfinite);
      ASSERT_EQ(obs.state().num_batches[0], k + 1);
      ++k;
    }
    overruns += r.overruns;
  }
  (void)overruns;  // rare in random sequences: see GridOverrunGoesToTheLastCell
}

TEST(HistogramObserverTest2, GridOverrunGoesToTheLastCell) {
  // Found by searching float32 ranges (bins 2048, upsample 128): stored range [mn, mx], then a
  // batch reaching down to cmin. _adjust_min_max gives downsample_rate 6053 and start_idx
  // 12134401, so the upsampled old histogram (2048 * 128 cells) ends one cell past the grid of
  // 2048 * 6053 cells; MegEngine's slice assignment raises there. qkit counts the extra cell in
  // the last one.
  const float mn = 0x1.181748p+7f, mx = 0x1.1b85bep+7f, cmin = 0x1.e50096p+5f;
  std::vector<float> first = {mn, mx, 0.5f * (mn + mx), mx};
  std::vector<float> second = {cmin};
  HistogramObserver obs;
  obs.Observe(TensorView::Vector(first.data(), 4), Context{});
  obs.Observe(TensorView::Vector(second.data(), 1), Context{});
  ref::MegEngineSlotRef r;
  r.Observe(first);
  r.Observe(second);
  EXPECT_EQ(r.overruns, 1);
  EXPECT_TRUE(SameSlot(obs, 0, r));
  int64_t total = 0;
  for (int64_t c : obs.state().histogram) total += c;
  EXPECT_EQ(total, 5);
  EXPECT_GE(obs.state().histogram[2047], 2);  // the old maxima stay in the last bin
}

TEST_P(HistogramObserverTest, PerChannelSlotsAreIndependent) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (int axis : {0, 1}) {
    HistogramObserverOptions o;
    o.layout = ParamLayout::PerChannel(axis);
    o.bins = 128;
    o.upsample_rate = 16;
    HistogramObserver obs(o);
    const int64_t ch = 3, len = 400;
    std::vector<ref::MegEngineSlotRef> refs(ch);
    for (auto& r : refs) {
      r.bins = 128;
      r.up = 16;
    }
    for (int step = 0; step < 5; ++step) {
      std::vector<std::vector<float>> per(ch);
      for (int64_t c = 0; c < ch; ++c) {
        const float lo = -1.0f - static_cast<float>(c * step),
                    hi = 0.5f + static_cast<float>(step * (c + 1));
        per[c] = Batch(rng, len, lo, hi, c == 1 && step == 2);
      }
      if (step == 3) {  // channel 2 holds only NaN in this batch: it does not change
        for (auto& v : per[2]) v = NAN;
      }
      std::vector<float> x(static_cast<size_t>(ch * len));
      for (int64_t c = 0; c < ch; ++c) {
        for (int64_t i = 0; i < len; ++i) {
          x[axis == 0 ? c * len + i : i * ch + c] = per[c][i];
        }
      }
      const TensorView v = axis == 0 ? TensorView::Contiguous(x.data(), DType::kFloat32, {ch, len})
                                     : TensorView::Contiguous(x.data(), DType::kFloat32, {len, ch});
      obs.Observe(v, Context{2});
      for (int64_t c = 0; c < ch; ++c) {
        refs[c].Observe(Finite(per[c]));
        ASSERT_TRUE(SameSlot(obs, c, refs[c])) << "axis " << axis << " step " << step;
      }
    }
    EXPECT_EQ(obs.state().num_batches, (std::vector<int64_t>{5, 5, 4}));
  }
}

QKIT_INSTANTIATE_PER_TARGET(HistogramObserverTest);

TEST(HistogramObserverCombineTest, OneCombineIsWithinOneOfMegEngineFloatValues) {
  // From one integer state, the combined bins differ from MegEngine's float64 interpolation
  // (integral differences / upsample_rate) by less than 1 each, and the total is conserved.
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  HistogramObserverOptions o;
  o.bins = 256;
  o.upsample_rate = 16;
  HistogramObserver obs(o);
  auto x1 = Batch(rng, 5000, -1.0f, 1.0f, false);
  obs.Observe(TensorView::Vector(x1.data(), 5000), Context{});
  const auto before = obs.state();
  std::vector<float> x2 = {-2.7f, 3.1f};  // widens both sides
  obs.Observe(TensorView::Vector(x2.data(), 2), Context{});
  // MegEngine's float64 combine of `before` into the new range, computed plainly.
  const double w = static_cast<double>(before.max_val[0] - before.min_val[0]) / (256.0 * 16);
  const float cmin = -2.7f, cmax = 3.1f;
  const double span = static_cast<double>(cmax - cmin);
  const int64_t down = static_cast<int64_t>(std::ceil(span / (256.0 * w)));
  const double e = down * (256.0 * w) - span;
  const double lo = cmin - e / 2;
  const int64_t start = static_cast<int64_t>(std::nearbyint((before.min_val[0] - lo) / w));
  std::vector<double> grid(static_cast<size_t>(256 * down), 0.0);
  for (int64_t i = 0; i < 256; ++i) {
    for (int64_t c = 0; c < 16; ++c)
      grid[std::min<int64_t>(start + i * 16 + c, 256 * down - 1)] += before.histogram[i];
  }
  const double hi = cmax + e / 2;
  const auto batch = ref::NumpyHistRef(x2, lo, hi, 256, /*f64_range=*/true, false).counts;
  double integral = 0, prev = 0;
  int64_t total_new = 0, total_old = 0;
  for (int64_t c : before.histogram) total_old += c;
  for (int64_t j = 0; j < 256; ++j) {
    for (int64_t c = j * down; c < (j + 1) * down; ++c) integral += grid[c];
    const double mge = (integral - prev) / 16;
    prev = integral;
    const int64_t ours = obs.state().histogram[j] - batch[j];  // without the batch's 2 values
    EXPECT_LT(std::fabs(static_cast<double>(ours) - mge), 1.0) << "bin " << j;
    total_new += ours;
  }
  EXPECT_EQ(total_new, total_old);
}

TEST(HistogramObserverTest2, ConstantInputAndTheZeroWidthRestart) {
  HistogramObserverOptions o;
  o.bins = 16;
  o.upsample_rate = 4;
  HistogramObserver obs(o);
  std::vector<float> c(10, 2.5f);
  obs.Observe(TensorView::Vector(c.data(), 10), Context{});
  // np.histogram widens [2.5, 2.5] to [2.0, 3.0]: 2.5 is the left edge of bin 8; the stored
  // range stays [2.5, 2.5] (MegEngine stores the batch min / max).
  EXPECT_EQ(obs.state().min_val[0], 2.5f);
  EXPECT_EQ(obs.state().max_val[0], 2.5f);
  EXPECT_EQ(obs.state().histogram[8], 10);
  // The same constant again: MegEngine would divide by a zero width; qkit adds the counts.
  obs.Observe(TensorView::Vector(c.data(), 10), Context{});
  EXPECT_EQ(obs.state().histogram[8], 20);
  EXPECT_EQ(obs.state().max_val[0], 2.5f);
  // qparams of a constant: the L2 search sees a zero-width histogram and keeps [2.5, 2.5].
  float lo, hi;
  obs.ComputeRange(QuantSpec{}, &lo, &hi);
  EXPECT_EQ(lo, 2.5f);
  EXPECT_EQ(hi, 2.5f);
  // A batch that widens it: restart on [0.5, 2.5] with the 20 old values at 2.5 (last bin).
  std::vector<float> y = {0.5f, 1.0f};
  obs.Observe(TensorView::Vector(y.data(), 2), Context{});
  EXPECT_EQ(obs.state().min_val[0], 0.5f);
  EXPECT_EQ(obs.state().max_val[0], 2.5f);
  EXPECT_EQ(obs.state().histogram[0], 1);
  EXPECT_EQ(obs.state().histogram[4], 1);  // 1.0 = 0.5 + 4 * 0.125
  EXPECT_EQ(obs.state().histogram[15], 20);
  ref::MegEngineSlotRef r;
  r.bins = 16;
  r.up = 4;
  r.Observe(Finite(c));
  r.Observe(Finite(c));
  r.Observe(y);
  EXPECT_TRUE(SameSlot(obs, 0, r));
}

TEST(HistogramObserverTest2, HugeGrowthMovesTheOldHistogramIntoOneBin) {
  HistogramObserverOptions o;
  o.bins = 8;
  o.upsample_rate = 2;
  HistogramObserver obs(o);
  std::vector<float> a = {1.0f, 1.0f + 0x1p-20f, 1.0f + 0x1p-21f};
  obs.Observe(TensorView::Vector(a.data(), 3), Context{});
  std::vector<float> b = {-3e38f, 3e38f};  // growth by ~2^148: no fine grid could hold it
  obs.Observe(TensorView::Vector(b.data(), 2), Context{});
  const auto& s = obs.state();
  int64_t total = 0;
  for (int64_t c : s.histogram) total += c;
  EXPECT_EQ(total, 5);
  EXPECT_EQ(s.histogram[0], 1);
  EXPECT_EQ(s.histogram[7], 1);
  EXPECT_EQ(s.histogram[4], 3);  // the old values near 1 sit just right of the middle
  EXPECT_LE(s.min_val[0], -3e38f);
  EXPECT_GE(s.max_val[0], 3e38f);
  // f32(max - min) overflows: the bin width comes from the float64 difference, so the search
  // and the qparams still see finite values.
  float lo, hi;
  obs.ComputeRange(QuantSpec{}, &lo, &hi);
  EXPECT_TRUE(std::isfinite(lo) && std::isfinite(hi)) << lo << " " << hi;
}

TEST(HistogramObserverTest2, ComputeRangeAndQParamsUseTheL2SearchAndChooseQParams) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  HistogramObserver obs;
  for (int k = 0; k < 3; ++k) {
    auto x = Batch(rng, 20000, -1.0f - k, 1.5f + 2 * k, false);
    x[7] = 40.0f;  // an outlier the search should clip
    obs.Observe(TensorView::Vector(x.data(), 20000), Context{2});
  }
  const auto& s = obs.state();
  for (const QuantSpec& spec : {QuantSpec{},
                                [] {
                                  QuantSpec q;
                                  q.narrow_range = true;
                                  return q;
                                }(),
                                [] {
                                  QuantSpec q;
                                  q.bits = 4;
                                  return q;
                                }()}) {
    const int64_t dst = spec.QuantMax() - spec.QuantMin() + 1;  // 256, 255, 16
    const auto want = ref::L2SearchRef(s.histogram, s.min_val[0], s.max_val[0], dst);
    float lo, hi;
    obs.ComputeRange(spec, &lo, &hi);
    EXPECT_EQ(lo, want.new_min);
    EXPECT_EQ(hi, want.new_max);
    // MegEngine's _calculate_qparams rule.
    QParamsRule rule;
    rule.eps = 1e-5f;
    rule.zero_point_rounding = Rounding::kHalfAwayFromZero;
    rule.clamp_zero_point = false;
    float scale, zp;
    obs.ComputeQParams(spec, rule, &scale, &zp);
    const QParams q = ChooseQParams(lo, hi, spec, rule);
    EXPECT_EQ(scale, q.scale);
    EXPECT_EQ(zp, q.zero_point);
  }
  // A fixed dst_nbins (PyTorch: 256) ignores the spec's range.
  HistogramObserverOptions o;
  o.dst_nbins = 256;
  HistogramObserver fixed(o, s);
  QuantSpec q4;
  q4.bits = 4;
  float lo, hi;
  fixed.ComputeRange(q4, &lo, &hi);
  const auto want = ref::L2SearchRef(s.histogram, s.min_val[0], s.max_val[0], 256);
  EXPECT_EQ(lo, want.new_min);
  EXPECT_EQ(hi, want.new_max);
}

TEST(HistogramObserverTest2, ProtocolOnShardsEqualsObserveOfTheConcatenation) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  for (int axis : {-1, 0}) {
    HistogramObserverOptions o;
    o.bins = 512;
    o.upsample_rate = 32;
    if (axis >= 0) o.layout = ParamLayout::PerChannel(axis);
    HistogramObserver single(o), rank_a(o), rank_b(o);
    const float ranges[][2] = {{-1, 1}, {-2, 0.5f}, {-0.1f, 0.1f}, {-5, 7}, {-5, 7}};
    for (const auto& rg : ranges) {
      // Two shards of shape [2, n] each; the concatenation along dim 1 is [2, na + nb].
      const int64_t na = 300, nb = 211;
      auto a = Batch(rng, 2 * na, rg[0], rg[1] * 0.5f, true);
      auto b = Batch(rng, 2 * nb, rg[0] * 0.3f, rg[1], false);
      std::vector<float> cat;
      for (int r = 0; r < 2; ++r) {
        cat.insert(cat.end(), a.begin() + r * na, a.begin() + (r + 1) * na);
        cat.insert(cat.end(), b.begin() + r * nb, b.begin() + (r + 1) * nb);
      }
      const TensorView va = TensorView::Contiguous(a.data(), DType::kFloat32, {2, na});
      const TensorView vb = TensorView::Contiguous(b.data(), DType::kFloat32, {2, nb});
      const Context ctx{2};
      single.Observe(TensorView::Contiguous(cat.data(), DType::kFloat32, {2, na + nb}), ctx);
      const RangeStats merged =
          HistogramObserver::MergeRange(rank_a.BatchRange(va, ctx), rank_b.BatchRange(vb, ctx));
      // Through the all_reduce buffers, as torch.distributed would carry them.
      const auto fl = merged.FlattenFloats();
      const auto ct = merged.FlattenCounts();
      const RangeStats carried = RangeStats::Unflatten(fl.data(), static_cast<int64_t>(fl.size()),
                                                       ct.data(), static_cast<int64_t>(ct.size()));
      const auto counts = HistogramObserver::MergeCounts(rank_a.BatchCounts(va, carried, ctx),
                                                         rank_b.BatchCounts(vb, carried, ctx));
      rank_a.Commit(carried, counts);
      rank_b.Commit(carried, counts);
      for (const HistogramObserver* r : {&rank_a, &rank_b}) {
        EXPECT_EQ(r->state().min_val, single.state().min_val);
        EXPECT_EQ(r->state().max_val, single.state().max_val);
        EXPECT_EQ(r->state().histogram, single.state().histogram);
        EXPECT_EQ(r->state().num_batches, single.state().num_batches);
        EXPECT_EQ(r->nonfinite_count(), single.nonfinite_count());
      }
    }
  }
}

TEST(HistogramObserverTest2, MergeIsExactForEqualRangesAndRefusesOthers) {
  std::vector<float> x = {-1.0f, 0.0f, 0.25f, 3.0f};
  std::vector<float> y = {-1.0f, 2.0f, 3.0f};
  HistogramObserverOptions o;
  o.bins = 8;
  HistogramObserver a(o), b(o), both(o);
  a.Observe(TensorView::Vector(x.data(), 4), Context{});
  b.Observe(TensorView::Vector(y.data(), 3), Context{});
  const auto m = HistogramObserver::Merge(a, b);
  int64_t total = 0;
  for (int64_t c : m.state().histogram) total += c;
  EXPECT_EQ(total, 7);
  EXPECT_EQ(m.state().num_batches[0], 2);
  EXPECT_EQ(m.state().min_val[0], -1.0f);
  // Empty sides.
  HistogramObserver e(o);
  EXPECT_EQ(HistogramObserver::Merge(e, a).state().histogram, a.state().histogram);
  EXPECT_EQ(HistogramObserver::Merge(a, e).state().histogram, a.state().histogram);
  // Different ranges: refused.
  std::vector<float> z = {0.0f, 1.0f};
  HistogramObserver c(o);
  c.Observe(TensorView::Vector(z.data(), 2), Context{});
  EXPECT_THROW(HistogramObserver::Merge(a, c), InvalidArgument);
  HistogramObserverOptions o2 = o;
  o2.bins = 16;
  EXPECT_THROW(HistogramObserver::Merge(a, HistogramObserver(o2)), InvalidArgument);
}

TEST(HistogramObserverTest2, SaveLoadAndJsonRoundTripsAndCorruptionIsRejected) {
  QKIT_SEED_TRACE();
  auto rng = MakeRng();
  HistogramObserverOptions o;
  o.layout = ParamLayout::PerChannel(1);
  o.bins = 32;
  o.upsample_rate = 4;
  o.dst_nbins = 200;
  o.error_on_nonfinite = false;
  HistogramObserver obs(o);
  for (int k = 0; k < 3; ++k) {
    auto x = Batch(rng, 60, -1.0f - k, 1.0f + k, k == 1);
    obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {20, 3}), Context{});
  }
  auto same = [&](const HistogramObserver& t) {
    EXPECT_EQ(t.options().bins, 32);
    EXPECT_EQ(t.options().upsample_rate, 4);
    EXPECT_EQ(t.options().dst_nbins, 200);
    EXPECT_EQ(t.options().layout.granularity, Granularity::kPerChannel);
    EXPECT_EQ(t.options().layout.axis, 1);
    EXPECT_EQ(t.state().min_val, obs.state().min_val);
    EXPECT_EQ(t.state().max_val, obs.state().max_val);
    EXPECT_EQ(t.state().histogram, obs.state().histogram);
    EXPECT_EQ(t.state().num_batches, obs.state().num_batches);
    EXPECT_EQ(t.nonfinite_count(), obs.nonfinite_count());
  };
  const auto blob = obs.Save();
  same(HistogramObserver::Load(blob.data(), blob.size()));
  same(HistogramObserver::FromJson(obs.ToJson()));
  for (size_t n = 0; n < blob.size(); n += 7) {
    EXPECT_THROW(HistogramObserver::Load(blob.data(), n), DataLoss) << n;
  }
  for (size_t i = 0; i < blob.size(); i += 5) {
    auto bad = blob;
    bad[i] ^= 0x40;
    EXPECT_THROW(HistogramObserver::Load(bad.data(), bad.size()), DataLoss) << i;
  }
  EXPECT_THROW(HistogramObserver::FromJson("{"), InvalidArgument);
  EXPECT_THROW(HistogramObserver::FromJson("[]"), InvalidArgument);
  std::string j = obs.ToJson();
  const auto pos = j.find("\"histogram\":[");
  ASSERT_NE(pos, std::string::npos);
  std::string neg = j;
  neg.insert(pos + 13, "-5,");  // a negative count (and one entry too many)
  EXPECT_THROW(HistogramObserver::FromJson(neg), InvalidArgument);
  std::string neg2 = j;
  const auto end = neg2.find_first_of(",]", pos + 13);
  neg2.replace(pos + 13, end - (pos + 13), "-5");  // same length, first count negative
  EXPECT_THROW(HistogramObserver::FromJson(neg2), InvalidArgument);
  std::string kind = j;
  kind.replace(kind.find("qkit.HistogramObserver"), 22, "qkit.MinMaxObserver!!!");
  EXPECT_THROW(HistogramObserver::FromJson(kind), InvalidArgument);
  std::string comb = j;
  comb.replace(comb.find("\"megengine\""), 11, "\"pytorch2x\"");
  EXPECT_THROW(HistogramObserver::FromJson(comb), InvalidArgument);
}

TEST(HistogramObserverTest2, ErrorsLeaveTheStateUnchanged) {
  EXPECT_THROW(HistogramObserver({ParamLayout::PerTensor(), 0}), InvalidArgument);
  HistogramObserverOptions bad;
  bad.upsample_rate = 0;
  EXPECT_THROW(HistogramObserver{bad}, InvalidArgument);
  bad = {};
  bad.layout = ParamLayout::PerGroup(0, 4);
  EXPECT_THROW(HistogramObserver{bad}, InvalidArgument);
  bad = {};
  bad.dst_nbins = -1;
  EXPECT_THROW(HistogramObserver{bad}, InvalidArgument);
  bad = {};
  bad.combine = static_cast<HistogramCombine>(3);
  EXPECT_THROW(HistogramObserver{bad}, InvalidArgument);

  HistogramObserverOptions o;
  o.layout = ParamLayout::PerChannel(0);
  o.bins = 16;
  o.error_on_nonfinite = true;
  HistogramObserver obs(o);
  float lo[2], hi[2];
  EXPECT_THROW(obs.ComputeRange(QuantSpec{}, lo, hi), FailedPrecondition);
  std::vector<float> x = {0, 1, 2, 3, 4, 5};
  obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {2, 3}), Context{});
  const auto before = obs.Save();
  std::vector<float> with_nan = {0, NAN, 2, 3, 4, 5};
  EXPECT_THROW(
      obs.Observe(TensorView::Contiguous(with_nan.data(), DType::kFloat32, {2, 3}), Context{}),
      InvalidArgument);
  EXPECT_THROW(obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {3, 2}), Context{}),
               InvalidArgument);  // 3 slots instead of 2
  int32_t ints[2] = {1, 2};
  EXPECT_THROW(obs.Observe(TensorView::Contiguous(ints, DType::kInt32, {2, 1}), Context{}),
               InvalidArgument);
  RangeStats rs =
      obs.BatchRange(TensorView::Contiguous(x.data(), DType::kFloat32, {2, 3}), Context{});
  EXPECT_THROW(obs.Commit(rs, std::vector<int64_t>(5, 0)), InvalidArgument);  // wrong size
  std::vector<int64_t> negc(32, 0);
  negc[3] = -1;
  EXPECT_THROW(obs.Commit(rs, negc), InvalidArgument);
  EXPECT_EQ(obs.Save(), before);
  // Empty x changes nothing, whatever its shape.
  obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {0, 5}), Context{});
  EXPECT_EQ(obs.Save(), before);
  // A slot without data makes qparams fail.
  HistogramObserverOptions o2;
  o2.layout = ParamLayout::PerChannel(0);
  HistogramObserver half(o2);
  std::vector<float> hx = {1, 2, NAN, NAN};
  half.Observe(TensorView::Contiguous(hx.data(), DType::kFloat32, {2, 2}), Context{});
  QuantSpec per_ch;
  per_ch.layout = ParamLayout::PerChannel(0);
  float s[2], z[2];
  EXPECT_THROW(half.ComputeQParams(per_ch, QParamsRule{}, s, z), FailedPrecondition);
  EXPECT_EQ(half.nonfinite_count(), 2);
  // Invalid states are refused by the constructor.
  HistogramObserverState st;
  st.min_val = {0};
  st.max_val = {1};
  st.num_batches = {1};
  st.histogram = std::vector<int64_t>(2048, 0);  // no counts in a non-empty slot
  EXPECT_THROW(HistogramObserver(HistogramObserverOptions{}, st), InvalidArgument);
}

}  // namespace
}  // namespace qkit
