// FakeQuantize over arbitrary float bit patterns, every QuantSpec option, per tensor and per
// channel, 1 or 2 threads and any available SIMD target, against the scalar reference
// (tests/reference/fake_quant_ref.h) bit for bit (NaN-aware), mask included; and
// FakeQuantizeBackwardClipped against the reference mask.
// Parameters are taken from the input too; FakeQuantize must throw InvalidArgument exactly
// when they are unusable (non-finite or non-positive scale, zero point outside the range, no
// finite reciprocal under multiply_reciprocal) or when
// nan_mode=error meets a NaN.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "qkit/context.h"
#include "qkit/error.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"
#include "reference/fake_quant_ref.h"

namespace {

bool Same(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, 4) == 0;
}

bool ParamsUsable(float s, float z, const qkit::QuantSpec& spec) {
  using qkit::ScaleMode;
  const bool mult = spec.scale_mode == ScaleMode::kMultiplier;
  if (!std::isfinite(s) || (mult ? s < 0.0f : s <= 0.0f)) return false;
  if (!std::isfinite(z) || z < static_cast<float>(spec.QuantMin()) ||
      z > static_cast<float>(spec.QuantMax())) {
    return false;
  }
  if (spec.scale_mode == ScaleMode::kMultiplyReciprocal && !std::isfinite(1.0f / s)) return false;
  return true;
}

struct TargetGuard {
  ~TargetGuard() { qkit::ForceTarget(""); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qkit;
  static const std::vector<std::string> targets = AvailableTargets();
  fuzz::Bytes in(data, size);
  QuantSpec spec;
  spec.bits = 2 + in.U8() % 15;
  const uint8_t flags = in.U8();
  spec.is_signed = flags & 1;
  spec.narrow_range = (flags & 2) && spec.is_signed;
  if (flags & 4) {
    const int32_t lo = static_cast<int32_t>(in.U32() % (1u << 21)) - (1 << 20);
    const int32_t width = 1 + static_cast<int32_t>(in.U32() % (1u << 16));
    spec.quant_min_override = lo;
    spec.quant_max_override = lo + width;
  }
  spec.rounding = in.Enum<Rounding>(3);
  spec.scale_mode = in.Enum<ScaleMode>(3);
  spec.zero_point_mode = in.Enum<ZeroPointMode>(2);
  spec.nan_mode = in.Enum<NanMode>(3);
  const bool per_channel = flags & 8;
  const int threads = (flags & 16) ? 2 : 1;
  const std::string& target = targets[in.U8() % targets.size()];
  const int64_t channels = per_channel ? 1 + in.U8() % 3 : 1;
  std::vector<float> scale(channels), zp(channels);
  for (int64_t c = 0; c < channels; ++c) {
    scale[c] = in.F32();
    // Zero points: mostly small integers inside the range, sometimes any bit pattern.
    const uint8_t zsel = in.U8();
    if (zsel & 1) {
      zp[c] = in.F32();
    } else {
      const int64_t span = spec.QuantMax() - spec.QuantMin() + 1;
      zp[c] = static_cast<float>(spec.QuantMin() + static_cast<int64_t>(in.U32() % span));
    }
  }
  const int64_t cols = static_cast<int64_t>(in.left() / 4 / channels);
  if (cols == 0) return 0;
  const int64_t n = channels * cols;
  std::vector<float> x(n);
  for (auto& v : x) v = in.F32();

  spec.layout = per_channel ? ParamLayout::PerChannel(0) : ParamLayout::PerTensor();
  const TensorView xv = TensorView::Contiguous(x.data(), DType::kFloat32, {channels, cols});
  std::vector<float> out(n, 12345.0f);
  const TensorView ov = TensorView::Contiguous(out.data(), DType::kFloat32, {channels, cols});
  std::vector<uint8_t> mask(MaskBytes(n), 0xAB);
  const QParamsView qp{scale.data(), zp.data(), channels};
  Context ctx;
  ctx.num_threads = threads;

  bool usable = true;
  for (int64_t c = 0; c < channels; ++c) usable = usable && ParamsUsable(scale[c], zp[c], spec);
  bool has_nan = false;
  for (float v : x) has_nan = has_nan || std::isnan(v);
  const bool expect_error = !usable || (spec.nan_mode == NanMode::kError && has_nan);

  TargetGuard guard;
  ForceTarget(target);
  bool threw = false;
  try {
    FakeQuantize(xv, spec, qp, ov, mask.data(), ctx);
  } catch (const InvalidArgument&) {
    threw = true;
  }
  QKIT_FUZZ_CHECK(threw == expect_error, "FakeQuantize threw=%d, expected %d (spec %s, target %s)",
                  threw, expect_error, spec.ToString().c_str(), target.c_str());
  if (threw) return 0;

  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i / cols;
    const float want = ref::FakeQuantRef(x[i], scale[c], zp[c], spec);
    QKIT_FUZZ_CHECK(Same(want, out[i]),
                    "x[%lld]=%a scale=%a zp=%a: want %a got %a (spec %s, target %s, %d threads)",
                    static_cast<long long>(i), x[i], scale[c], zp[c], want, out[i],
                    spec.ToString().c_str(), target.c_str(), threads);
    const bool in_range = ref::InRangeRef(x[i], scale[c], zp[c], spec);
    const bool bit = (mask[i / 8] >> (i % 8)) & 1;
    QKIT_FUZZ_CHECK(in_range == bit, "mask bit %lld: want %d got %d (x=%a, spec %s, target %s)",
                    static_cast<long long>(i), in_range, bit, x[i], spec.ToString().c_str(),
                    target.c_str());
  }
  if (n % 8) QKIT_FUZZ_CHECK((mask.back() >> (n % 8)) == 0, "unused mask bits not 0");

  // Clipped backward with dy = 1 recomputes the same mask.
  std::vector<float> dy(n, 1.0f), dx(n, -7.0f);
  FakeQuantizeBackwardClipped(
      TensorView::Contiguous(dy.data(), DType::kFloat32, {channels, cols}), xv, spec, qp,
      TensorView::Contiguous(dx.data(), DType::kFloat32, {channels, cols}), ctx);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i / cols;
    const float want = ref::ClippedGradRef(1.0f, ref::InRangeRef(x[i], scale[c], zp[c], spec));
    QKIT_FUZZ_CHECK(Same(want, dx[i]), "backward[%lld]: want %a got %a (x=%a)",
                    static_cast<long long>(i), want, dx[i], x[i]);
  }
  return 0;
}
