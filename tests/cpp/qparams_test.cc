// ChooseQParams / ValidateQParams: SPEC.md golden values per system, randomized bit-exact
// comparison against the per-system references of tests/reference/qparams_ref.h (through the
// QuantSpec + QParamsRule presets of docs/qparams.md), the array form, and every error path.
#include "qkit/qparams.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "qkit/error.h"
#include "qkit/quant_spec.h"
#include "reference/qparams_ref.h"
#include "util/compare.h"
#include "util/seeded_rng.h"

namespace qkit {
namespace {

using ::qkit::test::SameFloat;

constexpr float kF32Eps = 1.1920928955078125e-07f;  // 2^-23, torch.finfo(float32).eps
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- presets: the QuantSpec + QParamsRule that reproduce each system (docs/qparams.md) ------

struct Preset {
  QuantSpec spec;
  QParamsRule rule;
};

QuantSpec SignedSpec(int bits, bool narrow = false) {
  QuantSpec s;
  s.bits = bits;
  s.narrow_range = narrow;
  return s;
}

QuantSpec UnsignedSpec(int bits) {
  QuantSpec s;
  s.bits = bits;
  s.is_signed = false;
  return s;
}

// OneFlow MinMaxObserver google symmetric: amax / (2^(b-1) - 1), no epsilon.
Preset OneFlowGoogleSymmetric(int bits) {
  Preset p{SignedSpec(bits), {}};
  p.rule.divisor = SymmetricDivisor::kQuantMax;
  p.rule.degenerate = DegenerateRule::kNone;
  return p;
}

// OneFlow google affine: [0, 2^b - 1], no widening, no epsilon, unclamped zero point,
// RNE (MinMaxObserver) or RHAZ (MovingAverageMinMaxObserver).
Preset OneFlowGoogleAffine(int bits, Rounding zp_rounding = Rounding::kHalfToEven) {
  Preset p{UnsignedSpec(bits), {}};
  p.spec.symmetric = false;
  p.rule.widen_to_zero = false;
  p.rule.degenerate = DegenerateRule::kNone;
  p.rule.zero_point_rounding = zp_rounding;
  p.rule.clamp_zero_point = false;
  return p;
}

// OneFlow cambricon: step 2^(floor(log2f(amax)) - (b - 2)).
Preset OneFlowCambricon(int bits) {
  Preset p{SignedSpec(bits), {}};
  p.rule.restriction = ScaleRestriction::kPow2FloorLog2Amax;
  p.rule.degenerate = DegenerateRule::kNone;
  return p;
}

// MegEngine _calculate_qparams: widened, divisor (qmax - qmin) / 2, eps 1e-5, RHAZ zero point,
// no clamp. `spec` carries the dtype's range (qint8, qint8_narrow, quint8, qint4, ...).
Preset MegEngine(QuantSpec spec, bool symmetric) {
  Preset p{spec, {}};
  p.spec.symmetric = symmetric;
  p.spec.rounding = Rounding::kHalfAwayFromZero;
  p.rule.eps = 1e-5f;
  p.rule.zero_point_rounding = Rounding::kHalfAwayFromZero;
  p.rule.clamp_zero_point = false;
  return p;
}

// NVIDIA _tensor_quant: multiplier qmax / amax, amax <= 2^-24 gives 0.
Preset NvidiaSymmetric(int bits, bool is_unsigned, bool narrow_range = true) {
  Preset p{is_unsigned ? UnsignedSpec(bits) : SignedSpec(bits, narrow_range), {}};
  p.spec.scale_mode = ScaleMode::kMultiplier;
  p.rule.divisor = SymmetricDivisor::kQuantMax;
  p.rule.degenerate = DegenerateRule::kZeroBelowEps;
  p.rule.eps = 1.0f / static_cast<float>(1 << 24);
  return p;
}

// NVIDIA FakeAffineTensorQuantFunction: signed range, not widened, no epsilon, RNE, unclamped.
Preset NvidiaAffine(int bits) {
  Preset p{SignedSpec(bits), {}};
  p.spec.symmetric = false;
  p.rule.widen_to_zero = false;
  p.rule.degenerate = DegenerateRule::kNone;
  p.rule.clamp_zero_point = false;
  return p;
}

// Distiller symmetric: multiplier n / sat (torch: reciprocal(sat) * n), sat 0 gives 1.
// SYMMETRIC uses n = (2^b - 1) / 2 on its 257-level range [-2^(b-1), 2^(b-1)];
// SYMMETRIC_RESTRICTED n = 2^(b-1) - 1 on the narrow range.
Preset DistillerSymmetric(int bits, bool restricted) {
  Preset p{SignedSpec(bits, restricted), {}};
  if (!restricted) {
    p.spec.quant_min_override = -(int64_t{1} << (bits - 1));
    p.spec.quant_max_override = int64_t{1} << (bits - 1);
  }
  p.spec.scale_mode = ScaleMode::kMultiplier;
  p.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
  p.rule.divisor = restricted ? SymmetricDivisor::kHalfRange : SymmetricDivisor::kHalfFullRange;
  p.rule.degenerate = DegenerateRule::kOneIfZeroRange;
  p.rule.reciprocal_multiplier = true;  // torch's n / sat = reciprocal(sat) * n
  return p;
}

// Distiller asymmetric: multiplier (2^b - 1) / (mx' - mn'), widened, zero range gives 1,
// z = qmin - RNE(m * mn') (unrounded if !integral), unclamped.
Preset DistillerAsymmetric(int bits, bool is_signed, bool integral) {
  Preset p{is_signed ? SignedSpec(bits) : UnsignedSpec(bits), {}};
  p.spec.symmetric = false;
  p.spec.scale_mode = ScaleMode::kMultiplier;
  p.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
  p.rule.degenerate = DegenerateRule::kOneIfZeroRange;
  p.rule.reciprocal_multiplier = true;  // torch's n / diff = reciprocal(diff) * n
  p.rule.integral_zero_point = integral;
  p.rule.clamp_zero_point = false;
  return p;
}

// PyTorch _calculate_qparams (per_tensor / per_channel affine and symmetric): widened,
// eps 2^-23, RNE, clamped zero point; quint8 symmetric zero point 128 (or the floor midpoint
// of a customized range).
Preset TorchObserver(QuantSpec spec, bool symmetric,
                     SymmetricZeroPoint sym_zp = SymmetricZeroPoint::kZero) {
  Preset p{spec, {}};
  p.spec.symmetric = symmetric;
  p.spec.scale_mode = ScaleMode::kMultiplyReciprocal;
  p.rule.symmetric_zero_point = sym_zp;
  return p;
}

// PyTorch per_channel_affine_float_qparams: not widened, step 1 where step <= eps, zero point
// -min / step unrounded and unclamped (ranges with quant_min = 0).
Preset TorchFloatQParams(QuantSpec spec) {
  Preset p{spec, {}};
  p.spec.symmetric = false;
  p.spec.scale_mode = ScaleMode::kMultiplyReciprocal;
  p.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
  p.rule.widen_to_zero = false;
  p.rule.degenerate = DegenerateRule::kOneIfStepAtMostEps;
  p.rule.integral_zero_point = false;
  p.rule.clamp_zero_point = false;
  return p;
}

// Horizon calculate_qparams: symmetric signed (qint8 / qint16 / qint4), divisor
// (qmax - qmin) / 2, eps 2^-23, optional BERNOULLI power-of-two step.
Preset Horizon(int bits, bool bernoulli = false) {
  Preset p{SignedSpec(bits), {}};
  if (bernoulli) p.rule.restriction = ScaleRestriction::kPow2Bernoulli;
  return p;
}

QParams Choose(const Preset& p, float mn, float mx) {
  return ChooseQParams(mn, mx, p.spec, p.rule);
}

// Runs `fn`, expecting InvalidArgument whose message contains every string in `parts`.
template <typename Fn>
void ExpectInvalid(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning " << *parts.begin();
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    for (const auto& part : parts) {
      EXPECT_NE(what.find(part), std::string::npos) << "message: " << what << "\nmissing: " << part;
    }
  }
}

// ---- golden values ------------------------------------------------------------------------

// SPEC §10.2: x = [-1.5, -0.75, -0.2, 0, 0.1, 0.35, 0.9, 2.0], min -1.5, max 2.0, 8 bits.
constexpr float kMin102 = -1.5f;
constexpr float kMax102 = 2.0f;

TEST(QParamsGoldenTest, Spec10_2RowsAtoJ) {
  // A PyTorch MinMax qint8 symmetric: s = 0.015686275 (2/127.5), zp 0.
  QParams a = Choose(TorchObserver(SignedSpec(8), true), kMin102, kMax102);
  EXPECT_EQ(a.scale, 0.015686275f);
  EXPECT_EQ(a.zero_point, 0.0f);
  // B PyTorch MinMax quint8 affine: s = 0.013725490 (3.5/255), zp 109.
  QParams b = Choose(TorchObserver(UnsignedSpec(8), false), kMin102, kMax102);
  EXPECT_EQ(b.scale, 0.013725490f);
  EXPECT_EQ(b.zero_point, 109.0f);
  // C MegEngine qint8 symmetric: s = 0.015686275.
  QParams c = Choose(MegEngine(SignedSpec(8), true), kMin102, kMax102);
  EXPECT_EQ(c.scale, 0.015686275f);
  EXPECT_EQ(c.zero_point, 0.0f);
  // C' MegEngine qint8_narrow: s = 0.015748031.
  QParams c2 = Choose(MegEngine(SignedSpec(8, /*narrow=*/true), true), kMin102, kMax102);
  EXPECT_EQ(c2.scale, 0.015748031f);
  // D OneFlow google symmetric: s = 0.015748031 (2/127).
  QParams d = Choose(OneFlowGoogleSymmetric(8), kMin102, kMax102);
  EXPECT_EQ(d.scale, 0.015748031f);
  EXPECT_EQ(d.zero_point, 0.0f);
  // E OneFlow google affine: s = 0.013725490, zp 109.
  QParams e = Choose(OneFlowGoogleAffine(8), kMin102, kMax102);
  EXPECT_EQ(e.scale, 0.013725490f);
  EXPECT_EQ(e.zero_point, 109.0f);
  // F OneFlow cambricon: shift -5, step 1/32.
  QParams f = Choose(OneFlowCambricon(8), kMin102, kMax102);
  EXPECT_EQ(f.scale, 0.03125f);
  EXPECT_EQ(f.zero_point, 0.0f);
  // G NVIDIA tensor_quant: multiplier 63.5.
  QParams g = Choose(NvidiaSymmetric(8, false), -2.0f, 2.0f);  // amax = 2.0
  EXPECT_EQ(g.scale, 63.5f);
  EXPECT_EQ(g.zero_point, 0.0f);
  // H Distiller SYMMETRIC: multiplier 63.75 (sat = max_abs = 2).
  QParams h = Choose(DistillerSymmetric(8, false), -2.0f, 2.0f);
  EXPECT_EQ(h.scale, 63.75f);
  EXPECT_EQ(h.zero_point, 0.0f);
  // I Distiller ASYMMETRIC_UNSIGNED: multiplier 72.857140, Distiller zp -109 = qkit z 109.
  // SPEC's 72.857140 is the single division f32(255 / 3.5); Distiller's `n / diff` runs in
  // torch as reciprocal(3.5) * 255 = 72.85714721679688 (one ulp above), which is what
  // Distiller returns (255 / torch.tensor([3.5])).
  QParams i = Choose(DistillerAsymmetric(8, false, true), kMin102, kMax102);
  EXPECT_EQ(i.scale, 72.85714721679688f);
  EXPECT_EQ(255.0f / 3.5f, 72.857140f);
  EXPECT_EQ(i.zero_point, 109.0f);
  // J Horizon qint8: s = 0.015686275.
  QParams j = Choose(Horizon(8), kMin102, kMax102);
  EXPECT_EQ(j.scale, 0.015686275f);
  EXPECT_EQ(j.zero_point, 0.0f);
}

TEST(QParamsGoldenTest, DistillerSymmetricSpec5_1) {
  // tests/test_quant_utils.py goldens (SPEC §5.1): sat 4 -> 31.875 (restricted 31.75),
  // sat [4, 10] -> [31.875, 12.75] (restricted [31.75, 12.7]), sat 0 -> 1.
  EXPECT_EQ(Choose(DistillerSymmetric(8, false), -4.0f, 4.0f).scale, 31.875f);
  EXPECT_EQ(Choose(DistillerSymmetric(8, true), -4.0f, 4.0f).scale, 31.75f);
  EXPECT_EQ(Choose(DistillerSymmetric(8, false), 0.0f, 4.0f).scale, 31.875f);  // sat = max|.|
  const float sat_min[2] = {-4.0f, -10.0f};
  const float sat_max[2] = {4.0f, 10.0f};
  float scale[2], zp[2];
  const Preset sym = DistillerSymmetric(8, false);
  ChooseQParams(sat_min, sat_max, 2, sym.spec, sym.rule, scale, zp);
  EXPECT_EQ(scale[0], 31.875f);
  EXPECT_EQ(scale[1], 12.75f);
  EXPECT_EQ(zp[0], 0.0f);
  const Preset restricted = DistillerSymmetric(8, true);
  ChooseQParams(sat_min, sat_max, 2, restricted.spec, restricted.rule, scale, zp);
  EXPECT_EQ(scale[0], 31.75f);
  EXPECT_EQ(scale[1], 12.7f);
  EXPECT_EQ(Choose(sym, 0.0f, 0.0f).scale, 1.0f);
  EXPECT_EQ(Choose(restricted, 0.0f, 0.0f).scale, 1.0f);
}

TEST(QParamsGoldenTest, DistillerScaleIsReciprocalTimesN) {
  // torch evaluates Distiller's `n / sat` as sat.reciprocal() * n: with sat = f32(0.3) torch
  // gives 127.5 / torch.tensor(0.3) == 425.0, where one float32 division gives 424.99997.
  const float sat = 0.3f;
  EXPECT_EQ(Choose(DistillerSymmetric(8, false), -sat, sat).scale, 425.0f);
  Preset one_division = DistillerSymmetric(8, false);
  one_division.rule.reciprocal_multiplier = false;
  EXPECT_EQ(Choose(one_division, -sat, sat).scale, 127.5f / sat);
  EXPECT_NE(127.5f / sat, 425.0f);
  // Same for the asymmetric n / diff: 255 / torch.tensor(0.7) == 364.28571 (f32 364.285736),
  // one division 364.285706.
  const float diff = 0.7f;
  EXPECT_EQ(Choose(DistillerAsymmetric(8, false, true), 0.0f, diff).scale, 364.2857360839844f);
  EXPECT_NE(255.0f / diff, 364.2857360839844f);
  // Over random saturations the two forms differ often (SPEC §10.8: about a quarter), so the
  // option is not cosmetic; the random test below checks the reciprocal form bit for bit.
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::uniform_real_distribution<float> u(1e-3f, 10.0f);
  int differ = 0;
  for (int i = 0; i < 1000; ++i) {
    const float a = u(rng);
    differ += Choose(DistillerSymmetric(8, false), -a, a).scale != 127.5f / a;
  }
  EXPECT_GT(differ, 100);
  EXPECT_LT(differ, 500);
}

TEST(QParamsGoldenTest, DistillerAsymmetricSpec5_1) {
  // SPEC §5.1 goldens. Sign convention: Distiller's zp is subtracted (q = round(scale*x - zp)),
  // qkit's z is the code of real 0, so z = -zp.
  // (-2, 10) -> scale 21.25, zp -42 (from -42.5, half-even) -> z 42.
  QParams u = Choose(DistillerAsymmetric(8, false, true), -2.0f, 10.0f);
  EXPECT_EQ(u.scale, 21.25f);
  EXPECT_EQ(u.zero_point, 42.0f);
  // signed -> zp 86 -> z -86.
  QParams s = Choose(DistillerAsymmetric(8, true, true), -2.0f, 10.0f);
  EXPECT_EQ(s.scale, 21.25f);
  EXPECT_EQ(s.zero_point, -86.0f);
  // non-integral -> zp -42.5 / signed 85.5 -> z 42.5 / -85.5.
  EXPECT_EQ(Choose(DistillerAsymmetric(8, false, false), -2.0f, 10.0f).zero_point, 42.5f);
  EXPECT_EQ(Choose(DistillerAsymmetric(8, true, false), -2.0f, 10.0f).zero_point, -85.5f);
  // (5, 10) -> 25.5, 0 (the range is widened to [0, 10]).
  QParams pos = Choose(DistillerAsymmetric(8, false, true), 5.0f, 10.0f);
  EXPECT_EQ(pos.scale, 25.5f);
  EXPECT_EQ(pos.zero_point, 0.0f);
  // (-10, -5) -> 25.5, zp -255 -> z 255.
  QParams neg = Choose(DistillerAsymmetric(8, false, true), -10.0f, -5.0f);
  EXPECT_EQ(neg.scale, 25.5f);
  EXPECT_EQ(neg.zero_point, 255.0f);
  // (0, 0) -> 1, 0.
  QParams zero = Choose(DistillerAsymmetric(8, false, true), 0.0f, 0.0f);
  EXPECT_EQ(zero.scale, 1.0f);
  EXPECT_EQ(zero.zero_point, 0.0f);
}

TEST(QParamsGoldenTest, NvidiaSpec4_7AndDegenerate) {
  // SPEC §4.7: amax = max of torch.rand(10) under seed 12345 = 0.992143452167511 gives
  // scale (multiplier) 128.00567626953125.
  EXPECT_EQ(Choose(NvidiaSymmetric(8, false), 0.0f, 0.992143452167511f).scale, 128.00567626953125f);
  // SPEC §4.2: amax <= 2^-24 gives scale 0 (everything quantizes to 0); just above does not.
  const float eps = 1.0f / static_cast<float>(1 << 24);
  EXPECT_EQ(Choose(NvidiaSymmetric(8, false), 0.0f, 0.0f).scale, 0.0f);
  EXPECT_EQ(Choose(NvidiaSymmetric(8, false), -eps, eps).scale, 0.0f);
  const float above = std::nextafter(eps, 1.0f);
  EXPECT_EQ(Choose(NvidiaSymmetric(8, false), -above, above).scale, 127.0f / above);
  // Unsigned: max_bound 255.
  EXPECT_EQ(Choose(NvidiaSymmetric(8, true), 0.0f, 2.0f).scale, 127.5f);
  // FakeAffineTensorQuantFunction (SPEC §4.2): upstream test min -128, max 127 -> step 1,
  // quant_zero = -128 - (-128) = 0 -> z 0.
  QParams aff = Choose(NvidiaAffine(8), -128.0f, 127.0f);
  EXPECT_EQ(aff.scale, 1.0f);
  EXPECT_EQ(aff.zero_point, 0.0f);
}

TEST(QParamsGoldenTest, OneFlowSpec2) {
  // SPEC §2.7: amax 2, 8 bits: google scale 2/127; cambricon shift 1 - 6 = -5, step 1/32.
  EXPECT_EQ(Choose(OneFlowCambricon(8), -1.5f, 2.0f).scale, 0.03125f);
  // amax in [2^k, 2^(k+1)) gives step 2^(k-6): amax 3.99 -> 2^-5; 4 -> 2^-4; 0.5 -> 2^-7.
  EXPECT_EQ(Choose(OneFlowCambricon(8), 0.0f, 3.99f).scale, 0.03125f);
  EXPECT_EQ(Choose(OneFlowCambricon(8), -4.0f, 0.0f).scale, 0.0625f);
  EXPECT_EQ(Choose(OneFlowCambricon(8), 0.0f, 0.5f).scale, 0.0078125f);
  // 4 bits: shift floor(log2 2) - 2 = -1.
  EXPECT_EQ(Choose(OneFlowCambricon(4), 0.0f, 2.0f).scale, 0.5f);
  // SPEC §2.6 / §9.6: all-zero symmetric tensor gives scale 0 (no epsilon).
  EXPECT_EQ(Choose(OneFlowGoogleSymmetric(8), 0.0f, 0.0f).scale, 0.0f);
  // SPEC §2.2: affine is not widened; min > 0 gives a negative zero point, max < 0 one above
  // 255: [1, 2]: s = 1/255, z = -RNE(255) = -255; [-2, -1]: z = 510.
  QParams pos = Choose(OneFlowGoogleAffine(8), 1.0f, 2.0f);
  EXPECT_EQ(pos.scale, 1.0f / 255.0f);
  EXPECT_EQ(pos.zero_point, -255.0f);
  EXPECT_EQ(Choose(OneFlowGoogleAffine(8), -2.0f, -1.0f).zero_point, 510.0f);
  // SPEC §10.4: OneFlow moving max 1.95 (f32 1.9500000477) -> s 0.015354331.
  EXPECT_EQ(Choose(OneFlowGoogleSymmetric(8), -1.95f, 1.95f).scale, 0.015354331f);
  // SPEC §2.3 / §9.1: the moving-average affine zero point rounds half away from zero. Range
  // [-0.5, 1.5] over 4 bits: s = 2/15, min/s = -3.75 (no tie); [-1.5, 6]: s = 0.5, -3 exactly;
  // a tie: [-0.25, 7.25] over 4 bits: s = 7.5/15 = 0.5, min/s = -0.5 -> RNE 0, RHAZ -1.
  EXPECT_EQ(Choose(OneFlowGoogleAffine(4), -0.25f, 7.25f).zero_point, 0.0f);
  EXPECT_EQ(Choose(OneFlowGoogleAffine(4, Rounding::kHalfAwayFromZero), -0.25f, 7.25f).zero_point,
            1.0f);
}

TEST(QParamsGoldenTest, MegEngineEpsFloor) {
  // SPEC §3.3: scale = max(..., eps) with eps compared as f32(1e-5).
  EXPECT_EQ(Choose(MegEngine(SignedSpec(8), true), 0.0f, 0.0f).scale, 1e-5f);
  EXPECT_EQ(Choose(MegEngine(SignedSpec(8), true), -1e-4f, 1e-4f).scale, 1e-5f);  // 7.8e-7 < eps
  EXPECT_EQ(Choose(MegEngine(UnsignedSpec(8), false), 0.0f, 0.0f).scale, 1e-5f);
  EXPECT_EQ(Choose(MegEngine(UnsignedSpec(8), false), 0.0f, 0.0f).zero_point, 0.0f);
  // SPEC §10.4 MegEngine EMA qint8: (-0.95, 1.9) -> 0.014901960; (-1.155, 2.1100001) ->
  // 0.016549021.
  EXPECT_EQ(Choose(MegEngine(SignedSpec(8), true), -0.95f, 1.9f).scale, 0.014901960f);
  EXPECT_EQ(Choose(MegEngine(SignedSpec(8), true), -1.155f, 2.1100001f).scale, 0.016549021f);
  // SPEC §3.3: asymmetric zero point qmin - RHAZ(min'/s): quint4 [0, 15], [-0.25, 7.25] ->
  // s = 0.5, min'/s = -0.5 -> RHAZ -1 -> z = 1 (PyTorch's RNE would give 0).
  QParams z = Choose(MegEngine(UnsignedSpec(4), false), -0.25f, 7.25f);
  EXPECT_EQ(z.scale, 0.5f);
  EXPECT_EQ(z.zero_point, 1.0f);
}

TEST(QParamsGoldenTest, TorchEpsAndZeroPointClamp) {
  // SPEC §7.2: eps = torch.finfo(float32).eps = 2^-23 floors the scale.
  QParams zero = Choose(TorchObserver(UnsignedSpec(8), false), 0.0f, 0.0f);
  EXPECT_EQ(zero.scale, kF32Eps);
  EXPECT_EQ(zero.zero_point, 0.0f);
  EXPECT_EQ(Choose(TorchObserver(SignedSpec(8), true), 0.0f, 0.0f).scale, kF32Eps);
  // SPEC §10.4 PyTorch MovingAverage quint8: (-1, 2) -> s 0.011764706, zp 85;
  // (-0.995, 1.99) -> s 0.011705883, zp 85.
  QParams b1 = Choose(TorchObserver(UnsignedSpec(8), false), -1.0f, 2.0f);
  EXPECT_EQ(b1.scale, 0.011764706f);
  EXPECT_EQ(b1.zero_point, 85.0f);
  QParams b2 = Choose(TorchObserver(UnsignedSpec(8), false), -0.995f, 1.99f);
  EXPECT_EQ(b2.scale, 0.011705883f);
  EXPECT_EQ(b2.zero_point, 85.0f);
  // SPEC §7.2: symmetric quint8 zero point 128, (qmin + qmax) // 2 with a custom range.
  EXPECT_EQ(
      Choose(TorchObserver(UnsignedSpec(8), true, SymmetricZeroPoint::kMidpointUp), -1.0f, 2.0f)
          .zero_point,
      128.0f);
  EXPECT_EQ(
      Choose(TorchObserver(UnsignedSpec(8), true, SymmetricZeroPoint::kMidpointDown), -1.0f, 2.0f)
          .zero_point,
      127.0f);
  // The clamp of zp = clamp(qmin - RNE(min/s), qmin, qmax) (SPEC §7.2). With torch's widening
  // it cannot engage; on an unwidened range it does: [5, 10] over [0, 255]: s = 5/255,
  // qmin - RNE(5 / s) = -255 -> clamped to 0; [-10, -5] -> 510 -> 255.
  Preset clamped = TorchObserver(UnsignedSpec(8), false);
  clamped.rule.widen_to_zero = false;
  EXPECT_EQ(Choose(clamped, 5.0f, 10.0f).zero_point, 0.0f);
  EXPECT_EQ(Choose(clamped, -10.0f, -5.0f).zero_point, 255.0f);
  clamped.rule.clamp_zero_point = false;
  EXPECT_EQ(Choose(clamped, 5.0f, 10.0f).zero_point, -255.0f);
  // per_channel_affine_float_qparams: [1, 3] over [0, 255]: s = 2/255, zp = -1/s = -127.5
  // (unrounded, not widened); a range with s <= eps gets step 1 and zp -min.
  QParams fq = Choose(TorchFloatQParams(UnsignedSpec(8)), 1.0f, 3.0f);
  EXPECT_EQ(fq.scale, 2.0f / 255.0f);
  EXPECT_EQ(fq.zero_point, -(1.0f / (2.0f / 255.0f)));
  QParams fq0 = Choose(TorchFloatQParams(UnsignedSpec(8)), 4.0f, 4.0f);
  EXPECT_EQ(fq0.scale, 1.0f);
  EXPECT_EQ(fq0.zero_point, -4.0f);
}

TEST(QParamsGoldenTest, HorizonDivisorsAndBernoulli) {
  // SPEC §6.5: divisor (qmax - qmin) / 2: 127.5 for qint8, 32767.5 for qint16; eps 2^-23.
  EXPECT_EQ(Choose(Horizon(8), -1.5f, 2.0f).scale, 0.015686275f);  // §10.2 J
  EXPECT_EQ(Choose(Horizon(16), -1.5f, 2.0f).scale, 2.0f / 32767.5f);
  EXPECT_EQ(Choose(Horizon(16), -32767.5f, 1.0f).scale, 1.0f);
  EXPECT_EQ(Choose(Horizon(8), 0.0f, 0.0f).scale, kF32Eps);
  // BERNOULLI: 1 / 2^clamp(floor(-log2 s), 1, 14): s = 0.015686275 -> -log2 s = 5.99 -> 2^-5;
  // a large step is clamped to 2^-1, a tiny one (eps 2^-23) to 2^-14.
  EXPECT_EQ(Choose(Horizon(8, true), -1.5f, 2.0f).scale, 0.03125f);
  EXPECT_EQ(Choose(Horizon(8, true), -1000.0f, 1000.0f).scale, 0.5f);
  EXPECT_EQ(Choose(Horizon(8, true), 0.0f, 0.0f).scale, 1.0f / 16384.0f);
  // An exact power of two stays: amax 127.5 * 2^-3 gives s = 2^-3 -> floor(3) = 3.
  EXPECT_EQ(Choose(Horizon(8, true), 0.0f, 15.9375f).scale, 0.125f);
}

// ---- randomized bit-exact comparison with the per-system references ------------------------

// Expected qkit result from a reference, in qkit's conventions, or "throws".
struct Expected {
  bool defined = true;
  QParams q;
};

// qkit's contract on top of the system's value: the scale must be finite, the zero point
// finite, and a zero scale appears only where the rule allows it (kNone step / kZeroBelowEps
// multiplier); anything else must throw.
Expected Classify(float scale, float zero_point, bool zero_scale_allowed) {
  Expected e;
  e.q = {scale, zero_point};
  e.defined =
      std::isfinite(scale) && std::isfinite(zero_point) && (scale != 0.0f || zero_scale_allowed);
  return e;
}

float RandomMagnitude(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  switch (kind(rng)) {
    case 0:
      return 0.0f;
    case 1:  // log-uniform over the whole float range, denormals included
      return static_cast<float>(std::pow(10.0, -45.0 + 83.5 * unit(rng)));
    case 2:  // near FLT_MAX
      return static_cast<float>(FLT_MAX * (0.5 + 0.5 * unit(rng)));
    case 3:  // tiny
      return static_cast<float>(std::pow(10.0, -44.0 + 20.0 * unit(rng)));
    case 4: {  // exact powers of two and their neighbours (log2 / floor boundaries)
      const float p = std::ldexp(1.0f, std::uniform_int_distribution<int>(-140, 127)(rng));
      const int nb = std::uniform_int_distribution<int>(-2, 2)(rng);
      float v = p;
      for (int i = 0; i < std::abs(nb); ++i) v = std::nextafter(v, nb < 0 ? 0.0f : kInf);
      return v;
    }
    case 5:  // small integers and halves (ties in min / s)
      return 0.5f * static_cast<float>(std::uniform_int_distribution<int>(0, 600)(rng));
    default:  // typical activations / weights
      return static_cast<float>(std::pow(10.0, -4.0 + 6.0 * unit(rng)));
  }
}

// A random finite range [mn, mx]: both signs, min > 0, max < 0, equal ends, one-ulp ranges.
std::pair<float, float> RandomRange(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> shape(0, 7);
  const float a = RandomMagnitude(rng);
  const float b = RandomMagnitude(rng);
  switch (shape(rng)) {
    case 0:
      return {-a, b};
    case 1:
      return {std::min(a, b), std::max(a, b)};  // min >= 0
    case 2:
      return {-std::max(a, b), -std::min(a, b)};  // max <= 0
    case 3:
      return {a, a};  // equal
    case 4:
      return {-a, -a};
    case 5:
      return {a, std::nextafter(a, kInf)};  // one-ulp range
    case 6:
      return {-a, a};
    default:
      return {-b, std::nextafter(-b, kInf)};
  }
}

// Checks ChooseQParams against `want` for one (preset, range); returns false on mismatch.
::testing::AssertionResult Matches(const char* system, const Preset& p, float mn, float mx,
                                   const Expected& want) {
  QParams got;
  try {
    got = ChooseQParams(mn, mx, p.spec, p.rule);
  } catch (const InvalidArgument& e) {
    if (!want.defined) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << system << " [" << mn << ", " << mx << "] " << p.spec.ToString() << ": threw '"
           << e.what() << "' but the reference gives scale " << want.q.scale << " zp "
           << want.q.zero_point;
  }
  if (!want.defined) {
    return ::testing::AssertionFailure()
           << system << " [" << mn << ", " << mx << "] " << p.spec.ToString()
           << ": expected InvalidArgument (reference scale " << want.q.scale << " zp "
           << want.q.zero_point << "), got scale " << got.scale << " zp " << got.zero_point;
  }
  // The scale bit for bit; the zero point by value (OneFlow's -nearbyint(...) and Distiller's
  // negated zp can be -0; qkit's zero point is always +0, checked separately).
  const bool zp_ok = want.q.zero_point == got.zero_point &&
                     !(got.zero_point == 0.0f && std::signbit(got.zero_point));
  if (SameFloat(want.q.scale, got.scale) && zp_ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << std::setprecision(9) << system << " [" << mn << ", " << mx << "] " << p.spec.ToString()
         << ": want scale " << want.q.scale << " zp " << want.q.zero_point << ", got scale "
         << got.scale << " zp " << got.zero_point;
}

// One system: reference -> Expected for (mn, mx, bits).
struct SystemCase {
  const char* name;
  int min_bits;
  int max_bits;
  Preset (*preset)(int bits);
  Expected (*expected)(float mn, float mx, int bits);
};

const std::vector<SystemCase>& Systems() {
  static const std::vector<SystemCase> systems = {
      {"OneFlowGoogleSymmetric", 2, 16, [](int b) { return OneFlowGoogleSymmetric(b); },
       [](float mn, float mx, int b) {
         const auto r = ref::OneFlowGoogleSymmetric(mn, mx, b);
         return Classify(r.scale, r.zero_point, true);
       }},
      {"OneFlowGoogleAffine", 2, 16, [](int b) { return OneFlowGoogleAffine(b); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(mx - mn)) return Expected{false, {}};
         const auto r = ref::OneFlowGoogleAffine(mn, mx, b);
         return Classify(r.scale, r.zero_point, true);
       }},
      {"OneFlowMovingAverageAffine", 2, 16,
       [](int b) { return OneFlowGoogleAffine(b, Rounding::kHalfAwayFromZero); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(mx - mn)) return Expected{false, {}};
         const auto r = ref::OneFlowMovingAverageAffine(mn, mx, b);
         return Classify(r.scale, r.zero_point, true);
       }},
      {"OneFlowMovingAverageSymmetric", 2, 16, [](int b) { return OneFlowGoogleSymmetric(b); },
       [](float mn, float mx, int b) {
         // The moving average keeps amax in moving_max; the observer's scale is then
         // moving_max / (2^(b-1) - 1).
         const float amax = std::max(std::fabs(mn), std::fabs(mx));
         return Classify(ref::OneFlowMovingAverageSymmetricScale(amax, b), 0.0f, true);
       }},
      {"OneFlowCambricon", 2, 16, [](int b) { return OneFlowCambricon(b); },
       [](float mn, float mx, int b) {
         if (std::max(std::fabs(mn), std::fabs(mx)) == 0.0f) return Expected{false, {}};
         const float step = ref::OneFlowCambriconStep(ref::OneFlowCambriconShift(mn, mx, b));
         return Classify(step, 0.0f, false);
       }},
      {"MegEngineSymmetricQint", 2, 16, [](int b) { return MegEngine(SignedSpec(b), true); },
       [](float mn, float mx, int b) {
         const int64_t h = int64_t{1} << (b - 1);
         const auto r = ref::MegEngineCalculateQParams(mn, mx, -h, h - 1, true);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"MegEngineSymmetricQintNarrow", 2, 16,
       [](int b) { return MegEngine(SignedSpec(b, true), true); },
       [](float mn, float mx, int b) {
         const int64_t h = int64_t{1} << (b - 1);
         const auto r = ref::MegEngineCalculateQParams(mn, mx, -(h - 1), h - 1, true);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"MegEngineAsymmetricQuint", 2, 16, [](int b) { return MegEngine(UnsignedSpec(b), false); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(std::max(mx, 0.0f) - std::min(mn, 0.0f))) return Expected{false, {}};
         const auto r = ref::MegEngineCalculateQParams(mn, mx, 0, (int64_t{1} << b) - 1, false);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"MegEngineAsymmetricQint", 2, 16, [](int b) { return MegEngine(SignedSpec(b), false); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(std::max(mx, 0.0f) - std::min(mn, 0.0f))) return Expected{false, {}};
         const int64_t h = int64_t{1} << (b - 1);
         const auto r = ref::MegEngineCalculateQParams(mn, mx, -h, h - 1, false);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"NvidiaSignedNarrow", 2, 16, [](int b) { return NvidiaSymmetric(b, false); },
       [](float mn, float mx, int b) {
         const float amax = std::max(std::fabs(mn), std::fabs(mx));
         return Classify(ref::NvidiaScale(amax, b, false), 0.0f, true);
       }},
      {"NvidiaSignedWide", 2, 16, [](int b) { return NvidiaSymmetric(b, false, false); },
       [](float mn, float mx, int b) {
         const float amax = std::max(std::fabs(mn), std::fabs(mx));
         return Classify(ref::NvidiaScale(amax, b, false), 0.0f, true);
       }},
      {"NvidiaUnsigned", 2, 16, [](int b) { return NvidiaSymmetric(b, true); },
       [](float mn, float mx, int b) {
         const float amax = std::max(std::fabs(mn), std::fabs(mx));
         return Classify(ref::NvidiaScale(amax, b, true), 0.0f, true);
       }},
      {"NvidiaFakeAffine", 2, 16, [](int b) { return NvidiaAffine(b); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(mx - mn)) return Expected{false, {}};
         const auto r = ref::NvidiaFakeAffine(mn, mx, b);
         return Classify(r.scale, -r.zero_point, true);  // z = -quant_zero
       }},
      {"DistillerSymmetric", 2, 16, [](int b) { return DistillerSymmetric(b, false); },
       [](float mn, float mx, int b) {
         const auto r = ref::DistillerSymmetric(b, std::max(std::fabs(mn), std::fabs(mx)), false);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"DistillerSymmetricRestricted", 2, 16, [](int b) { return DistillerSymmetric(b, true); },
       [](float mn, float mx, int b) {
         const auto r = ref::DistillerSymmetric(b, std::max(std::fabs(mn), std::fabs(mx)), true);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"DistillerAsymmetricUnsigned", 2, 16,
       [](int b) { return DistillerAsymmetric(b, false, true); },
       [](float mn, float mx, int b) {
         const auto r = ref::DistillerAsymmetric(b, mn, mx, true, false);
         return Classify(r.scale, -r.zero_point, false);  // z = -zp
       }},
      {"DistillerAsymmetricSigned", 2, 16, [](int b) { return DistillerAsymmetric(b, true, true); },
       [](float mn, float mx, int b) {
         const auto r = ref::DistillerAsymmetric(b, mn, mx, true, true);
         return Classify(r.scale, -r.zero_point, false);
       }},
      {"DistillerAsymmetricNonIntegral", 2, 16,
       [](int b) { return DistillerAsymmetric(b, true, false); },
       [](float mn, float mx, int b) {
         const auto r = ref::DistillerAsymmetric(b, mn, mx, false, true);
         return Classify(r.scale, -r.zero_point, false);
       }},
      {"TorchSymmetricQint", 2, 16, [](int b) { return TorchObserver(SignedSpec(b), true); },
       [](float mn, float mx, int b) {
         const int64_t h = int64_t{1} << (b - 1);
         const auto r =
             ref::TorchCalculateQParams(mn, mx, -h, h - 1, ref::TorchQScheme::kSymmetric);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"TorchSymmetricQuint8", 8, 8,
       [](int b) { return TorchObserver(UnsignedSpec(b), true, SymmetricZeroPoint::kMidpointUp); },
       [](float mn, float mx, int b) {
         const auto r = ref::TorchCalculateQParams(mn, mx, 0, 255, ref::TorchQScheme::kSymmetric,
                                                   /*dtype_is_quint8=*/true);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"TorchSymmetricCustomRange", 2, 16,
       [](int b) {
         return TorchObserver(UnsignedSpec(b), true, SymmetricZeroPoint::kMidpointDown);
       },
       [](float mn, float mx, int b) {
         const auto r = ref::TorchCalculateQParams(mn, mx, 0, (int64_t{1} << b) - 1,
                                                   ref::TorchQScheme::kSymmetric, true, true);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"TorchAffineQuint", 2, 16, [](int b) { return TorchObserver(UnsignedSpec(b), false); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(std::max(mx, 0.0f) - std::min(mn, 0.0f))) return Expected{false, {}};
         const auto r = ref::TorchCalculateQParams(mn, mx, 0, (int64_t{1} << b) - 1,
                                                   ref::TorchQScheme::kAffine);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"TorchAffineQint", 2, 16, [](int b) { return TorchObserver(SignedSpec(b), false); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(std::max(mx, 0.0f) - std::min(mn, 0.0f))) return Expected{false, {}};
         const int64_t h = int64_t{1} << (b - 1);
         const auto r = ref::TorchCalculateQParams(mn, mx, -h, h - 1, ref::TorchQScheme::kAffine);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"TorchFloatQParams", 2, 16, [](int b) { return TorchFloatQParams(UnsignedSpec(b)); },
       [](float mn, float mx, int b) {
         if (!std::isfinite(mx - mn)) return Expected{false, {}};
         const auto r = ref::TorchCalculateQParams(mn, mx, 0, (int64_t{1} << b) - 1,
                                                   ref::TorchQScheme::kAffineFloatQParams);
         return Classify(r.scale, r.zero_point, false);
       }},
      {"Horizon", 2, 16, [](int b) { return Horizon(b); },
       [](float mn, float mx, int b) {
         const int64_t h = int64_t{1} << (b - 1);
         return Classify(ref::HorizonScale(mn, mx, -h, h - 1), 0.0f, false);
       }},
      {"HorizonBernoulli", 2, 16, [](int b) { return Horizon(b, true); },
       [](float mn, float mx, int b) {
         const int64_t h = int64_t{1} << (b - 1);
         return Classify(ref::HorizonScale(mn, mx, -h, h - 1, true), 0.0f, false);
       }},
  };
  return systems;
}

TEST(QParamsRandomTest, EverySystemMatchesItsReferenceBitForBit) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  // Fixed edge ranges, then random ones.
  std::vector<std::pair<float, float>> ranges = {
      {0.0f, 0.0f},
      {-0.0f, 0.0f},
      {-1.5f, 2.0f},
      {1.0f, 2.0f},
      {-2.0f, -1.0f},
      {-FLT_MAX, FLT_MAX},
      {-FLT_MAX, 0.0f},
      {0.0f, FLT_MAX},
      {FLT_MAX, FLT_MAX},
      {-FLT_TRUE_MIN, 0.0f},
      {0.0f, FLT_TRUE_MIN},
      {FLT_MIN, FLT_MIN},
      {-1e-40f, 1e-40f},
      {5.0f, 10.0f},
      {-10.0f, -5.0f},
      {-0.25f, 7.25f},
      {-2.0f, 10.0f},
      {3.0f, 3.0f},
      {0.0f, 1.0f / 16777216.0f},
      {-1.0f / 16777216.0f, 0.0f},
  };
  for (int i = 0; i < 2000; ++i) ranges.push_back(RandomRange(rng));
  int64_t checked = 0, undefined = 0;
  for (const SystemCase& sys : Systems()) {
    for (int bits = sys.min_bits; bits <= sys.max_bits; ++bits) {
      const Preset p = sys.preset(bits);
      for (const auto& [mn, mx] : ranges) {
        const Expected want = sys.expected(mn, mx, bits);
        undefined += want.defined ? 0 : 1;
        ++checked;
        ASSERT_TRUE(Matches(sys.name, p, mn, mx, want)) << " bits=" << bits;
      }
    }
  }
  // Both outcomes are exercised.
  EXPECT_GT(undefined, 0);
  EXPECT_GT(checked - undefined, checked / 2);
}

TEST(QParamsRandomTest, ArrayFormEqualsScalarForm) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const SystemCase& sys : Systems()) {
    const Preset p = sys.preset(sys.max_bits >= 8 && sys.min_bits <= 8 ? 8 : sys.min_bits);
    for (int64_t count : {0, 1, 3, 64, 1000}) {
      std::vector<float> mn, mx;
      while (static_cast<int64_t>(mn.size()) < count) {
        auto [a, b] = RandomRange(rng);
        try {
          ChooseQParams(a, b, p.spec, p.rule);
        } catch (const InvalidArgument&) {
          continue;  // undefined ranges are covered by the scalar test
        }
        mn.push_back(a);
        mx.push_back(b);
      }
      std::vector<float> scale(count, -7.0f), zp(count, -7.0f);
      ChooseQParams(mn.data(), mx.data(), count, p.spec, p.rule, scale.data(), zp.data());
      for (int64_t i = 0; i < count; ++i) {
        const QParams one = ChooseQParams(mn[i], mx[i], p.spec, p.rule);
        ASSERT_TRUE(SameFloat(one.scale, scale[i])) << sys.name << " [" << i << "]";
        ASSERT_TRUE(SameFloat(one.zero_point, zp[i])) << sys.name << " [" << i << "]";
      }
    }
  }
}

TEST(QParamsTest, ArrayFormMayWriteOverItsInputs) {
  // scale_out aliases min, zero_point_out aliases max: everything is read before writing.
  std::vector<float> a = {-1.5f, -2.0f, 0.0f};
  std::vector<float> b = {2.0f, 10.0f, 0.0f};
  const Preset p = TorchObserver(UnsignedSpec(8), false);
  std::vector<QParams> want;
  for (size_t i = 0; i < a.size(); ++i) want.push_back(Choose(p, a[i], b[i]));
  ChooseQParams(a.data(), b.data(), 3, p.spec, p.rule, a.data(), b.data());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i], want[i].scale);
    EXPECT_EQ(b[i], want[i].zero_point);
  }
}

