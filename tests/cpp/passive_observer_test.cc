// PassiveObserver: validated user-set parameters, identity Observe, serialization.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "qkit/error.h"
#include "qkit/observers/passive_observer.h"

namespace qkit {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

PassiveObserverOptions PerChannelAffineUint8() {
  PassiveObserverOptions o;
  o.spec.is_signed = false;  // [0, 255]
  o.spec.symmetric = false;
  o.spec.layout = ParamLayout::PerChannel(0);
  return o;
}

TEST(PassiveObserverTest, SetQParamsStoresAndComputeQParamsCopies) {
  PassiveObserver obs(PerChannelAffineUint8());
  EXPECT_FALSE(obs.has_qparams());
  const float s[3] = {0.5f, 0.25f, 1e-3f};
  const float z[3] = {0.0f, 128.0f, 255.0f};
  obs.SetQParams(s, z, 3);
  EXPECT_EQ(obs.num_slots(), 3);
  EXPECT_EQ(obs.state().orig_scale, (std::vector<float>{0.5f, 0.25f, 1e-3f}));
  float so[3], zo[3];
  obs.ComputeQParams(obs.options().spec, QParamsRule{}, so, zo);
  EXPECT_EQ(std::memcmp(so, s, sizeof s), 0);
  EXPECT_EQ(std::memcmp(zo, z, sizeof z), 0);
  const float s2[3] = {2.0f, 3.0f, 4.0f};
  obs.SetScale(s2, 3);
  EXPECT_EQ(obs.state().scale, (std::vector<float>{2.0f, 3.0f, 4.0f}));
  EXPECT_EQ(obs.state().orig_scale, (std::vector<float>{0.5f, 0.25f, 1e-3f}))
      << "orig_scale keeps the first scales (MegEngine)";
  obs.SetQParams(s, nullptr, 3);  // null zero point: 0
  EXPECT_EQ(obs.state().zero_point, (std::vector<float>{0.0f, 0.0f, 0.0f}));
}

TEST(PassiveObserverTest, RejectsZeroPointsOutsideTheRangeOption) {
  PassiveObserverOptions o = PerChannelAffineUint8();
  o.spec.allow_zero_point_outside_range = true;
  try {
    PassiveObserver obs(o);
    FAIL() << "accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("allow_zero_point_outside_range"), std::string::npos)
        << e.what();
  }
}

TEST(PassiveObserverTest, InvalidParametersAreRejectedAndLeaveTheStateUnchanged) {
  PassiveObserver obs(PerChannelAffineUint8());
  const float s[2] = {0.5f, 0.25f};
  const float z[2] = {3.0f, 4.0f};
  obs.SetQParams(s, z, 2);
  const auto before = obs.Save();
  const float bad_scales[][2] = {{0.0f, 1.0f}, {-1.0f, 1.0f}, {kNaN, 1.0f}, {1.0f, kInf}};
  for (const auto& bs : bad_scales) {
    EXPECT_THROW(obs.SetQParams(bs, z, 2), InvalidArgument) << bs[0] << " " << bs[1];
    EXPECT_THROW(obs.SetScale(bs, 2), InvalidArgument);
  }
  const float bad_zps[][2] = {{-1.0f, 0.0f}, {0.0f, 256.0f}, {kNaN, 0.0f}};
  for (const auto& bz : bad_zps) {
    EXPECT_THROW(obs.SetQParams(s, bz, 2), InvalidArgument) << bz[0] << " " << bz[1];
  }
  try {
    const float s3[3] = {1, 1, 1};
    obs.SetQParams(s3, nullptr, 3);
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("`count`=3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(obs.SetQParams(s, z, 0), InvalidArgument);
  EXPECT_THROW(obs.SetQParams(nullptr, z, 2), InvalidArgument);
  EXPECT_EQ(obs.Save(), before);
  PassiveObserver fresh(PerChannelAffineUint8());
  EXPECT_THROW(fresh.SetScale(s, 2), FailedPrecondition);
  float so[2], zo[2];
  EXPECT_THROW(fresh.ComputeQParams(fresh.options().spec, QParamsRule{}, so, zo),
               FailedPrecondition);
  PassiveObserverOptions bad;
  bad.spec.bits = 17;
  EXPECT_THROW(PassiveObserver{bad}, InvalidArgument);
}

TEST(PassiveObserverTest, ObserveIsTheIdentityButValidates) {
  PassiveObserver obs(PerChannelAffineUint8());
  const float s[2] = {0.5f, 0.25f};
  obs.SetQParams(s, nullptr, 2);
  const auto before = obs.Save();
  std::vector<float> x = {1, 2, 3, 4};
  obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {2, 2}), Context{});
  EXPECT_EQ(obs.Save(), before);
  EXPECT_THROW(obs.Observe(TensorView::Contiguous(x.data(), DType::kFloat32, {4, 1}), Context{}),
               InvalidArgument);  // 4 channels, 2 held
  std::vector<int32_t> q(4);
  EXPECT_THROW(obs.Observe(TensorView::Contiguous(q.data(), DType::kInt32, {2, 2}), Context{}),
               InvalidArgument);
}

TEST(PassiveObserverTest, SaveLoadJsonRoundTripsAndCorruptionIsRejected) {
  PassiveObserverOptions o = PerChannelAffineUint8();
  o.spec.quant_min_override = -128;
  o.spec.quant_max_override = 128;  // Distiller's 257-level range
  o.spec.rounding = Rounding::kFloorAddHalf;
  o.spec.scale_mode = ScaleMode::kMultiplier;
  o.spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
  o.spec.nan_mode = NanMode::kToQuantMin;
  PassiveObserver obs(o);
  const float s[2] = {63.75f, 1e-30f};
  const float z[2] = {-0.0f, 128.0f};
  obs.SetQParams(s, z, 2);
  const float s2[2] = {3.0f, 0.1f};
  obs.SetScale(s2, 2);
  for (const PassiveObserver& p : {PassiveObserver(o), obs}) {
    const auto blob = p.Save();
    const auto loaded = PassiveObserver::Load(blob.data(), blob.size());
    EXPECT_EQ(loaded.Save(), blob);
    EXPECT_EQ(loaded.options().spec.ToString(), p.options().spec.ToString());
    const std::string json = p.ToJson();
    const auto parsed = PassiveObserver::FromJson(json);
    EXPECT_EQ(parsed.ToJson(), json);
    EXPECT_EQ(parsed.Save(), blob);
  }
  EXPECT_TRUE(std::signbit(PassiveObserver::FromJson(obs.ToJson()).state().zero_point[0]));
  const auto blob = obs.Save();
  for (size_t n = 0; n < blob.size(); ++n) {
    EXPECT_THROW(PassiveObserver::Load(blob.data(), n), DataLoss) << "length " << n;
  }
  for (size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] ^= 0x10;
    EXPECT_THROW(PassiveObserver::Load(bad.data(), bad.size()), DataLoss) << "byte " << i;
  }
  std::string json = obs.ToJson();
  json.replace(json.find("\"bits\":8"), 8, "\"bits\":true");
  EXPECT_THROW(PassiveObserver::FromJson(json), InvalidArgument);
  std::string json2 = obs.ToJson();
  json2.replace(json2.find("\"orig_scale\":[63.75"), 19, "\"orig_scale\":[-1.0");
  EXPECT_THROW(PassiveObserver::FromJson(json2), InvalidArgument);
}

}  // namespace
}  // namespace qkit
