// MinMaxObserver and RangeStats: running min/max against the scalar reference bit for bit,
// the SPEC 10.2 parameters, state-level Merge and the distributed protocol, serialization,
// and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpp/observer_test_util.h"
#include "qkit/error.h"
#include "qkit/observers/minmax_observer.h"
#include "qkit/serialize.h"
#include "reference/observer_ref.h"
#include "util/seeded_rng.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::Batch;
using test::Present;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TensorView Vec(std::vector<float>& v) { return TensorView::Vector(v.data(), v.size()); }

struct Ref {
  MinMaxObserverOptions o;
  ref::MinMaxRef mm;
  int64_t nonfinite = 0;
  void Update(const Batch& b) {
    int64_t num_slots = 0;
    const auto slot = ref::SlotOfElement(b.shape, o.layout, &num_slots);
    mm.Update(ref::BatchRanges(b.values, slot, num_slots, o.nonfinite, &nonfinite));
  }
  ::testing::AssertionResult Matches(const MinMaxObserverState& s) const {
    if (s.nonfinite_count != nonfinite) {
      return ::testing::AssertionFailure()
             << "nonfinite_count " << s.nonfinite_count << ", reference " << nonfinite;
    }
    int64_t total = 0;
    for (int64_t c : mm.count) total += c;
    if (s.min_val.empty()) {
      return total == 0 ? ::testing::AssertionSuccess()
                        : ::testing::AssertionFailure() << "state unsized";
    }
    if (s.num_batches != mm.count) return ::testing::AssertionFailure() << "counts differ";
    for (size_t p = 0; p < s.min_val.size(); ++p) {
      const float wmin = mm.count[p] ? mm.min_val[p] : 0.0f;
      const float wmax = mm.count[p] ? mm.max_val[p] : 0.0f;
      if (!test::SameFloat(wmin, s.min_val[p]) || !test::SameFloat(wmax, s.max_val[p])) {
        return ::testing::AssertionFailure()
               << "slot " << p << ": got [" << s.min_val[p] << ", " << s.max_val[p]
               << "], reference [" << wmin << ", " << wmax << "]";
      }
    }
    return ::testing::AssertionSuccess();
  }
};

struct SeqConfig {
  ParamLayout layout;
  int64_t channels;
  int64_t inner;
  int64_t fixed_rows;
};

std::vector<SeqConfig> SeqConfigs() {
  return {{ParamLayout::PerTensor(), 3, 5, 0},
          {ParamLayout::PerChannel(1), 1, 7, 0},
          {ParamLayout::PerChannel(1), 3, 5, 0},
          {ParamLayout::PerChannel(-2), 64, 3, 0},
          {ParamLayout::PerChannel(0), 3, 4, 5},
          {ParamLayout::PerGroup(2, 4), 3, 10, 2}};
}

void RunAgainstReference(const MinMaxObserverOptions& opt, const SeqConfig& cfg, Present how,
                         int threads, std::mt19937_64& rng, int num_batches) {
  MinMaxObserver obs(opt);
  Ref ref{opt, {}, 0};
  auto seq = test::RandomSequence(rng, cfg.channels, cfg.inner, num_batches, true, cfg.fixed_rows);
  for (size_t b = 0; b < seq.size(); ++b) {
    SCOPED_TRACE(testing::Message() << "batch " << b << " (" << seq[b].kind << "), "
                                    << test::PresentName(how) << ", threads " << threads);
    auto h = test::MakeView(seq[b], how);
    obs.Observe(h.view, Context{threads});
    ref.Update(seq[b]);
    ASSERT_TRUE(ref.Matches(obs.state()));
  }
}

TEST(MinMaxObserverReference, RandomSequencesEveryLayoutAndPolicy) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& cfg : SeqConfigs()) {
    for (NonFinite policy : {NonFinite::kSkip, NonFinite::kSkipNaN, NonFinite::kPropagate}) {
      for (Present how : {Present::kContiguous, Present::kStrided, Present::kFloat16,
                          Present::kBFloat16}) {
        for (int threads : {1, 2}) {
          SCOPED_TRACE(testing::Message() << cfg.layout.ToString() << " C=" << cfg.channels
                                          << " " << NonFiniteName(policy));
          MinMaxObserverOptions opt;
          opt.layout = cfg.layout;
          opt.nonfinite = policy;
          RunAgainstReference(opt, cfg, how, threads, rng, 10);
        }
      }
    }
  }
}

