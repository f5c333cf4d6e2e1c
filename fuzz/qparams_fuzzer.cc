// ChooseQParams over arbitrary float bit patterns for (min, max), arbitrary bits (including
// 0, 1, 17, negative), explicit quant_min / quant_max overrides, and every QuantSpec /
// QParamsRule option (eps any bit pattern). Outcomes allowed (qparams.h):
//   * qkit::InvalidArgument (any other exception type is a finding);
//   * a result that passes ValidateQParams under the same spec, or one of the two documented
//     exceptions to that: a zero step under DegenerateRule::kNone, and a zero point outside
//     [quant_min, quant_max] when rule.clamp_zero_point is false (OneFlow / MegEngine);
//   * never a result for min > max or a non-finite bound.
// The element-wise overload must agree bit for bit with two scalar calls (or throw when either
// throws).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fuzz_util.h"
#include "qkit/error.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"

namespace {

bool Same(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, 4) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qkit;
  fuzz::Bytes in(data, size);
  const float mn[2] = {in.F32(), in.F32()};
  const float mx[2] = {in.F32(), in.F32()};
  QuantSpec spec;
  spec.bits = static_cast<int8_t>(in.U8());
  const uint8_t flags = in.U8();
  spec.is_signed = flags & 1;
  spec.narrow_range = flags & 2;
  spec.symmetric = flags & 4;
  if (flags & 8) spec.quant_min_override = static_cast<int32_t>(in.U32()) >> (in.U8() % 32);
  if (flags & 16) spec.quant_max_override = static_cast<int32_t>(in.U32()) >> (in.U8() % 32);
  spec.rounding = in.Enum<Rounding>(3);
  spec.scale_mode = in.Enum<ScaleMode>(3);
  spec.zero_point_mode = in.Enum<ZeroPointMode>(2);
  QParamsRule rule;
  rule.divisor = in.Enum<SymmetricDivisor>(3);
  const uint8_t rflags = in.U8();
  rule.widen_to_zero = rflags & 1;
  rule.integral_zero_point = rflags & 2;
  rule.clamp_zero_point = rflags & 4;
  rule.reciprocal_multiplier = rflags & 16;
  if (rflags & 8) rule.eps = in.F32();
  rule.degenerate = in.Enum<DegenerateRule>(5);
  rule.zero_point_rounding = in.Enum<Rounding>(3);
  rule.restriction = in.Enum<ScaleRestriction>(3);
  rule.symmetric_zero_point = in.Enum<SymmetricZeroPoint>(3);

  QParams r[2];
  bool ok[2];
  for (int i = 0; i < 2; ++i) {
    ok[i] = false;
    try {
      r[i] = ChooseQParams(mn[i], mx[i], spec, rule, "fuzz");
      ok[i] = true;
    } catch (const InvalidArgument&) {
    }
    if (!ok[i]) continue;
    QKIT_FUZZ_CHECK(std::isfinite(mn[i]) && std::isfinite(mx[i]) && mn[i] <= mx[i],
                    "accepted the range [%a, %a]", mn[i], mx[i]);
    try {
      ValidateQParams(&r[i].scale, &r[i].zero_point, 1, spec, "fuzz");
    } catch (const InvalidArgument& e) {
      const int64_t qmin = spec.QuantMin(), qmax = spec.QuantMax();
      const bool zero_step = rule.degenerate == DegenerateRule::kNone && r[i].scale == 0.0f;
      const bool unclamped_zp =
          !rule.clamp_zero_point && std::isfinite(r[i].zero_point) &&
          (r[i].zero_point < static_cast<float>(qmin) || r[i].zero_point > static_cast<float>(qmax));
      QKIT_FUZZ_CHECK(zero_step || unclamped_zp,
                      "range [%a, %a] -> scale %a zero_point %a rejected by ValidateQParams: %s "
                      "(spec %s)",
                      mn[i], mx[i], r[i].scale, r[i].zero_point, e.what(), spec.ToString().c_str());
    }
  }
  float scale[2] = {-1.0f, -1.0f}, zp[2] = {-1.0f, -1.0f};
  bool ok_vec = false;
  try {
    ChooseQParams(mn, mx, 2, spec, rule, scale, zp, "fuzz");
    ok_vec = true;
  } catch (const InvalidArgument&) {
  }
  QKIT_FUZZ_CHECK(ok_vec == (ok[0] && ok[1]), "element-wise overload: ok %d, scalar calls %d %d",
                  ok_vec, ok[0], ok[1]);
  if (ok_vec) {
    for (int i = 0; i < 2; ++i) {
      QKIT_FUZZ_CHECK(Same(scale[i], r[i].scale) && Same(zp[i], r[i].zero_point),
                      "element-wise overload differs at %d", i);
    }
  } else {
    // "Validates everything before writing any output."
    QKIT_FUZZ_CHECK(scale[0] == -1.0f && scale[1] == -1.0f && zp[0] == -1.0f && zp[1] == -1.0f,
                    "element-wise overload wrote output before throwing");
  }
  return 0;
}