TEST(QParamsTest, MultiplyReciprocalChoosesLikeDivide) {
  // ScaleMode::kMultiplyReciprocal only changes the fake-quant quotient, not the choice.
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (bool symmetric : {true, false}) {
    QuantSpec div = UnsignedSpec(8);
    div.symmetric = symmetric;
    QuantSpec rec = div;
    rec.scale_mode = ScaleMode::kMultiplyReciprocal;
    for (int i = 0; i < 200; ++i) {
      auto [mn, mx] = RandomRange(rng);
      if (!std::isfinite(mx - mn)) continue;
      const QParams a = ChooseQParams(mn, mx, div, QParamsRule{});
      const QParams b = ChooseQParams(mn, mx, rec, QParamsRule{});
      ASSERT_TRUE(SameFloat(a.scale, b.scale) && SameFloat(a.zero_point, b.zero_point));
    }
  }
}

TEST(QParamsTest, QkitDefaultsAndZeroPointRoundings) {
  // qkit's default rule: divisor (qmax - qmin) / 2, eps 2^-23, RNE, widened, clamped.
  QParams d = ChooseQParams(-1.5f, 2.0f, SignedSpec(8), QParamsRule{});
  EXPECT_EQ(d.scale, 2.0f / 127.5f);
  EXPECT_EQ(d.zero_point, 0.0f);
  // Zero-point rounding modes on the tie min/s = -0.5 (quint4, [-0.25, 7.25], s = 0.5):
  // RNE 0 -> z 0; RHAZ -1 -> z 1; RFLOOR floor(-0.5 + 0.5) = 0 -> z 0. And -1.5 ([-0.75,
  // 6.75]): RNE -2 -> 2, RHAZ -2 -> 2, RFLOOR floor(-1.0) = -1 -> 1.
  QuantSpec q4 = UnsignedSpec(4);
  q4.symmetric = false;
  QParamsRule rule;
  const std::pair<Rounding, float> tie05[] = {{Rounding::kHalfToEven, 0.0f},
                                              {Rounding::kHalfAwayFromZero, 1.0f},
                                              {Rounding::kFloorAddHalf, 0.0f}};
  for (auto [mode, z] : tie05) {
    rule.zero_point_rounding = mode;
    EXPECT_EQ(ChooseQParams(-0.25f, 7.25f, q4, rule).zero_point, z) << RoundingName(mode);
  }
  const std::pair<Rounding, float> tie15[] = {{Rounding::kHalfToEven, 2.0f},
                                              {Rounding::kHalfAwayFromZero, 2.0f},
                                              {Rounding::kFloorAddHalf, 1.0f}};
  for (auto [mode, z] : tie15) {
    rule.zero_point_rounding = mode;
    EXPECT_EQ(ChooseQParams(-0.75f, 6.75f, q4, rule).zero_point, z) << RoundingName(mode);
  }
  // A zero zero point is +0, never -0 (OneFlow's -nearbyint(+0) would be -0).
  const QParams of = Choose(OneFlowGoogleAffine(8), 0.0f, 1.0f);
  EXPECT_EQ(of.zero_point, 0.0f);
  EXPECT_FALSE(std::signbit(of.zero_point));
  // kFloorAtEps in multiplier mode caps m at 1/eps.
  QuantSpec mul = SignedSpec(8);
  mul.scale_mode = ScaleMode::kMultiplier;
  EXPECT_EQ(ChooseQParams(0.0f, 0.0f, mul, QParamsRule{}).scale, 1.0f / kF32Eps);
  // Cambricon and Bernoulli in multiplier mode give the inverse powers of two.
  QParamsRule cam;
  cam.restriction = ScaleRestriction::kPow2FloorLog2Amax;
  EXPECT_EQ(ChooseQParams(-1.5f, 2.0f, mul, cam).scale, 32.0f);
  QParamsRule bern;
  bern.restriction = ScaleRestriction::kPow2Bernoulli;
  EXPECT_EQ(ChooseQParams(-1.5f, 2.0f, mul, bern).scale, 32.0f);  // m = 63.75 -> 2^5
  // Symmetric midpoints on a signed range: (qmin + qmax) / 2 = -0.5 -> up 0, down -1.
  QParamsRule mid;
  mid.symmetric_zero_point = SymmetricZeroPoint::kMidpointDown;
  EXPECT_EQ(ChooseQParams(-1.0f, 1.0f, SignedSpec(8), mid).zero_point, -1.0f);
  mid.symmetric_zero_point = SymmetricZeroPoint::kMidpointUp;
  EXPECT_EQ(ChooseQParams(-1.0f, 1.0f, SignedSpec(8), mid).zero_point, 0.0f);
}