class MinMaxObserverPerTarget : public test::PerTargetTest {};
TEST_P(MinMaxObserverPerTarget, MatchesReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (NonFinite policy : {NonFinite::kSkip, NonFinite::kPropagate}) {
    MinMaxObserverOptions opt;
    opt.layout = ParamLayout::PerChannel(1);
    opt.nonfinite = policy;
    RunAgainstReference(opt, {opt.layout, 3, 33, 0}, Present::kContiguous, 2, rng, 6);
  }
}
QKIT_INSTANTIATE_PER_TARGET(MinMaxObserverPerTarget);

TEST(MinMaxObserverGolden, Spec10_2TorchParameters) {
  // SPEC 10.2, x = [-1.5, -0.75, -0.2, 0, 0.1, 0.35, 0.9, 2.0]: PyTorch MinMaxObserver qint8
  // per_tensor_symmetric gives s = 0.015686275 (2/127.5); quint8 per_tensor_affine gives
  // s = 0.013725490 (3.5/255), zp 109 (rows A and B).
  std::vector<float> x = {-1.5f, -0.75f, -0.2f, 0.0f, 0.1f, 0.35f, 0.9f, 2.0f};
  MinMaxObserver obs;
  obs.Observe(Vec(x), Context{});
  EXPECT_EQ(obs.state().min_val[0], -1.5f);
  EXPECT_EQ(obs.state().max_val[0], 2.0f);
  float s = 0, z = 0;
  QuantSpec sym;
  obs.ComputeQParams(sym, QParamsRule{}, &s, &z);
  EXPECT_EQ(s, 2.0f / 127.5f);
  EXPECT_FLOAT_EQ(s, 0.015686275f);
  EXPECT_EQ(z, 0.0f);
  QuantSpec aff;
  aff.is_signed = false;
  aff.symmetric = false;
  obs.ComputeQParams(aff, QParamsRule{}, &s, &z);
  EXPECT_EQ(s, 3.5f / 255.0f);
  EXPECT_FLOAT_EQ(s, 0.013725490f);
  EXPECT_EQ(z, 109.0f);
}

TEST(MinMaxObserverGolden, PerChannelSlotsFollowTheAxis) {
  // x[2, 3] = [[1, -2, 3], [-4, 5, -6]]: axis 1 gives [-4, 1], [-2, 5], [-6, 3]; axis 0 gives
  // [-2, 3], [-6, 5]; groups of 2 along axis 1 give [[-2, 1], [3, 3], [-4, 5], [-6, -6]].
  std::vector<float> x = {1, -2, 3, -4, 5, -6};
  const auto view = TensorView::Contiguous(x.data(), DType::kFloat32, {2, 3});
  MinMaxObserver c1({ParamLayout::PerChannel(1)});
  c1.Observe(view, Context{});
  EXPECT_EQ(c1.state().min_val, (std::vector<float>{-4, -2, -6}));
  EXPECT_EQ(c1.state().max_val, (std::vector<float>{1, 5, 3}));
  MinMaxObserver c0({ParamLayout::PerChannel(0)});
  c0.Observe(view, Context{});
  EXPECT_EQ(c0.state().min_val, (std::vector<float>{-2, -6}));
  EXPECT_EQ(c0.state().max_val, (std::vector<float>{3, 5}));
  MinMaxObserver g({ParamLayout::PerGroup(1, 2)});
  g.Observe(view, Context{});
  EXPECT_EQ(g.state().min_val, (std::vector<float>{-2, 3, -4, -6}));
  EXPECT_EQ(g.state().max_val, (std::vector<float>{1, 3, 5, -6}));
}

// ---- Merge and protocol -------------------------------------------------------------------

