#include "qkit/quant_spec.h"

#include <sstream>

#include "internal/check.h"

namespace qkit {

const char* RoundingName(Rounding r) {
  switch (r) {
    case Rounding::kHalfToEven: return "half_to_even";
    case Rounding::kHalfAwayFromZero: return "half_away_from_zero";
    case Rounding::kFloorAddHalf: return "floor_add_half";
  }
  return "unknown";
}

const char* ScaleModeName(ScaleMode m) {
  switch (m) {
    case ScaleMode::kDivide: return "divide";
    case ScaleMode::kMultiplyReciprocal: return "multiply_reciprocal";
    case ScaleMode::kMultiplier: return "multiplier";
  }
  return "unknown";
}

std::string ParamLayout::ToString() const {
  std::ostringstream os;
  switch (granularity) {
    case Granularity::kPerTensor: os << "per_tensor"; break;
    case Granularity::kPerChannel: os << "per_channel(axis=" << axis << ")"; break;
    case Granularity::kPerGroup:
      os << "per_group(axis=" << axis << ", group_size=" << group_size << ")";
      break;
  }
  return os.str();
}

int64_t QuantSpec::QuantMin() const {
  if (quant_min_override && quant_max_override) return *quant_min_override;
  if (!is_signed) return 0;
  const int64_t half = int64_t{1} << (bits - 1);
  return narrow_range ? -(half - 1) : -half;
}

int64_t QuantSpec::QuantMax() const {
  if (quant_min_override && quant_max_override) return *quant_max_override;
  if (!is_signed) return (int64_t{1} << bits) - 1;
  return (int64_t{1} << (bits - 1)) - 1;
}

void QuantSpec::Validate(const char* caller) const {
  const bool has_min = quant_min_override.has_value();
  const bool has_max = quant_max_override.has_value();
  QKIT_REQUIRE(has_min == has_max, InvalidArgument,
               caller << ": `quant_min` and `quant_max` must be given together (got only "
                      << (has_min ? "quant_min" : "quant_max") << ")");
  if (has_min) {
    const int64_t lo = *quant_min_override, hi = *quant_max_override;
    QKIT_REQUIRE(lo < hi, InvalidArgument,
                 caller << ": `quant_min`=" << lo << " must be < `quant_max`=" << hi);
    // Codes are carried in float32: both ends (hence every code between) must be exact.
    QKIT_REQUIRE(lo >= -(int64_t{1} << 24) && hi <= (int64_t{1} << 24), InvalidArgument,
                 caller << ": [`quant_min`, `quant_max`]=[" << lo << ", " << hi
                        << "] reaches beyond ±2^24 (codes must be exact in float32)");
  } else {
    QKIT_REQUIRE(bits >= 2 && bits <= 16, InvalidArgument,
                 caller << ": `bits`=" << bits << " outside [2, 16]");
    QKIT_REQUIRE(is_signed || !narrow_range, InvalidArgument,
                 caller << ": `narrow_range`=true needs a signed range (`is_signed`=false)");
  }
  if (layout.granularity == Granularity::kPerGroup) {
    QKIT_REQUIRE(layout.group_size >= 1, InvalidArgument,
                 caller << ": `group_size`=" << layout.group_size << " must be >= 1");
  }
}

std::string QuantSpec::ToString() const {
  std::ostringstream os;
  os << "bits=" << bits << (is_signed ? " signed" : " unsigned")
     << (narrow_range ? " narrow" : "") << " [" << QuantMin() << ", " << QuantMax() << "] "
     << (symmetric ? "symmetric" : "affine") << " round=" << RoundingName(rounding)
     << " scale=" << ScaleModeName(scale_mode)
     << (zero_point_mode == ZeroPointMode::kAddBeforeRound ? " zp_before_round" : "")
     << (allow_zero_point_outside_range ? " zp_outside_range" : "")
     << " " << layout.ToString();
  return os.str();
}

}  // namespace qkit