// ---- errors -------------------------------------------------------------------------------

TEST(QParamsErrorTest, BadRanges) {
  const QuantSpec spec;
  const QParamsRule rule;
  ExpectInvalid([&] { ChooseQParams(3.0f, 2.0f, spec, rule); },
                {"qkit::ChooseQParams", "`min`=3", "`max`=2"});
  ExpectInvalid([&] { ChooseQParams(kNaN, 2.0f, spec, rule); }, {"`min`=nan", "not finite"});
  ExpectInvalid([&] { ChooseQParams(0.0f, kNaN, spec, rule); }, {"`max`=nan", "not finite"});
  ExpectInvalid([&] { ChooseQParams(-kInf, 2.0f, spec, rule); }, {"`min`=-inf"});
  ExpectInvalid([&] { ChooseQParams(0.0f, kInf, spec, rule); }, {"`max`=inf"});
  // The caller's name is used.
  ExpectInvalid([&] { ChooseQParams(kNaN, 2.0f, spec, rule, "qkit::MinMaxObserver"); },
                {"qkit::MinMaxObserver: `min`=nan"});
  // Affine: the widened range overflows float32.
  QuantSpec affine = spec;
  affine.symmetric = false;
  ExpectInvalid([&] { ChooseQParams(-FLT_MAX, FLT_MAX, affine, rule); },
                {"overflows", "`min`=-3.40282347e+38"});
}

