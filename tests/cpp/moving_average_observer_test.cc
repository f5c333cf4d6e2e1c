// MovingAverageObserver: every variant against its scalar reference (tests/reference/
// observer_ref.h) bit for bit over random multi-batch sequences, the SPEC 10.4 goldens, the
// OneFlow gate and re-initialisation quirks, Distiller's bias correction, the distributed
// protocol on shards, serialization, and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpp/observer_test_util.h"
#include "qkit/error.h"
#include "qkit/observers/moving_average_observer.h"
#include "reference/observer_ref.h"
#include "util/seeded_rng.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::Batch;
using test::Present;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct VariantCase {
  const char* name;
  MovingAverageObserverOptions options;
};

std::vector<VariantCase> Variants() {
  return {{"oneflow_symmetric", MovingAverageObserverOptions::OneFlow(true)},
          {"oneflow_affine", MovingAverageObserverOptions::OneFlow(false)},
          {"megengine_ema", MovingAverageObserverOptions::MegEngine()},
          {"torch", MovingAverageObserverOptions::Torch()},
          {"distiller", MovingAverageObserverOptions::Distiller()}};
}

// The reference of one variant behind one interface.
struct AnyRef {
  MovingAverageObserverOptions o;
  ref::OneFlowRef oneflow;
  ref::MegEngineRef megengine;
  ref::TorchRef torch;
  ref::DistillerRef distiller;
  int64_t nonfinite = 0;

  explicit AnyRef(const MovingAverageObserverOptions& opt) : o(opt) {
    oneflow.symmetric = opt.range == RunningRange::kAbsMax;
    oneflow.momentum = opt.Momentum();
    oneflow.stop_update_after_iters = opt.StopUpdateAfterIters().value_or(INT64_MAX);
    megengine.momentum = opt.Momentum();
    torch.averaging_constant = opt.Momentum();
    distiller.ema_decay = opt.Momentum();
  }

  // `x` in row-major order with its shape; the gate as the observer sees it.
  void Update(const Batch& b, const UpdateGate& gate) {
    int64_t num_slots = 0;
    const auto slot = ref::SlotOfElement(b.shape, o.layout, &num_slots);
    const bool open = gate.training && (!o.StopUpdateAfterIters() ||
                                        gate.current_train_step <= *o.StopUpdateAfterIters());
    if (!open) return;  // gated-out batches are not looked at
    int64_t nf = 0;
    const auto r = ref::BatchRanges(b.values, slot, num_slots, o.nonfinite, &nf);
    nonfinite += nf;
    switch (o.variant) {
      case MovingAverageVariant::kOneFlow:
        oneflow.Update(r, gate.training, gate.current_train_step);
        break;
      case MovingAverageVariant::kMegEngineEma: megengine.Update(r); break;
      case MovingAverageVariant::kTorch: torch.Update(r); break;
      case MovingAverageVariant::kDistiller: distiller.Update(r); break;
    }
  }

  // Per-slot (count, min, max, biased_min, biased_max) of the reference.
  int64_t Count(size_t p) const {
    switch (o.variant) {
      case MovingAverageVariant::kOneFlow: return p < oneflow.count.size() ? oneflow.count[p] : 0;
      case MovingAverageVariant::kMegEngineEma:
        return p < megengine.count.size() ? megengine.count[p] : 0;
      case MovingAverageVariant::kTorch: return p < torch.count.size() ? torch.count[p] : 0;
      case MovingAverageVariant::kDistiller:
        return p < distiller.iter_count.size() ? static_cast<int64_t>(distiller.iter_count[p])
                                               : 0;
    }
    return 0;
  }
  int64_t TotalCount() const {
    int64_t t = 0;
    for (size_t p = 0; p < 4096; ++p) t += Count(p);
    return t;
  }

  ::testing::AssertionResult Matches(const MovingAverageObserverState& s) const {
    if (s.nonfinite_count != nonfinite) {
      return ::testing::AssertionFailure()
             << "nonfinite_count " << s.nonfinite_count << ", reference " << nonfinite;
    }
    if (s.min_val.empty()) {
      if (TotalCount() != 0) return ::testing::AssertionFailure() << "state unsized";
      return ::testing::AssertionSuccess();
    }
    for (size_t p = 0; p < s.min_val.size(); ++p) {
      const int64_t c = Count(p);
      if (s.num_updates[p] != c) {
        return ::testing::AssertionFailure()
               << "slot " << p << ": num_updates " << s.num_updates[p] << ", reference " << c;
      }
      float want_min = 0, want_max = 0, want_bmin = 0, want_bmax = 0;
      if (c > 0) {
        switch (o.variant) {
          case MovingAverageVariant::kOneFlow:
            want_min = oneflow.moving_min[p];
            want_max = oneflow.moving_max[p];
            break;
          case MovingAverageVariant::kMegEngineEma:
            want_min = megengine.min_val[p];
            want_max = megengine.max_val[p];
            break;
          case MovingAverageVariant::kTorch:
            want_min = torch.min_val[p];
            want_max = torch.max_val[p];
            break;
          case MovingAverageVariant::kDistiller:
            want_min = distiller.tracked_min[p];
            want_max = distiller.tracked_max[p];
            want_bmin = distiller.tracked_min_biased[p];
            want_bmax = distiller.tracked_max_biased[p];
            break;
        }
      }
      const bool ok = test::SameFloat(want_min, s.min_val[p]) &&
                      test::SameFloat(want_max, s.max_val[p]);
      bool ok_b = true;
      if (o.variant == MovingAverageVariant::kDistiller) {
        ok_b = test::SameFloat(want_bmin, s.biased_min[p]) &&
               test::SameFloat(want_bmax, s.biased_max[p]);
      }
      if (!ok || !ok_b) {
        return ::testing::AssertionFailure()
               << "slot " << p << ": got [" << s.min_val[p] << ", " << s.max_val[p]
               << "], reference [" << want_min << ", " << want_max << "] (count " << c << ")";
      }
    }
    return ::testing::AssertionSuccess();
  }
};