TEST(MinMaxObserverMerge, StateMergeEqualsOneObserverOverAllBatches) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& cfg : SeqConfigs()) {
    for (NonFinite policy : {NonFinite::kSkip, NonFinite::kSkipNaN, NonFinite::kPropagate}) {
      MinMaxObserverOptions opt;
      opt.layout = cfg.layout;
      opt.nonfinite = policy;
      MinMaxObserver all(opt), a(opt), b(opt);
      auto seq = test::RandomSequence(rng, cfg.channels, cfg.inner, 10, true, cfg.fixed_rows);
      std::uniform_int_distribution<int> coin(0, 1);
      for (auto& batch : seq) {
        auto h = test::MakeView(batch, Present::kContiguous);
        all.Observe(h.view, Context{});
        (coin(rng) ? a : b).Observe(h.view, Context{});
      }
      EXPECT_EQ(MinMaxObserver::Merge(a, b).Save(), all.Save()) << cfg.layout.ToString();
      EXPECT_EQ(MinMaxObserver::Merge(b, a).Save(), all.Save()) << cfg.layout.ToString();
    }
  }
  MinMaxObserver t, c({ParamLayout::PerChannel(0)});
  EXPECT_THROW(MinMaxObserver::Merge(t, c), InvalidArgument);
  MinMaxObserverOptions prop;
  prop.nonfinite = NonFinite::kPropagate;
  EXPECT_THROW(MinMaxObserver::Merge(t, MinMaxObserver(prop)), InvalidArgument);
  std::vector<float> x3(3, 1.0f), x4(4, 1.0f);
  MinMaxObserver c3({ParamLayout::PerChannel(0)}), c4({ParamLayout::PerChannel(0)});
  c3.Observe(Vec(x3), Context{});
  c4.Observe(Vec(x4), Context{});
  EXPECT_THROW(MinMaxObserver::Merge(c3, c4), InvalidArgument);
}

TEST(MinMaxObserverProtocol, ShardsMergedEqualConcatenationBitForBit) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& cfg : SeqConfigs()) {
    if (cfg.layout.granularity == Granularity::kPerGroup) continue;  // slots span rows
    if (cfg.layout.granularity == Granularity::kPerChannel && cfg.layout.axis == 0) continue;
    for (NonFinite policy : {NonFinite::kSkip, NonFinite::kPropagate}) {
      MinMaxObserverOptions opt;
      opt.layout = cfg.layout;
      opt.nonfinite = policy;
      MinMaxObserver single(opt), rank0(opt), rank1(opt);
      auto seq = test::RandomSequence(rng, cfg.channels, cfg.inner, 10, true);
      for (auto& batch : seq) {
        const int64_t n = batch.shape[0];
        std::uniform_int_distribution<int64_t> cut(0, n);
        const int64_t a = cut(rng);
        auto shards = test::SplitRows(batch, {a, n - a});
        auto whole = test::MakeView(batch, Present::kContiguous);
        single.Observe(whole.view, Context{1});
        auto h0 = test::MakeView(shards[0], Present::kStrided);
        auto h1 = test::MakeView(shards[1], Present::kContiguous);
        const RangeStats s0 = rank0.BatchRange(h0.view, Context{2});
        const RangeStats s1 = rank1.BatchRange(h1.view, Context{1});
        rank0.Commit(MinMaxObserver::MergeRange(s0, s1));
        rank1.Commit(MinMaxObserver::MergeRange(s1, s0));
        ASSERT_EQ(rank0.Save(), single.Save()) << batch.kind;
        ASSERT_EQ(rank1.Save(), single.Save()) << batch.kind;
      }
    }
  }
}

// ---- RangeStats --------------------------------------------------------------------------