TEST(QParamsErrorTest, ArrayFormNamesTheIndexAndWritesNothing) {
  const float mn[3] = {-1.0f, 2.0f, kNaN};
  const float mx[3] = {1.0f, 1.0f, 0.0f};
  float scale[3] = {-7.0f, -7.0f, -7.0f};
  float zp[3] = {-7.0f, -7.0f, -7.0f};
  const QuantSpec spec;
  const QParamsRule rule;
  ExpectInvalid([&] { ChooseQParams(mn, mx, 3, spec, rule, scale, zp); },
                {"`min`[1]=2", "`max`[1]=1"});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(scale[i], -7.0f);  // nothing written before the error
    EXPECT_EQ(zp[i], -7.0f);
  }
  const float ok_mn[2] = {-1.0f, kNaN};
  const float ok_mx[2] = {1.0f, 1.0f};
  ExpectInvalid([&] { ChooseQParams(ok_mn, ok_mx, 2, spec, rule, scale, zp); }, {"`min`[1]=nan"});
  EXPECT_EQ(scale[0], -7.0f);
  ExpectInvalid([&] { ChooseQParams(mn, mx, -1, spec, rule, scale, zp); }, {"`count`=-1"});
  ExpectInvalid([&] { ChooseQParams(nullptr, mx, 1, spec, rule, scale, zp); }, {"`min` is null"});
  ExpectInvalid([&] { ChooseQParams(mn, nullptr, 1, spec, rule, scale, zp); }, {"`max` is null"});
  ExpectInvalid([&] { ChooseQParams(mn, mx, 1, spec, rule, nullptr, zp); },
                {"`scale_out` is null"});
  ExpectInvalid([&] { ChooseQParams(mn, mx, 1, spec, rule, scale, nullptr); },
                {"`zero_point_out` is null"});
  // count 0 with null pointers is valid and writes nothing.
  ChooseQParams(nullptr, nullptr, 0, spec, rule, nullptr, nullptr);
}

