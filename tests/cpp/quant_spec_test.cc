// QuantSpec ranges and validation, TensorView helpers, target forcing.
#include <gtest/gtest.h>

#include "qkit/error.h"
#include "qkit/qkit.h"

namespace qkit {
namespace {

TEST(QuantSpecTest, RangesFollowBitsSignAndNarrow) {
  QuantSpec s;
  EXPECT_EQ(s.QuantMin(), -128);  // signed 8-bit default
  EXPECT_EQ(s.QuantMax(), 127);
  s.narrow_range = true;
  EXPECT_EQ(s.QuantMin(), -127);  // MegEngine qint8_narrow, NVIDIA narrow_range
  s = QuantSpec{};
  s.is_signed = false;
  EXPECT_EQ(s.QuantMin(), 0);
  EXPECT_EQ(s.QuantMax(), 255);
  s.bits = 4;
  EXPECT_EQ(s.QuantMax(), 15);  // quint4
  s = QuantSpec{};
  s.bits = 16;
  EXPECT_EQ(s.QuantMin(), -32768);  // Horizon qint16
  EXPECT_EQ(s.QuantMax(), 32767);
  s.bits = 2;
  EXPECT_EQ(s.QuantMin(), -2);  // MegEngine qint2
  EXPECT_EQ(s.QuantMax(), 1);
  s.quant_min_override = -128;  // Distiller's 257-level symmetric mode
  s.quant_max_override = 128;
  EXPECT_EQ(s.QuantMin(), -128);
  EXPECT_EQ(s.QuantMax(), 128);
}

TEST(QuantSpecTest, ValidateNamesTheFieldAndValue) {
  for (int bits : {-1, 0, 1, 17}) {
    QuantSpec s;
    s.bits = bits;
    try {
      s.Validate("test");
      FAIL() << "bits=" << bits << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("`bits`=" + std::to_string(bits)), std::string::npos)
          << e.what();
    }
  }
  QuantSpec s;
  s.is_signed = false;
  s.narrow_range = true;
  EXPECT_THROW(s.Validate("test"), InvalidArgument);
  s = QuantSpec{};
  s.quant_min_override = 5;
  EXPECT_THROW(s.Validate("test"), InvalidArgument);  // half-set override
  s.quant_max_override = 5;
  EXPECT_THROW(s.Validate("test"), InvalidArgument);  // empty range
  s.quant_min_override = 0;
  s.quant_max_override = (int64_t{1} << 24) + 1;  // codes no longer exact in float32
  EXPECT_THROW(s.Validate("test"), InvalidArgument);
  s.quant_max_override = int64_t{1} << 24;
  EXPECT_NO_THROW(s.Validate("test"));
  s = QuantSpec{};
  s.layout = ParamLayout::PerGroup(0, 0);
  EXPECT_THROW(s.Validate("test"), InvalidArgument);
  for (int bits = 2; bits <= 16; ++bits) {
    QuantSpec ok;
    ok.bits = bits;
    EXPECT_NO_THROW(ok.Validate("test"));
  }
}

TEST(TensorViewTest, ContiguousStridesAndShapeString) {
  float buf[24];
  auto v = TensorView::Contiguous(buf, DType::kFloat32, {2, 3, 4});
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v.strides[0], 12);
  EXPECT_EQ(v.strides[1], 4);
  EXPECT_EQ(v.strides[2], 1);
  EXPECT_TRUE(v.IsContiguous());
  EXPECT_EQ(v.ShapeString(), "[2, 3, 4]");
  std::swap(v.strides[1], v.strides[2]);
  EXPECT_FALSE(v.IsContiguous());
}

TEST(TargetsTest, ForceTargetSelectsEachAvailableTarget) {
  const auto targets = AvailableTargets();
  ASSERT_FALSE(targets.empty());
  for (const auto& t : targets) {
    ForceTarget(t);
    EXPECT_EQ(CurrentTarget(), t);
  }
  ForceTarget("");
  EXPECT_EQ(CurrentTarget(), targets.front());
  EXPECT_THROW(ForceTarget("NOT_A_TARGET"), InvalidArgument);
  ForceTarget("");
}

}  // namespace
}  // namespace qkit