TensorView Vec(std::vector<float>& v) { return TensorView::Vector(v.data(), v.size()); }

// ---- SPEC 10.4 goldens -----------------------------------------------------------------------
// Batches (min, max) = (-1, 2), (-0.5, 1), (-3, 4). Every literal below is from SPEC.md 10.4
// (printed by shared/compute_examples.py, an independent float32 emulation in Python).
std::vector<std::vector<float>> Batches10_4() {
  return {{2.0f, -1.0f, 0.5f}, {-0.5f, 0.25f, 1.0f}, {4.0f, 0.0f, -3.0f}};
}

TEST(MovingAverageGolden, OneFlowSymmetric_10_4) {
  // OneFlow symmetric, momentum 0.95, stop_update_after_iters 1, steps 0, 1, 2 (SPEC 10.4 row 1).
  MovingAverageObserver obs(MovingAverageObserverOptions::OneFlow(true));
  const float want_max[] = {2.0f, 1.9500000476837158f, 1.9500000476837158f};
  const float want_scale[] = {0.015748031437397003f, 0.015354330651462078f,
                              0.015354330651462078f};
  QuantSpec spec;  // qint8, symmetric; OneFlow google: scale = moving_max / 127, no epsilon
  QParamsRule rule;
  rule.divisor = SymmetricDivisor::kQuantMax;
  rule.degenerate = DegenerateRule::kNone;
  auto batches = Batches10_4();
  for (int step = 0; step < 3; ++step) {
    obs.Observe(Vec(batches[step]), Context{}, UpdateGate{true, step});
    EXPECT_EQ(obs.state().max_val[0], want_max[step]) << "step " << step;
    EXPECT_EQ(obs.state().min_val[0], want_max[step]) << "moving_min = moving_max";
    float s = 0, z = 0;
    obs.ComputeQParams(spec, rule, &s, &z);
    EXPECT_EQ(s, want_scale[step]) << "step " << step;
    EXPECT_EQ(z, 0.0f);
  }
  EXPECT_EQ(obs.state().num_updates[0], 2) << "step 2 > stop_update_after_iters: frozen";
}

TEST(MovingAverageGolden, TorchQuint8Affine_10_4) {
  // PyTorch MovingAverageMinMaxObserver quint8 affine, c = 0.01 (SPEC 10.4 row 2).
  MovingAverageObserver obs(MovingAverageObserverOptions::Torch());
  const float want_min[] = {-1.0f, -0.9950000047683716f, -1.0150500535964966f};
  const float want_max[] = {2.0f, 1.9900000095367432f, 2.0101001262664795f};
  const float want_scale[] = {0.0117647061124444f, 0.011705882847309113f, 0.011863334104418755f};
  const float want_zp[] = {85.0f, 85.0f, 86.0f};
  QuantSpec spec;  // docs/qparams.md preset "PyTorch observers, affine"
  spec.is_signed = false;  // quint8 [0, 255]
  spec.symmetric = false;
  spec.scale_mode = ScaleMode::kMultiplyReciprocal;
  QParamsRule rule;  // widen to 0, eps 2^-23, RNE, clamped zero point: PyTorch's rule
  auto batches = Batches10_4();
  for (int b = 0; b < 3; ++b) {
    obs.Observe(Vec(batches[b]), Context{});
    EXPECT_EQ(obs.state().min_val[0], want_min[b]) << "batch " << b;
    EXPECT_EQ(obs.state().max_val[0], want_max[b]) << "batch " << b;
    float s = 0, z = 0;
    obs.ComputeQParams(spec, rule, &s, &z);
    EXPECT_EQ(s, want_scale[b]) << "batch " << b;
    EXPECT_EQ(z, want_zp[b]) << "batch " << b;
  }
}

TEST(MovingAverageGolden, MegEngineEma_10_4) {
  // MegEngine ExponentialMovingAverageObserver qint8, momentum 0.9, eps 1e-5 (SPEC 10.4 row 3).
  MovingAverageObserver obs(MovingAverageObserverOptions::MegEngine());
  const float want_min[] = {-1.0f, -0.949999988079071f, -1.1549999713897705f};
  const float want_max[] = {2.0f, 1.899999976158142f, 2.1100001335144043f};
  const float want_scale[] = {0.01568627543747425f, 0.014901960268616676f,
                              0.016549021005630493f};
  QuantSpec spec;  // docs/qparams.md preset "MegEngine": qint8 [-128, 127], divisor 127.5
  spec.rounding = Rounding::kHalfAwayFromZero;
  QParamsRule rule;
  rule.eps = 1e-5f;
  rule.zero_point_rounding = Rounding::kHalfAwayFromZero;
  rule.clamp_zero_point = false;
  auto batches = Batches10_4();
  for (int b = 0; b < 3; ++b) {
    obs.Observe(Vec(batches[b]), Context{});
    EXPECT_EQ(obs.state().min_val[0], want_min[b]) << "batch " << b;
    EXPECT_EQ(obs.state().max_val[0], want_max[b]) << "batch " << b;
    float s = 0, z = 0;
    obs.ComputeQParams(spec, rule, &s, &z);
    EXPECT_EQ(s, want_scale[b]) << "batch " << b;
  }
}