TEST(QParamsErrorTest, InconsistentRules) {
  QParamsRule zero_below;
  zero_below.degenerate = DegenerateRule::kZeroBelowEps;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, QuantSpec{}, zero_below); },
                {"kZeroBelowEps", "(got divide)"});
  QuantSpec mul;
  mul.scale_mode = ScaleMode::kMultiplier;
  QParamsRule step_eps;
  step_eps.degenerate = DegenerateRule::kOneIfStepAtMostEps;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, mul, step_eps); },
                {"kOneIfStepAtMostEps", "multiplier"});
  QParamsRule recip;
  recip.reciprocal_multiplier = true;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, QuantSpec{}, recip); },
                {"`rule.reciprocal_multiplier`=true", "(got divide)"});
  QParamsRule cam;
  cam.restriction = ScaleRestriction::kPow2FloorLog2Amax;
  QuantSpec affine;
  affine.symmetric = false;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, affine, cam); },
                {"cambricon", "`symmetric`=false"});
  for (float eps : {kNaN, kInf, -1.0f}) {
    QParamsRule bad;
    bad.eps = eps;
    ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, QuantSpec{}, bad); }, {"`rule.eps`="});
  }
  QParamsRule zero_eps;
  zero_eps.eps = 0.0f;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, QuantSpec{}, zero_eps); },
                {"`rule.eps`=0", "kFloorAtEps"});
  QParamsRule bad_enum;
  bad_enum.divisor = static_cast<SymmetricDivisor>(9);
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, QuantSpec{}, bad_enum); }, {"`rule.divisor`=9"});
  // The spec itself is validated.
  QuantSpec bits17;
  bits17.bits = 17;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, bits17, QParamsRule{}); }, {"`bits`=17"});
  // kQuantMax on a range whose qmax is 0 has no divisor.
  QuantSpec neg;
  neg.quant_min_override = -8;
  neg.quant_max_override = 0;
  QParamsRule qmax_div;
  qmax_div.divisor = SymmetricDivisor::kQuantMax;
  ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, neg, qmax_div); }, {"divisor", "`quant_max`=0"});
  // A symmetric spec whose quant range excludes its zero point 0 (qparams_fuzzer finding).
  for (auto [lo, hi] : {std::pair<int64_t, int64_t>{65535, 66473}, {1, 255}, {-255, -1}}) {
    QuantSpec off;
    off.bits = 16;
    off.quant_min_override = lo;
    off.quant_max_override = hi;
    ExpectInvalid([&] { ChooseQParams(-1.0f, 1.0f, off, QParamsRule{}); },
                  {"symmetric zero point 0", "`quant_min`=" + std::to_string(lo)});
  }
  // The midpoint zero points always lie inside the range: accepted.
  QuantSpec off;
  off.quant_min_override = 1;
  off.quant_max_override = 255;
  QParamsRule mid;
  mid.symmetric_zero_point = SymmetricZeroPoint::kMidpointUp;
  EXPECT_EQ(ChooseQParams(-1.0f, 1.0f, off, mid).zero_point, 128.0f);
}