TEST(RangeStatsTest, FlattenUnflattenSimulatesAllReduceExactly) {
  // Three ranks' stats for 3 slots; one rank has nothing in slot 1, one has NaN in slot 2.
  RangeStats a{{-1.0f, kInf, 0.0f}, {2.0f, -kInf, 1.0f}, {1, 0, 1}, 2};
  RangeStats b{{-3.0f, 5.0f, kNaN}, {0.0f, 6.0f, kNaN}, {1, 1, 1}, 0};
  RangeStats c = RangeStats::Empty(3);
  c.nonfinite = 7;
  std::vector<float> f = a.FlattenFloats();
  std::vector<int64_t> n = a.FlattenCounts();
  for (const RangeStats* r : {&b, &c}) {
    const auto fr = r->FlattenFloats();
    const auto nr = r->FlattenCounts();
    for (size_t i = 0; i < f.size(); ++i) {  // a MIN that drops NaN (some backends do)
      f[i] = std::isnan(f[i]) ? fr[i] : std::isnan(fr[i]) ? f[i] : std::min(f[i], fr[i]);
    }
    for (size_t i = 0; i < n.size(); ++i) n[i] += nr[i];
  }
  const RangeStats m = RangeStats::Unflatten(f.data(), f.size(), n.data(), n.size());
  const RangeStats want = MergeRange(MergeRange(a, b), c);
  EXPECT_TRUE(test::SameFloats(want.min, m.min, "min"));
  EXPECT_TRUE(test::SameFloats(want.max, m.max, "max"));
  EXPECT_EQ(m.observed, (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(m.nonfinite, 9);
  EXPECT_EQ(m.min[0], -3.0f);
  EXPECT_EQ(m.max[1], 6.0f);
  EXPECT_TRUE(std::isnan(m.min[2]) && std::isnan(m.max[2])) << "NaN survives the MIN";
  EXPECT_FALSE(std::signbit(m.max[0])) << "max 0 comes back as +0, not -0";
}

TEST(RangeStatsTest, ErrorsNameTheProblem) {
  EXPECT_THROW(MergeRange(RangeStats::Empty(2), RangeStats::Empty(3)), InvalidArgument);
  float f[4] = {};
  int64_t n[5] = {};
  EXPECT_THROW(RangeStats::Unflatten(f, 3, n, 5), InvalidArgument);
  EXPECT_THROW(RangeStats::Unflatten(f, 4, n, 4), InvalidArgument);
  RangeStats r{{1.0f}, {0.0f}, {1}, 0};
  try {
    r.Validate("test");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("`min`=1 > `max`=0"), std::string::npos) << e.what();
  }
  RangeStats s{{0.0f}, {0.0f}, {0}, 0};  // empty slot not holding the neutral values
  EXPECT_THROW(s.Validate("test"), InvalidArgument);
  RangeStats t{{0.0f, 1.0f}, {0.0f}, {1}, 0};
  EXPECT_THROW(t.Validate("test"), InvalidArgument);
  EXPECT_THROW(RangeStats::Empty(-1), InvalidArgument);
}

TEST(RangeStatsTest, ComputeBatchRangeReportsEmptySlotsExplicitly) {
  // Slot 0 has only NaN / Inf (left out under kSkip: empty), slot 1 has data.
  std::vector<float> x = {kNaN, 1.0f, kInf, -2.0f};
  const auto v = TensorView::Contiguous(x.data(), DType::kFloat32, {2, 2});
  const RangeStats r =
      ComputeBatchRange(v, ParamLayout::PerChannel(1), NonFinite::kSkip, Context{}, "test");
  EXPECT_EQ(r.observed, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(r.min[0], kInf);
  EXPECT_EQ(r.max[0], -kInf);
  EXPECT_EQ(r.min[1], -2.0f);
  EXPECT_EQ(r.nonfinite, 2);
  const RangeStats p =
      ComputeBatchRange(v, ParamLayout::PerChannel(1), NonFinite::kSkipNaN, Context{}, "test");
  EXPECT_EQ(p.observed, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(p.min[0], kInf) << "+inf takes part under kSkipNaN";
  EXPECT_EQ(p.nonfinite, 1);
}

// ---- serialization ------------------------------------------------------------------------

std::vector<MinMaxObserver> Samples(std::mt19937_64& rng) {
  std::vector<MinMaxObserver> out;
  out.emplace_back();
  for (NonFinite policy : {NonFinite::kSkip, NonFinite::kSkipNaN, NonFinite::kPropagate}) {
    for (const auto& cfg : SeqConfigs()) {
      MinMaxObserverOptions opt;
      opt.layout = cfg.layout;
      opt.nonfinite = policy;
      MinMaxObserver obs(opt);
      for (auto& b : test::RandomSequence(rng, cfg.channels, cfg.inner, 6, true, cfg.fixed_rows)) {
        auto h = test::MakeView(b, Present::kContiguous);
        obs.Observe(h.view, Context{});
      }
      out.push_back(obs);
    }
  }
  MinMaxObserverState s;
  uint32_t bits = 0x7fa00001u;  // a NaN with a payload
  float nan_payload;
  std::memcpy(&nan_payload, &bits, 4);
  s.min_val = {-0.0f, 0.0f, nan_payload, -kInf};
  s.max_val = {0.0f, 0.0f, nan_payload, kInf};
  s.num_batches = {2, 0, 1, 4};
  s.nonfinite_count = 11;
  out.emplace_back(MinMaxObserverOptions{ParamLayout::PerChannel(-1), NonFinite::kPropagate}, s);
  return out;
}

void ExpectSame(const MinMaxObserver& a, const MinMaxObserver& b) {
  EXPECT_EQ(a.options().layout.granularity, b.options().layout.granularity);
  EXPECT_EQ(a.options().layout.axis, b.options().layout.axis);
  EXPECT_EQ(a.options().layout.group_size, b.options().layout.group_size);
  EXPECT_EQ(a.options().nonfinite, b.options().nonfinite);
  EXPECT_TRUE(test::IdenticalFloats(a.state().min_val, b.state().min_val));
  EXPECT_TRUE(test::IdenticalFloats(a.state().max_val, b.state().max_val));
  EXPECT_EQ(a.state().num_batches, b.state().num_batches);
  EXPECT_EQ(a.state().nonfinite_count, b.state().nonfinite_count);
}

TEST(MinMaxObserverSerialization, SaveLoadAndJsonRoundTripsAreBitExact) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& obs : Samples(rng)) {
    const auto blob = obs.Save();
    const auto loaded = MinMaxObserver::Load(blob.data(), blob.size());
    ExpectSame(obs, loaded);
    EXPECT_EQ(loaded.Save(), blob);
    const std::string json = obs.ToJson();
    const auto parsed = MinMaxObserver::FromJson(json);
    ExpectSame(obs, parsed);
    EXPECT_EQ(parsed.ToJson(), json);
  }
}

TEST(MinMaxObserverSerialization, EveryTruncationAndByteFlipIsRejected) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const auto blob = Samples(rng).back().Save();
  for (size_t n = 0; n < blob.size(); ++n) {
    EXPECT_THROW(MinMaxObserver::Load(blob.data(), n), DataLoss) << "length " << n;
  }
  for (size_t i = 0; i < blob.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80}) {
      auto bad = blob;
      bad[i] ^= flip;
      EXPECT_THROW(MinMaxObserver::Load(bad.data(), bad.size()), DataLoss) << "byte " << i;
    }
  }
  // A well-formed blob (valid checksum) whose state is inconsistent is DataLoss too.
  BlobWriter w(MinMaxObserver::kKind, MinMaxObserver::kStateVersion);
  w.U8(0);
  w.I64(0);
  w.I64(0);
  w.U8(0);
  w.F32Vector({3.0f});
  w.F32Vector({1.0f});  // min > max
  w.I64Vector({1});
  w.I64(0);
  const auto crafted = w.Finish();
  EXPECT_THROW(MinMaxObserver::Load(crafted.data(), crafted.size()), DataLoss);
  BlobWriter w2(MinMaxObserver::kKind, MinMaxObserver::kStateVersion);
  w2.U8(9);  // not a Granularity
  const auto crafted2 = w2.Finish();
  EXPECT_THROW(MinMaxObserver::Load(crafted2.data(), crafted2.size()), DataLoss);
}