TEST(MovingAverageGolden, DistillerEma_10_4) {
  // Distiller FakeLinearQuantization SYMMETRIC, ema_decay 0.999, bias-corrected
  // (SPEC 10.4 row 4); scale is Distiller's multiplier 127.5 / max_abs.
  MovingAverageObserver obs(MovingAverageObserverOptions::Distiller());
  const float want_min[] = {-1.0f, -0.7498798966407776f, -1.5006579160690308f};
  const float want_max[] = {2.0f, 1.4997597932815552f, 2.3339860439300537f};
  const float want_scale[] = {63.75f, 85.01361083984375f, 54.6275749206543f};
  QuantSpec spec;  // docs/qparams.md preset "Distiller SYMMETRIC" (257 levels at 8 bits)
  spec.quant_min_override = -128;
  spec.quant_max_override = 128;
  spec.scale_mode = ScaleMode::kMultiplier;
  spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
  QParamsRule rule;
  rule.divisor = SymmetricDivisor::kHalfFullRange;
  rule.degenerate = DegenerateRule::kOneIfZeroRange;
  auto batches = Batches10_4();
  for (int b = 0; b < 3; ++b) {
    obs.Observe(Vec(batches[b]), Context{});
    EXPECT_EQ(obs.state().min_val[0], want_min[b]) << "batch " << b;
    EXPECT_EQ(obs.state().max_val[0], want_max[b]) << "batch " << b;
    EXPECT_EQ(obs.state().num_updates[0], b + 1) << "Distiller's iter_count";
    float s = 0, z = 0;
    obs.ComputeQParams(spec, rule, &s, &z);
    EXPECT_EQ(s, want_scale[b]) << "batch " << b;
  }
}

// ---- randomized sequences against the references ---------------------------------------------

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
          {ParamLayout::PerGroup(2, 4), 3, 10, 2}};
}

// Runs `num_batches` random batches through an observer and the reference, checking after
// every batch. Gates are random for every variant that has a step gate.
void RunAgainstReference(const MovingAverageObserverOptions& opt, const SeqConfig& cfg,
                         Present how, int threads, std::mt19937_64& rng, int num_batches) {
  MovingAverageObserver obs(opt);
  AnyRef ref(opt);
  auto seq = test::RandomSequence(rng, cfg.channels, cfg.inner, num_batches, true, cfg.fixed_rows);
  std::uniform_int_distribution<int> coin(0, 9);
  int64_t step = 0;
  for (size_t b = 0; b < seq.size(); ++b) {
    SCOPED_TRACE(testing::Message() << "batch " << b << " (" << seq[b].kind << "), "
                                    << test::PresentName(how) << ", threads " << threads);
    auto holder = test::MakeView(seq[b], how);
    UpdateGate gate;
    gate.training = coin(rng) != 0;
    gate.current_train_step = step;
    if (coin(rng) < 7) ++step;
    obs.Observe(holder.view, Context{threads}, gate);
    ref.Update(seq[b], gate);
    ASSERT_TRUE(ref.Matches(obs.state()));
  }
}

TEST(MovingAverageReference, RandomSequencesEveryVariantLayoutAndPolicy) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& v : Variants()) {
    for (const auto& cfg : SeqConfigs()) {
      for (NonFinite policy : {NonFinite::kSkip, NonFinite::kSkipNaN, NonFinite::kPropagate}) {
        for (int threads : {1, 2}) {
          SCOPED_TRACE(testing::Message() << v.name << " " << cfg.layout.ToString() << " C="
                                          << cfg.channels << " " << NonFiniteName(policy));
          auto opt = v.options;
          opt.layout = cfg.layout;
          opt.nonfinite = policy;
          if (opt.variant == MovingAverageVariant::kOneFlow) {
            opt.stop_update_after_iters = 6;  // let the gate open and close within the run
          }
          RunAgainstReference(opt, cfg, Present::kContiguous, threads, rng, 14);
        }
      }
    }
  }
}

TEST(MovingAverageReference, NonDefaultMomentaAndStepGates) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& v : Variants()) {
    for (float m : {0.0f, 0.5f, 0.9990001f}) {
      auto opt = v.options;
      opt.momentum = m;
      opt.layout = ParamLayout::PerChannel(1);
      opt.stop_update_after_iters = 3;  // also gates the non-OneFlow variants
      RunAgainstReference(opt, SeqConfigs()[2], Present::kContiguous, 1, rng, 10);
    }
    if (v.options.variant != MovingAverageVariant::kDistiller) {
      auto opt = v.options;
      opt.momentum = 1.0f;
      RunAgainstReference(opt, SeqConfigs()[0], Present::kContiguous, 1, rng, 8);
    }
  }
}

TEST(MovingAverageReference, StridedAndHalfInputs) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& v : Variants()) {
    for (Present how : {Present::kStrided, Present::kFloat16, Present::kBFloat16}) {
      auto opt = v.options;
      opt.layout = ParamLayout::PerChannel(1);
      RunAgainstReference(opt, SeqConfigs()[2], how, 2, rng, 8);
    }
  }
}