TEST(QParamsErrorTest, UndefinedResults) {
  // Cambricon with amax 0: log2(0) is undefined in OneFlow (SPEC §2.6).
  const Preset cam = OneFlowCambricon(8);
  ExpectInvalid([&] { Choose(cam, 0.0f, 0.0f); }, {"cambricon", "amax", "`min`=0", "`max`=0"});
  ExpectInvalid([&] { Choose(cam, -0.0f, 0.0f); }, {"cambricon"});
  // Cambricon steps outside float32: 2^(-149 - 6) underflows, 2^(128 - 0) overflows at 2 bits.
  ExpectInvalid([&] { Choose(cam, 0.0f, FLT_TRUE_MIN); }, {"cambricon shift -155"});
  ExpectInvalid([&] { Choose(OneFlowCambricon(2), 0.0f, FLT_MAX); }, {"cambricon shift 128"});
  // OneFlow affine on a constant tensor: step 0, zero point -RNE(x/0) undefined (SPEC §2.6).
  ExpectInvalid([&] { Choose(OneFlowGoogleAffine(8), 3.0f, 3.0f); },
                {"zero point", "undefined", "`min`=3"});
  // Distiller: a denormal saturation makes n / sat overflow.
  ExpectInvalid([&] { Choose(DistillerSymmetric(8, false), 0.0f, 1e-40f); },
                {"non-finite multiplier"});
  // A multiplier d / amax overflowing with no epsilon rule (kNone, multiplier mode).
  QuantSpec mul;
  mul.scale_mode = ScaleMode::kMultiplier;
  QParamsRule none;
  none.degenerate = DegenerateRule::kNone;
  ExpectInvalid([&] { ChooseQParams(0.0f, 0.0f, mul, none); }, {"non-finite multiplier"});
  // A step that underflows to 0 where the rule does not allow a zero step.
  QParamsRule one_if_zero;
  one_if_zero.degenerate = DegenerateRule::kOneIfZeroRange;
  ExpectInvalid([&] { ChooseQParams(0.0f, FLT_TRUE_MIN, QuantSpec{}, one_if_zero); },
                {"zero step"});
  EXPECT_EQ(ChooseQParams(0.0f, 0.0f, QuantSpec{}, one_if_zero).scale, 1.0f);
}