TEST(MinMaxObserverSerialization, MalformedJsonIsRejectedNamingTheField) {
  MinMaxObserver obs;
  std::vector<float> x = {1.0f, -2.0f};
  obs.Observe(Vec(x), Context{});
  const std::string good = obs.ToJson();
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  };
  const std::pair<std::string, std::string> cases[] = {
      {"{\"kind\":", "malformed"},
      {"null", "object"},
      {replaced("\"min_val\":[-2.0]", "\"min_val\":[\"-2\"]"), "state.min_val[0]"},
      {replaced("\"min_val\":[-2.0]", "\"min_val\":[\"nan:0x00000001\"]"), "state.min_val[0]"},
      {replaced("\"min_val\":[-2.0]", "\"min_val\":[1e300]"), "state.min_val[0]"},
      {replaced("\"min_val\":[-2.0]", "\"min_val\":{}"), "state.min_val"},
      {replaced("\"num_batches\":[1]", "\"num_batches\":[1.5]"), "state.num_batches[0]"},
      {replaced("\"num_batches\":[1]", "\"num_batches\":[18446744073709551615]"),
       "state.num_batches[0]"},
      {replaced("\"per_tensor\"", "\"per_row\""), "options.layout.granularity"},
      {replaced("\"skip\"", "\"ignore\""), "options.nonfinite"},
      {replaced(",\"group_size\":0", ""), "options.layout.group_size"},
      {replaced("\"max_val\":[1.0]", "\"max_val\":[-3.0]"), "`min_val`=-2 > `max_val`=-3"},
  };
  for (const auto& [text, needle] : cases) {
    try {
      MinMaxObserver::FromJson(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << e.what() << " (wanted " << needle << ")";
    }
  }
}

