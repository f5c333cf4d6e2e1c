// End-to-end golden examples from SPEC.md: ChooseQParams + Quantize / FakeQuantize reproduce
// the systems' documented codes and outputs (NVIDIA §4.7 / §10.1, the §10.2 vector through every
// system).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qkit/context.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"
#include "util/compare.h"

namespace qkit {
namespace {

std::vector<int32_t> QuantizeCodes(const std::vector<float>& x, const QuantSpec& spec,
                                   const QParams& qp) {
  std::vector<float> in = x;
  std::vector<int32_t> q(x.size(), -12345);
  const QParamsView view{&qp.scale, &qp.zero_point, 1};
  Quantize(TensorView::Vector(in.data(), static_cast<int64_t>(in.size())), spec, view,
           TensorView::Contiguous(q.data(), DType::kInt32, {static_cast<int64_t>(q.size())}),
           Context{});
  return q;
}

std::vector<float> FakeQuant(const std::vector<float>& x, const QuantSpec& spec,
                             const QParams& qp) {
  std::vector<float> in = x;
  std::vector<float> out(x.size(), -12345.0f);
  const QParamsView view{&qp.scale, &qp.zero_point, 1};
  FakeQuantize(TensorView::Vector(in.data(), static_cast<int64_t>(in.size())), spec, view,
               TensorView::Vector(out.data(), static_cast<int64_t>(out.size())), nullptr,
               Context{});
  return out;
}

QParams ChooseFromData(const std::vector<float>& x, const QuantSpec& spec,
                       const QParamsRule& rule) {
  const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
  return ChooseQParams(*mn, *mx, spec, rule);
}

// ---- NVIDIA pytorch-quantization golden (SPEC §4.7 / §10.1) -------------------------------

TEST(GoldenTest, NvidiaTensorQuantDocstringExample) {
  // torch.manual_seed(12345); x = torch.rand(10): the float32 values documented in §4.7.
  const std::vector<float> x = {0.9817181825637817f,  0.8796065449714661f,  0.992143452167511f,
                                0.461067259311676f,   0.08321595191955566f, 0.17843109369277954f,
                                0.36743152141571045f, 0.5676497220993042f,  0.3376067280769348f,
                                0.21194660663604736f};
  // tensor_quant(x, x.abs().max()): the function defaults, 8-bit signed narrow range,
  // multiplier scale = 127 / amax, RNE, amax <= 2^-24 -> 0.
  QuantSpec spec;
  spec.narrow_range = true;
  spec.scale_mode = ScaleMode::kMultiplier;
  QParamsRule rule;
  rule.divisor = SymmetricDivisor::kQuantMax;
  rule.degenerate = DegenerateRule::kZeroBelowEps;
  rule.eps = 1.0f / static_cast<float>(1 << 24);
  const QParams qp = ChooseFromData(x, spec, rule);
  EXPECT_EQ(qp.scale, 128.00567626953125f);  // printed 128.0057
  EXPECT_EQ(qp.zero_point, 0.0f);
  const std::vector<int32_t> want_q = {126, 113, 127, 59, 11, 23, 47, 73, 43, 27};
  EXPECT_EQ(QuantizeCodes(x, spec, qp), want_q);
  // fake_tensor_quant = q / scale (a true division by the multiplier, §4.2).
  const std::vector<float> fake = FakeQuant(x, spec, qp);
  std::vector<float> want_fake;
  for (int32_t q : want_q) want_fake.push_back(static_cast<float>(q) / 128.00567626953125f);
  EXPECT_TRUE(test::BitwiseEqual(want_fake.data(), fake.data(), 10, x.data()));
  // ... which are the documented outputs, printed to 7 decimals: each lies within half a unit
  // of the last printed digit (compared in double: the printed decimals are not floats).
  const double documented[10] = {0.9843314, 0.8827733, 0.9921435, 0.4609171, 0.0859337,
                                 0.1796795, 0.3671712, 0.5702872, 0.3359226, 0.2109281};
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(static_cast<double>(fake[i]), documented[i], 5e-8) << i;
  // "The largest element does not round-trip bit-exactly: 0.99214345 -> 0.99214351."
  EXPECT_NE(fake[2], x[2]);
  EXPECT_EQ(fake[2], 0.99214351f);
}

// ---- SPEC §10.2: one vector through every system (8 bits) ---------------------------------

const std::vector<float>& Vector102() {
  static const std::vector<float> x = {-1.5f, -0.75f, -0.2f, 0.0f, 0.1f, 0.35f, 0.9f, 2.0f};
  return x;
}

struct Row {
  const char* name;
  QuantSpec spec;
  QParamsRule rule;
  std::vector<int32_t> codes;  // SPEC §10.2
};

std::vector<Row> Rows102() {
  std::vector<Row> rows;
  const std::vector<int32_t> sym_wide = {-96, -48, -13, 0, 6, 22, 57, 127};
  const std::vector<int32_t> sym_127 = {-95, -48, -13, 0, 6, 22, 57, 127};
  const std::vector<int32_t> affine = {0, 54, 94, 109, 116, 134, 175, 255};
  {  // A PyTorch MinMax qint8 per_tensor_symmetric: x * f32(1/s), RNE, zp after rounding.
    Row r{"A PyTorch qint8 symmetric", {}, {}, sym_wide};
    r.spec.scale_mode = ScaleMode::kMultiplyReciprocal;
    rows.push_back(r);
  }
  {  // B PyTorch MinMax quint8 per_tensor_affine.
    Row r{"B PyTorch quint8 affine", {}, {}, affine};
    r.spec.is_signed = false;
    r.spec.symmetric = false;
    r.spec.scale_mode = ScaleMode::kMultiplyReciprocal;
    rows.push_back(r);
  }
  {  // C MegEngine qint8: x / s, RHAZ, eps 1e-5, divisor 127.5.
    Row r{"C MegEngine qint8", {}, {}, sym_wide};
    r.spec.rounding = Rounding::kHalfAwayFromZero;
    r.rule.eps = 1e-5f;
    r.rule.zero_point_rounding = Rounding::kHalfAwayFromZero;
    r.rule.clamp_zero_point = false;
    rows.push_back(r);
    // C' qint8_narrow: divisor 127, range [-127, 127].
    r.name = "C' MegEngine qint8_narrow";
    r.spec.narrow_range = true;
    r.codes = sym_127;
    rows.push_back(r);
  }
  {  // D OneFlow google symmetric: amax / 127, [-128, 127], no eps.
    Row r{"D OneFlow google symmetric", {}, {}, sym_127};
    r.rule.divisor = SymmetricDivisor::kQuantMax;
    r.rule.degenerate = DegenerateRule::kNone;
    rows.push_back(r);
  }
  {  // E OneFlow google affine: not widened, RNE zero point, q = RNE(x/s + z) (CPU kernel).
    Row r{"E OneFlow google affine", {}, {}, affine};
    r.spec.is_signed = false;
    r.spec.symmetric = false;
    r.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
    r.rule.widen_to_zero = false;
    r.rule.degenerate = DegenerateRule::kNone;
    r.rule.clamp_zero_point = false;
    rows.push_back(r);
  }
  {  // F OneFlow cambricon: shift -5, step 1/32.
    Row r{"F OneFlow cambricon", {}, {}, {-48, -24, -6, 0, 3, 11, 29, 64}};
    r.rule.restriction = ScaleRestriction::kPow2FloorLog2Amax;
    r.rule.degenerate = DegenerateRule::kNone;
    rows.push_back(r);
  }
  {  // G NVIDIA tensor_quant: multiplier 127 / amax, narrow range.
    Row r{"G NVIDIA tensor_quant", {}, {}, sym_127};
    r.spec.narrow_range = true;
    r.spec.scale_mode = ScaleMode::kMultiplier;
    r.rule.divisor = SymmetricDivisor::kQuantMax;
    r.rule.degenerate = DegenerateRule::kZeroBelowEps;
    r.rule.eps = 1.0f / static_cast<float>(1 << 24);
    rows.push_back(r);
  }
  {  // H Distiller SYMMETRIC: multiplier 127.5 / amax, no clamp: 2.0 -> 128 (257 levels).
    Row r{"H Distiller SYMMETRIC", {}, {}, {-96, -48, -13, 0, 6, 22, 57, 128}};
    r.spec.quant_min_override = -128;
    r.spec.quant_max_override = 128;
    r.spec.scale_mode = ScaleMode::kMultiplier;
    r.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
    r.rule.divisor = SymmetricDivisor::kHalfFullRange;
    r.rule.degenerate = DegenerateRule::kOneIfZeroRange;
    r.rule.reciprocal_multiplier = true;  // torch's 127.5 / sat
    rows.push_back(r);
  }
  {  // I Distiller ASYMMETRIC_UNSIGNED: q = RNE(m*x - zp) = RNE(m*x + z).
    Row r{"I Distiller ASYMMETRIC_UNSIGNED", {}, {}, affine};
    r.spec.is_signed = false;
    r.spec.symmetric = false;
    r.spec.scale_mode = ScaleMode::kMultiplier;
    r.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
    r.rule.degenerate = DegenerateRule::kOneIfZeroRange;
    r.rule.reciprocal_multiplier = true;  // torch's 255 / diff
    r.rule.clamp_zero_point = false;
    rows.push_back(r);
  }
  {  // J Horizon qint8, both round modes (no ties in this vector).
    Row r{"J Horizon qint8 half_to_even", {}, {}, sym_wide};
    rows.push_back(r);
    r.name = "J Horizon qint8 bpu_round";
    r.spec.rounding = Rounding::kFloorAddHalf;
    rows.push_back(r);
  }
  return rows;
}

TEST(GoldenTest, Spec10_2VectorThroughEverySystem) {
  for (const Row& row : Rows102()) {
    SCOPED_TRACE(row.name);
    const QParams qp = ChooseFromData(Vector102(), row.spec, row.rule);
    EXPECT_EQ(QuantizeCodes(Vector102(), row.spec, qp), row.codes);
    // FakeQuantize dequantizes exactly those codes: (q - z) * s, or (q - z) / m.
    const std::vector<float> fake = FakeQuant(Vector102(), row.spec, qp);
    std::vector<float> want;
    for (int32_t q : row.codes) {
      const float centered = static_cast<float>(q) - qp.zero_point;
      want.push_back(row.spec.scale_mode == ScaleMode::kMultiplier ? centered / qp.scale
                                                                   : centered * qp.scale);
    }
    EXPECT_TRUE(test::BitwiseEqual(want.data(), fake.data(), static_cast<int64_t>(want.size()),
                                   Vector102().data()));
  }
}

TEST(GoldenTest, Spec10_2DistillerSymmetricDequantizesBeyondTheRange) {
  // §5.2 / §10.2 H: x = 2.0 maps to RNE(127.5) = 128, which dequantizes to 2.0078433.
  const Row h = Rows102()[8];
  ASSERT_EQ(std::string(h.name), "H Distiller SYMMETRIC");
  const QParams qp = ChooseFromData(Vector102(), h.spec, h.rule);
  EXPECT_EQ(qp.scale, 63.75f);
  const std::vector<float> fake = FakeQuant(Vector102(), h.spec, qp);
  EXPECT_EQ(fake[7], 128.0f / 63.75f);
  EXPECT_NEAR(static_cast<double>(fake[7]), 2.0078433, 5e-8);  // printed 2.0078433
}

}  // namespace
}  // namespace qkit