TEST(QParamsValidateTest, AcceptsUsableParams) {
  const float scale[3] = {0.5f, 1e-30f, 3.0f};
  const float zp[3] = {-128.0f, 0.0f, 127.0f};
  ValidateQParams(scale, zp, 3, QuantSpec{}, "test");
  ValidateQParams(scale, nullptr, 3, QuantSpec{}, "test");  // null zero point = 0
  ValidateQParams(nullptr, nullptr, 0, QuantSpec{}, "test");
  QuantSpec mul;
  mul.scale_mode = ScaleMode::kMultiplier;
  const float m0[1] = {0.0f};  // NVIDIA's "everything to the zero point" multiplier
  ValidateQParams(m0, nullptr, 1, mul, "test");
}

TEST(QParamsValidateTest, RejectsBadScalesAndZeroPoints) {
  const QuantSpec spec;  // [-128, 127]
  for (float bad : {0.0f, -1.0f, kNaN, kInf, -kInf, -0.0f}) {
    const float scale[2] = {1.0f, bad};
    std::ostringstream value;
    value << bad;
    ExpectInvalid([&] { ValidateQParams(scale, nullptr, 2, spec, "qkit::FakeQuantize"); },
                  {"qkit::FakeQuantize: `scale`[1]=" + value.str()});
  }
  QuantSpec mul;
  mul.scale_mode = ScaleMode::kMultiplier;
  const float neg[1] = {-1.0f};
  ExpectInvalid([&] { ValidateQParams(neg, nullptr, 1, mul, "f"); }, {"`scale`[0]=-1", ">= 0"});
  const float inf_m[1] = {kInf};
  ExpectInvalid([&] { ValidateQParams(inf_m, nullptr, 1, mul, "f"); }, {"`scale`[0]=inf"});
  const float one[2] = {1.0f, 1.0f};
  const float zp_nan[2] = {0.0f, kNaN};
  ExpectInvalid([&] { ValidateQParams(one, zp_nan, 2, spec, "f"); },
                {"f: `zero_point`[1]=nan", "not finite"});
  const float zp_inf[1] = {-kInf};
  ExpectInvalid([&] { ValidateQParams(one, zp_inf, 1, spec, "f"); }, {"`zero_point`[0]=-inf"});
  const float zp_hi[2] = {127.0f, 128.0f};
  ExpectInvalid([&] { ValidateQParams(one, zp_hi, 2, spec, "f"); },
                {"`zero_point`[1]=128", "[`quant_min`=-128, `quant_max`=127]"});
  const float zp_lo[1] = {-129.0f};
  ExpectInvalid([&] { ValidateQParams(one, zp_lo, 1, spec, "f"); }, {"`zero_point`[0]=-129"});
  // allow_zero_point_outside_range: integral zero points within 2^24 of both ends pass.
  QuantSpec outside = spec;
  outside.allow_zero_point_outside_range = true;
  EXPECT_NO_THROW(ValidateQParams(one, zp_hi, 2, outside, "f"));
  EXPECT_NO_THROW(ValidateQParams(one, zp_lo, 1, outside, "f"));
  const float zp_frac[1] = {200.5f};
  ExpectInvalid([&] { ValidateQParams(one, zp_frac, 1, outside, "f"); },
                {"`zero_point`[0]=200.5", "integral"});
  const float zp_far[1] = {16777216.0f};
  ExpectInvalid([&] { ValidateQParams(one, zp_far, 1, outside, "f"); },
                {"`zero_point`[0]=16777216", "2^24"});
  ExpectInvalid([&] { ValidateQParams(one, zp_inf, 1, outside, "f"); }, {"`zero_point`[0]=-inf"});
  QuantSpec pos;  // a range without 0: a null zero point (0) is outside it
  pos.quant_min_override = 1;
  pos.quant_max_override = 10;
  ExpectInvalid([&] { ValidateQParams(one, nullptr, 1, pos, "f"); },
                {"`zero_point`=null (0)", "`quant_min`=1"});
  ExpectInvalid([&] { ValidateQParams(nullptr, nullptr, 1, spec, "f"); }, {"`scale` is null"});
  ExpectInvalid([&] { ValidateQParams(one, nullptr, -2, spec, "f"); }, {"`count`=-2"});
  QuantSpec bad_spec;
  bad_spec.bits = 1;
  ExpectInvalid([&] { ValidateQParams(one, nullptr, 1, bad_spec, "f"); }, {"`bits`=1"});
}

}  // namespace
}  // namespace qkit