// Each SIMD target through the observer (the reductions dispatch per target).
class MovingAveragePerTarget : public test::PerTargetTest {};
TEST_P(MovingAveragePerTarget, MatchesReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& v : Variants()) {
    auto opt = v.options;
    opt.layout = ParamLayout::PerChannel(1);
    opt.nonfinite = NonFinite::kSkip;
    RunAgainstReference(opt, {ParamLayout::PerChannel(1), 3, 33, 0}, Present::kContiguous, 2,
                        rng, 6);
  }
}
QKIT_INSTANTIATE_PER_TARGET(MovingAveragePerTarget);

// ---- the update order is each system's own -----------------------------------------------------

TEST(MovingAverageUpdate, TorchUsesOldPlusCTimesDifference) {
  // PyTorch's old + c*(cur - old) and the convex form (1-c)*old + c*cur differ in the last bit
  // for some inputs (SPEC 7.3); find such a pair and check the observer follows PyTorch's.
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  const float c = 0.01f;
  int found = 0;
  for (int i = 0; i < 10000 && found < 20; ++i) {
    float a = u(rng), b = u(rng);
    if (a > b) std::swap(a, b);
    float cur_lo = u(rng), cur_hi = u(rng);
    if (cur_lo > cur_hi) std::swap(cur_lo, cur_hi);
    const float d = cur_lo - a;
    const float t = c * d;
    const float torch_form = a + t;
    const float one_minus_c = 1.0f - c;
    const float p = one_minus_c * a;
    const float q = c * cur_lo;
    const float convex = p + q;
    if (torch_form == convex) continue;
    ++found;
    MovingAverageObserver obs(MovingAverageObserverOptions::Torch());
    std::vector<float> b1 = {a, b}, b2 = {cur_lo, cur_hi};
    obs.Observe(Vec(b1), Context{});
    obs.Observe(Vec(b2), Context{});
    EXPECT_EQ(obs.state().min_val[0], torch_form) << a << " -> " << cur_lo;
  }
  EXPECT_GT(found, 0);
}

TEST(MovingAverageUpdate, MegEngineFirstCallCopiesThenUsesMomentum) {
  MovingAverageObserver obs(MovingAverageObserverOptions::MegEngine());
  std::vector<float> b1 = {-0.3f, 0.7f}, b2 = {-1.0f, 1.0f};
  obs.Observe(Vec(b1), Context{});
  EXPECT_EQ(obs.state().min_val[0], -0.3f) << "runtime momentum 0: a copy";
  EXPECT_EQ(obs.state().max_val[0], 0.7f);
  obs.Observe(Vec(b2), Context{});
  const float m = 0.9f, one_minus_m = 1.0f - m;
  const float a = 0.7f * m, b = one_minus_m * 1.0f;
  EXPECT_EQ(obs.state().max_val[0], a + b) << "old*m + (1-m)*cur (SPEC 3.3)";
}

TEST(MovingAverageUpdate, DistillerStepOneUnbiasedIsTheValue) {
  // SPEC 5.2: at step 1 the bias-corrected value is the batch value "up to float32 rounding":
  // f32(f32((1-d)*v) / (1-d)) is v for most v and within one ulp of it for all. Exact for the
  // 10.4 values; bit-identical to the reference everywhere.
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::uniform_real_distribution<float> u(-100.0f, 100.0f);
  int exact = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    float lo = u(rng), hi = u(rng);
    if (lo > hi) std::swap(lo, hi);
    MovingAverageObserver obs(MovingAverageObserverOptions::Distiller());
    std::vector<float> b = {lo, hi};
    obs.Observe(Vec(b), Context{});
    const float got = obs.state().min_val[0];
    EXPECT_LE(std::fabs(got - lo), std::fabs(test::NextUp(std::fabs(lo)) - std::fabs(lo)))
        << lo;
    exact += got == lo;
    EXPECT_EQ(obs.state().num_updates[0], 1);
  }
  EXPECT_GT(exact, n * 8 / 10);
  for (float v : {-1.0f, 2.0f, 0.5f, -3.0f, 4.0f}) {
    MovingAverageObserver obs(MovingAverageObserverOptions::Distiller());
    std::vector<float> b = {v};
    obs.Observe(Vec(b), Context{});
    EXPECT_EQ(obs.state().min_val[0], v);
    EXPECT_EQ(obs.state().max_val[0], v);
  }
}

TEST(MovingAverageUpdate, DistillerBiasCorrectionUsesFloat32Pow) {
  // SPEC 5.2 / 11.11: decay ** step is a float32 pow. For d = 0.999f, glibc's powf first
  // differs from the correctly rounded value at step 873, and 1 - powf first differs at step
  // 2958, so a 3000-step run pins which pow is used.
  MovingAverageObserver obs(MovingAverageObserverOptions::Distiller());
  ref::DistillerRef r;
  std::vector<float> b = {-0.75f, 1.25f};
  Batch batch{{2}, b, "const"};
  for (int step = 1; step <= 3000; ++step) {
    b[1] = 1.25f + 0.001f * static_cast<float>(step % 7);
    batch.values = b;
    obs.Observe(Vec(b), Context{});
    int64_t nf = 0;
    r.Update(ref::BatchRanges(batch.values, {0, 0}, 1, NonFinite::kSkip, &nf));
    ASSERT_TRUE(test::SameBits(obs.state().max_val[0], r.tracked_max[0])) << "step " << step;
    ASSERT_TRUE(test::SameBits(obs.state().min_val[0], r.tracked_min[0])) << "step " << step;
    ASSERT_TRUE(test::SameBits(obs.state().biased_max[0], r.tracked_max_biased[0]));
  }
  EXPECT_EQ(obs.state().num_updates[0], 3000);
  volatile float d = 0.999f, t = 2958.0f;  // volatile: no compile-time (correctly rounded) fold
  const float one = 1.0f;
  EXPECT_NE(one - powf(d, t), one - static_cast<float>(std::pow(static_cast<double>(d), 2958.0)))
      << "this libm's powf is correctly rounded at 873: the test above pins less than intended";
}