// ---- errors, empty and degenerate inputs ----------------------------------------------------

TEST(MinMaxObserverErrors, ThrowingCallsLeaveTheStateUnchanged) {
  MinMaxObserver obs({ParamLayout::PerChannel(0)});
  std::vector<float> x = {1.0f, -1.0f, 2.0f};
  obs.Observe(Vec(x), Context{});
  const auto before = obs.Save();
  std::vector<float> y = {1.0f, 2.0f};
  try {
    obs.Observe(Vec(y), Context{});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("MinMaxObserver::Observe"), std::string::npos) << m;
    EXPECT_NE(m.find("2 slots"), std::string::npos) << m;
    EXPECT_NE(m.find("had 3"), std::string::npos) << m;
  }
  EXPECT_THROW(obs.BatchRange(Vec(y), Context{}), InvalidArgument);
  EXPECT_THROW(obs.Commit(RangeStats{{0.0f, 0.0f}, {1.0f, 1.0f}, {1, 1}, 0}), InvalidArgument);
  std::vector<uint16_t> q = {1, 2, 3};
  try {
    obs.Observe(TensorView::Contiguous(q.data(), DType::kInt16, {3}), Context{});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("int16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(obs.Observe(Vec(x), Context{0}), InvalidArgument);
  EXPECT_EQ(obs.Save(), before);
  std::vector<float> none;
  obs.Observe(TensorView::Contiguous(none.data(), DType::kFloat32, {0, 5}), Context{});
  EXPECT_EQ(obs.Save(), before) << "an empty batch changes nothing, whatever its slot count";
  try {
    MinMaxObserver bad({ParamLayout::PerGroup(0, -3)});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("`layout.group_size`=-3"), std::string::npos);
  }
}

TEST(MinMaxObserverEdges, EmptySlotsAndDegenerateRanges) {
  MinMaxObserver obs({ParamLayout::PerChannel(1)});
  QuantSpec spec;
  spec.layout = ParamLayout::PerChannel(1);
  float s[2], z[2];
  EXPECT_THROW(obs.ComputeQParams(spec, QParamsRule{}, s, z), FailedPrecondition);
  // Channel 0 all NaN: it stays empty, and qparams are refused naming the slot.
  std::vector<float> x = {kNaN, 0.0f, kNaN, 0.0f};
  obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {2, 2}), Context{});
  EXPECT_EQ(obs.state().num_batches, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(obs.nonfinite_count(), 2);
  try {
    obs.ComputeQParams(spec, QParamsRule{}, s, z);
    ADD_FAILURE();
  } catch (const FailedPrecondition& e) {
    EXPECT_NE(std::string(e.what()).find("slot 0"), std::string::npos) << e.what();
  }
  // All-zero channel 1 and a constant channel 0: the rule's degenerate value (eps = 2^-23).
  std::vector<float> c = {-0.5f, 0.0f, -0.5f, -0.0f};
  obs.Observe(TensorView::Contiguous(c.data(), DType::kFloat32, {2, 2}), Context{});
  obs.ComputeQParams(spec, QParamsRule{}, s, z);
  EXPECT_EQ(s[0], 0.5f / 127.5f);
  EXPECT_EQ(s[1], 1.1920928955078125e-07f);
  EXPECT_FALSE(std::signbit(obs.state().max_val[1])) << "zero extremes are +0";
  // A non-finite range (kSkipNaN lets +inf in) is refused by ChooseQParams.
  MinMaxObserver inf_obs({ParamLayout::PerTensor(), NonFinite::kSkipNaN});
  std::vector<float> xi = {1.0f, kInf};
  inf_obs.Observe(Vec(xi), Context{});
  float s1, z1;
  EXPECT_THROW(inf_obs.ComputeQParams(QuantSpec{}, QParamsRule{}, &s1, &z1), InvalidArgument);
  obs.Reset();
  EXPECT_EQ(obs.num_slots(), 0);
  EXPECT_TRUE(obs.empty());
}

}  // namespace
}  // namespace qkit