// ---- OneFlow gate and re-initialisation (SPEC 2.3) --------------------------------------------

TEST(MovingAverageOneFlow, GateClosedLeavesStateUnchanged) {
  MovingAverageObserver obs(MovingAverageObserverOptions::OneFlow(true));
  std::vector<float> b1 = {-1.0f, 2.0f}, b2 = {kNaN, -5.0f, 9.0f};
  obs.Observe(Vec(b1), Context{}, {true, 0});
  const auto before = obs.Save();
  obs.Observe(Vec(b2), Context{}, {false, 0});  // eval mode
  EXPECT_EQ(obs.Save(), before);
  obs.Observe(Vec(b2), Context{}, {true, 2});  // step 2 > stop_update_after_iters 1
  EXPECT_EQ(obs.Save(), before);
  obs.Commit(obs.BatchRange(Vec(b2), Context{}), {true, 2});
  EXPECT_EQ(obs.Save(), before);
  EXPECT_EQ(obs.nonfinite_count(), 0) << "gated-out batches are not counted";
  float s, z;
  QuantSpec spec;
  obs.ComputeQParams(spec, QParamsRule{}, &s, &z);  // still computed from the buffers
  obs.Observe(Vec(b2), Context{}, {true, 1});  // step == stop: updates
  EXPECT_EQ(obs.state().num_updates[0], 2);
  const float m = 0.95f, one_minus_m = 1.0f - m;
  const float a = 2.0f * m, c = 9.0f * one_minus_m;
  EXPECT_EQ(obs.state().max_val[0], a + c) << "a = max(|-5|, |9|) averaged in";
  EXPECT_EQ(obs.nonfinite_count(), 1);
}

TEST(MovingAverageOneFlow, ZeroStoredValueIsReinitialisedEveryTime) {
  // Affine: after a ReLU batch (min exactly 0) moving_min is 0, so the next batch's min is
  // copied instead of averaged; moving_max keeps averaging.
  auto opt = MovingAverageObserverOptions::OneFlow(false);
  opt.stop_update_after_iters = 100;
  MovingAverageObserver obs(opt);
  std::vector<float> relu = {0.0f, 1.0f, 3.0f}, b2 = {-2.0f, 1.0f}, b3 = {-4.0f, 2.0f};
  obs.Observe(Vec(relu), Context{}, {true, 0});
  EXPECT_EQ(obs.state().min_val[0], 0.0f);
  EXPECT_EQ(obs.state().max_val[0], 3.0f);
  obs.Observe(Vec(b2), Context{}, {true, 1});
  const float m = 0.95f, one_minus_m = 1.0f - m;
  EXPECT_EQ(obs.state().min_val[0], -2.0f) << "stored 0 -> copy";
  {
    const float a = 3.0f * m, b = 1.0f * one_minus_m;
    EXPECT_EQ(obs.state().max_val[0], a + b);
  }
  obs.Observe(Vec(b3), Context{}, {true, 2});
  {
    const float a = -2.0f * m, b = -4.0f * one_minus_m;
    EXPECT_EQ(obs.state().min_val[0], a + b) << "non-zero stored value -> average";
  }
  // Symmetric: an all-zero batch makes moving_max 0 again only if it was 0; a zero batch on a
  // fresh observer stores 0 and the next batch re-initialises.
  MovingAverageObserver sym(MovingAverageObserverOptions::OneFlow(true));
  std::vector<float> zeros = {0.0f, 0.0f, -0.0f}, b4 = {-7.0f, 3.0f};
  sym.Observe(Vec(zeros), Context{}, {true, 0});
  EXPECT_EQ(sym.state().max_val[0], 0.0f);
  EXPECT_EQ(sym.state().num_updates[0], 1);
  sym.Observe(Vec(b4), Context{}, {true, 1});
  EXPECT_EQ(sym.state().max_val[0], 7.0f) << "stored 0 -> copy of max(|min|, |max|)";
  EXPECT_EQ(sym.state().min_val[0], 7.0f);
}

// ---- protocol on shards == Observe(concatenation) -------------------------------------------

TEST(MovingAverageProtocol, ShardsMergedEqualConcatenationBitForBit) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& v : Variants()) {
    for (const auto& cfg : SeqConfigs()) {
      if (cfg.layout.granularity == Granularity::kPerGroup) continue;  // slots span rows
      for (NonFinite policy : {NonFinite::kSkip, NonFinite::kPropagate}) {
        SCOPED_TRACE(testing::Message() << v.name << " " << cfg.layout.ToString() << " "
                                        << NonFiniteName(policy));
        auto opt = v.options;
        opt.layout = cfg.layout;
        opt.nonfinite = policy;
        MovingAverageObserver single(opt), rank0(opt), rank1(opt), rank2(opt);
        auto seq = test::RandomSequence(rng, cfg.channels, cfg.inner, 10, true);
        int64_t step = 0;
        for (auto& batch : seq) {
          const int64_t n = batch.shape[0];
          std::uniform_int_distribution<int64_t> cut(0, n);
          int64_t a = cut(rng), b = cut(rng);
          if (a > b) std::swap(a, b);
          auto shards = test::SplitRows(batch, {a, b - a, n - b});  // shards may be empty
          const UpdateGate gate{true, step++ % 3};
          auto whole = test::MakeView(batch, Present::kContiguous);
          single.Observe(whole.view, Context{1}, gate);
          std::vector<RangeStats> local;
          for (auto& s : shards) {
            auto h = test::MakeView(s, Present::kContiguous);
            local.push_back(rank0.BatchRange(h.view, Context{2}));
          }
          // Ranks 0 and 1: MergeRange in two orders; rank 2: through the all_reduce buffers.
          const RangeStats m01 = MovingAverageObserver::MergeRange(
              MovingAverageObserver::MergeRange(local[0], local[1]), local[2]);
          const RangeStats m10 = MovingAverageObserver::MergeRange(
              local[2], MovingAverageObserver::MergeRange(local[1], local[0]));
          std::vector<float> f = local[0].FlattenFloats();
          std::vector<int64_t> c = local[0].FlattenCounts();
          for (int r = 1; r < 3; ++r) {
            const auto fr = local[r].FlattenFloats();
            const auto cr = local[r].FlattenCounts();
            for (size_t i = 0; i < f.size(); ++i) {  // all_reduce(MIN) with fmin semantics
              f[i] = std::isnan(f[i]) ? fr[i] : std::isnan(fr[i]) ? f[i] : std::min(f[i], fr[i]);
            }
            for (size_t i = 0; i < c.size(); ++i) c[i] += cr[i];
          }
          const RangeStats m2 = RangeStats::Unflatten(f.data(), f.size(), c.data(), c.size());
          rank0.Commit(m01, gate);
          rank1.Commit(m10, gate);
          rank2.Commit(m2, gate);
          const auto want = single.Save();
          ASSERT_EQ(rank0.Save(), want) << batch.kind;
          ASSERT_EQ(rank1.Save(), want) << batch.kind;
          ASSERT_EQ(rank2.Save(), want) << batch.kind;
        }
      }
    }
  }
}

// ---- serialization ---------------------------------------------------------------------------

MovingAverageObserver Trained(const MovingAverageObserverOptions& opt, std::mt19937_64& rng,
                              int batches) {
  MovingAverageObserver obs(opt);
  auto seq = test::RandomSequence(rng, opt.layout.granularity == Granularity::kPerTensor ? 2 : 3,
                                  4, batches, true);
  for (auto& b : seq) {
    auto h = test::MakeView(b, Present::kContiguous);
    obs.Observe(h.view, Context{});
  }
  return obs;
}

void ExpectSameObserver(const MovingAverageObserver& a, const MovingAverageObserver& b) {
  EXPECT_EQ(a.options().variant, b.options().variant);
  EXPECT_EQ(a.options().momentum.has_value(), b.options().momentum.has_value());
  if (a.options().momentum && b.options().momentum) {
    EXPECT_TRUE(test::SameBits(*a.options().momentum, *b.options().momentum));
  }
  EXPECT_EQ(a.options().range, b.options().range);
  EXPECT_EQ(a.options().stop_update_after_iters, b.options().stop_update_after_iters);
  EXPECT_EQ(a.options().layout.granularity, b.options().layout.granularity);
  EXPECT_EQ(a.options().layout.axis, b.options().layout.axis);
  EXPECT_EQ(a.options().layout.group_size, b.options().layout.group_size);
  EXPECT_EQ(a.options().nonfinite, b.options().nonfinite);
  EXPECT_TRUE(test::IdenticalFloats(a.state().min_val, b.state().min_val));
  EXPECT_TRUE(test::IdenticalFloats(a.state().max_val, b.state().max_val));
  EXPECT_TRUE(test::IdenticalFloats(a.state().biased_min, b.state().biased_min));
  EXPECT_TRUE(test::IdenticalFloats(a.state().biased_max, b.state().biased_max));
  EXPECT_EQ(a.state().num_updates, b.state().num_updates);
  EXPECT_EQ(a.state().nonfinite_count, b.state().nonfinite_count);
}

std::vector<MovingAverageObserver> SerializationSamples(std::mt19937_64& rng) {
  std::vector<MovingAverageObserver> out;
  for (const auto& v : Variants()) {
    out.emplace_back(v.options);  // never observed
    auto opt = v.options;
    opt.layout = ParamLayout::PerChannel(1);
    opt.nonfinite = NonFinite::kPropagate;  // NaN states
    opt.momentum = 0.25f;
    opt.stop_update_after_iters = 7;
    out.push_back(Trained(opt, rng, 12));
    auto opt2 = v.options;
    opt2.nonfinite = NonFinite::kSkipNaN;  // ±Inf states
    out.push_back(Trained(opt2, rng, 6));
  }
  // A NaN with a payload and a negative zero survive too.
  MovingAverageObserverState s;
  s.min_val = {-0.0f, 0.0f, 1.0f};
  uint32_t bits = 0xffc12345u;
  std::memcpy(&s.max_val.emplace_back(), &bits, 4);
  s.max_val.push_back(0.0f);
  s.max_val.push_back(-kInf);
  s.num_updates = {3, 0, 1};
  s.nonfinite_count = 5;
  out.emplace_back(MovingAverageObserverOptions::Torch(), s);
  return out;
}

TEST(MovingAverageSerialization, SaveLoadAndJsonRoundTripsAreBitExact) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const auto& obs : SerializationSamples(rng)) {
    const auto blob = obs.Save();
    const auto loaded = MovingAverageObserver::Load(blob.data(), blob.size());
    ExpectSameObserver(obs, loaded);
    EXPECT_EQ(loaded.Save(), blob);
    const std::string json = obs.ToJson();
    const auto parsed = MovingAverageObserver::FromJson(json);
    ExpectSameObserver(obs, parsed);
    EXPECT_EQ(parsed.ToJson(), json);
  }
}

TEST(MovingAverageSerialization, EveryTruncationAndByteFlipIsRejected) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  auto opt = MovingAverageObserverOptions::Distiller();
  opt.layout = ParamLayout::PerChannel(1);
  const auto blob = Trained(opt, rng, 5).Save();
  for (size_t n = 0; n < blob.size(); ++n) {
    EXPECT_THROW(MovingAverageObserver::Load(blob.data(), n), DataLoss) << "length " << n;
  }
  for (size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] ^= 0x5A;
    EXPECT_THROW(MovingAverageObserver::Load(bad.data(), bad.size()), DataLoss) << "byte " << i;
  }
  EXPECT_THROW(MovingAverageObserver::Load(nullptr, 0), DataLoss);
}

TEST(MovingAverageSerialization, MalformedJsonIsRejectedNamingTheField) {
  const std::string good = MovingAverageObserver(MovingAverageObserverOptions::OneFlow()).ToJson();
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  };
  const std::pair<std::string, std::string> cases[] = {
      {"", "malformed"},
      {"{", "malformed"},
      {"[1, 2]", "object"},
      {replaced("\"oneflow\"", "\"onefloww\""), "options.variant"},
      {replaced("\"momentum\":null", "\"momentum\":2.0"), "momentum"},
      {replaced("\"momentum\":null", "\"momentum\":0.1"), "options.momentum"},  // not a float
      {replaced("\"range\":\"abs_max\"", "\"range\":7"), "options.range"},
      {replaced("\"min_val\":[]", "\"min_val\":[1.0]"), "inconsistent"},
      {replaced("\"kind\":\"qkit.MovingAverageObserver\"", "\"kind\":\"qkit.MinMaxObserver\""),
       "qkit.MinMaxObserver"},
      {replaced("\"version\":1", "\"version\":2"), "version"},
      {replaced("\"nonfinite_count\":0", "\"nonfinite_count\":-1"), "nonfinite_count"},
      {replaced("\"nonfinite_count\":0", "\"nonfinite_count\":\"0\""), "state.nonfinite_count"},
      {replaced(",\"state\":", ",\"statx\":"), "state"},
  };
  for (const auto& [text, needle] : cases) {
    try {
      MovingAverageObserver::FromJson(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << e.what() << " (wanted " << needle << ")";
    }
  }
}

// ---- errors ---------------------------------------------------------------------------------

void ExpectInvalid(const MovingAverageObserverOptions& opt, const std::string& needle) {
  try {
    MovingAverageObserver obs(opt);
    ADD_FAILURE() << "accepted options; wanted an error naming " << needle;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(MovingAverageErrors, BadOptionsNameTheOptionAndValue) {
  auto o = MovingAverageObserverOptions::Torch();
  o.momentum = -0.1f;
  ExpectInvalid(o, "`momentum`=-0.1");
  o.momentum = 1.5f;
  ExpectInvalid(o, "`momentum`=1.5");
  o.momentum = kNaN;
  ExpectInvalid(o, "`momentum`=nan");
  auto d = MovingAverageObserverOptions::Distiller();
  d.momentum = 1.0f;
  ExpectInvalid(d, "`momentum`=1 outside [0, 1)");
  auto f = MovingAverageObserverOptions::OneFlow();
  f.stop_update_after_iters = 0;
  ExpectInvalid(f, "`stop_update_after_iters`=0");
  auto t = MovingAverageObserverOptions::Torch();
  t.range = RunningRange::kAbsMax;
  ExpectInvalid(t, "`range`=abs_max");
  auto g = MovingAverageObserverOptions::Torch();
  g.layout = ParamLayout::PerGroup(0, 0);
  ExpectInvalid(g, "`layout.group_size`=0");
}

TEST(MovingAverageErrors, ThrowingCallsLeaveTheStateUnchanged) {
  auto opt = MovingAverageObserverOptions::Distiller();
  opt.layout = ParamLayout::PerChannel(1);
  MovingAverageObserver obs(opt);
  std::vector<float> x(2 * 3 * 4, 1.5f);
  x[5] = -2.0f;
  obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {2, 3, 4}), Context{});
  const auto before = obs.Save();
  // Channel count mismatch between batches.
  std::vector<float> y(2 * 5 * 4, 3.0f);
  try {
    obs.Observe(TensorView::Contiguous(y.data(), DType::kFloat32, {2, 5, 4}), Context{});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("5 slots"), std::string::npos) << m;
    EXPECT_NE(m.find("had 3"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 5, 4]"), std::string::npos) << m;
  }
  EXPECT_EQ(obs.Save(), before);
  // ... also through Commit, and with a closed gate.
  EXPECT_THROW(obs.Commit(RangeStats{{1.0f}, {2.0f}, {1}, 0}), InvalidArgument);
  EXPECT_THROW(obs.Observe(TensorView::Contiguous(y.data(), DType::kFloat32, {2, 5, 4}),
                           Context{}, {false, 0}),
               InvalidArgument);
  // Wrong dtype.
  std::vector<int8_t> q(24, 1);
  try {
    obs.Observe(TensorView::Contiguous(q.data(), DType::kInt8, {2, 3, 4}), Context{});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << e.what();
  }
  // Axis out of range, bad thread count, inconsistent RangeStats.
  EXPECT_THROW(obs.Observe(TensorView::Vector(x.data(), 24), Context{}), OutOfRange);
  EXPECT_THROW(obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {2, 3, 4}),
                           Context{0}),
               InvalidArgument);
  RangeStats bad = RangeStats::Empty(3);
  bad.observed[1] = 1;  // data slot with min > max
  EXPECT_THROW(obs.Commit(bad), InvalidArgument);
  bad.observed[1] = -1;
  EXPECT_THROW(obs.Commit(bad), InvalidArgument);
  EXPECT_EQ(obs.Save(), before);
  // ComputeQParams: layout mismatch; empty observer.
  QuantSpec spec;
  std::vector<float> s(3), z(3);
  EXPECT_THROW(obs.ComputeQParams(spec, QParamsRule{}, s.data(), z.data()), InvalidArgument);
  MovingAverageObserver absmax(MovingAverageObserverOptions::OneFlow(true));
  absmax.Observe(TensorView::Vector(x.data(), 4), Context{});
  QuantSpec affine;
  affine.symmetric = false;
  EXPECT_THROW(absmax.ComputeQParams(affine, QParamsRule{}, s.data(), z.data()), InvalidArgument);
  MovingAverageObserver fresh(MovingAverageObserverOptions::Torch());
  EXPECT_THROW(fresh.ComputeQParams(spec, QParamsRule{}, s.data(), z.data()), FailedPrecondition);
  // A state handed in must be consistent.
  MovingAverageObserverState st;
  st.min_val = {1.0f};
  st.max_val = {2.0f};
  st.num_updates = {1};
  EXPECT_THROW(MovingAverageObserver(MovingAverageObserverOptions::Distiller(), st),
               InvalidArgument);  // biased_* missing
  st.num_updates = {0};
  EXPECT_THROW(MovingAverageObserver(MovingAverageObserverOptions::Torch(), st),
               InvalidArgument);  // empty slot holding data
}

// ---- empty, all-non-finite, constant batches --------------------------------------------------

TEST(MovingAverageEdges, EmptyAndNonFiniteBatches) {
  for (const auto& v : Variants()) {
    SCOPED_TRACE(v.name);
    MovingAverageObserver obs(v.options);
    std::vector<float> none;
    obs.Observe(TensorView::Contiguous(none.data(), DType::kFloat32, {0, 3}), Context{});
    EXPECT_EQ(obs.num_slots(), 0);
    EXPECT_TRUE(obs.empty());
    std::vector<float> bad = {kNaN, kInf, -kInf};
    obs.Observe(Vec(bad), Context{});
    EXPECT_TRUE(obs.empty()) << "no finite element: no update, no step";
    EXPECT_EQ(obs.nonfinite_count(), 3);
    std::vector<float> b = {-1.0f, 2.0f, kNaN};
    obs.Observe(Vec(b), Context{});
    EXPECT_EQ(obs.state().num_updates[0], 1);
    EXPECT_EQ(obs.nonfinite_count(), 4);
    const auto before = obs.Save();
    obs.Observe(TensorView::Contiguous(none.data(), DType::kFloat32, {0}), Context{});
    EXPECT_EQ(obs.Save(), before) << "an empty batch changes nothing";
  }
}

TEST(MovingAverageEdges, AllZeroAndConstantBatchesGiveTheDegenerateRule) {
  // qkit's default rule floors the scale at eps = 2^-23 (qparams.h).
  QuantSpec sym;
  QuantSpec aff;
  aff.symmetric = false;
  for (const auto& v : Variants()) {
    SCOPED_TRACE(v.name);
    MovingAverageObserver obs(v.options);
    std::vector<float> zeros(16, 0.0f);
    obs.Observe(Vec(zeros), Context{});
    float s = 0, z = 0;
    obs.ComputeQParams(sym, QParamsRule{}, &s, &z);
    EXPECT_EQ(s, 1.1920928955078125e-07f);
    EXPECT_EQ(z, 0.0f);
    if (v.options.range == RunningRange::kMinMax) {
      MovingAverageObserver c(v.options);
      std::vector<float> consts(16, 0.75f);
      c.Observe(Vec(consts), Context{});
      c.ComputeQParams(aff, QParamsRule{}, &s, &z);
      // Widened to [0, mx]: s = (mx - 0) / 255, zero point -128 - round(0 / s) = -128. mx is
      // 0.75 except for Distiller, whose step-1 bias correction may be one ulp off.
      const float mx = c.state().max_val[0];
      EXPECT_LE(std::fabs(mx - 0.75f), 1e-7f);
      EXPECT_EQ(s, mx / 255.0f);
      EXPECT_EQ(z, -128.0f);
    }
  }
}

}  // namespace
}  // namespace qkit
