#include "observers/observer_io.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include "internal/check.h"
#include "qkit/observers/range_stats.h"

namespace qkit::internal {
namespace {

uint32_t Bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
float FromBits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
constexpr uint32_t kCanonicalNaN = 0x7fc00000u;

const char* GranularityName(Granularity g) {
  switch (g) {
    case Granularity::kPerTensor: return "per_tensor";
    case Granularity::kPerChannel: return "per_channel";
    case Granularity::kPerGroup: return "per_group";
  }
  return "unknown";
}

template <class E, size_t N>
E EnumFromJson(const Json& j, const std::string& path, const char* caller,
               const std::pair<const char*, E> (&table)[N]) {
  const std::string s = StringFromJson(j, path, caller);
  for (const auto& [name, value] : table) {
    if (s == name) return value;
  }
  std::string allowed;
  for (const auto& [name, value] : table) allowed += std::string(allowed.empty() ? "" : ", ") + name;
  std::ostringstream os;
  os << caller << ": JSON field `" << path << "`=\"" << s << "\" is not one of " << allowed;
  throw InvalidArgument(os.str());
}

constexpr std::pair<const char*, Granularity> kGranularities[] = {
    {"per_tensor", Granularity::kPerTensor},
    {"per_channel", Granularity::kPerChannel},
    {"per_group", Granularity::kPerGroup}};
constexpr std::pair<const char*, NonFinite> kNonFinites[] = {
    {"skip", NonFinite::kSkip}, {"skip_nan", NonFinite::kSkipNaN},
    {"propagate", NonFinite::kPropagate}};
constexpr std::pair<const char*, Rounding> kRoundings[] = {
    {"half_to_even", Rounding::kHalfToEven},
    {"half_away_from_zero", Rounding::kHalfAwayFromZero},
    {"floor_add_half", Rounding::kFloorAddHalf}};
constexpr std::pair<const char*, ScaleMode> kScaleModes[] = {
    {"divide", ScaleMode::kDivide},
    {"multiply_reciprocal", ScaleMode::kMultiplyReciprocal},
    {"multiplier", ScaleMode::kMultiplier}};
constexpr std::pair<const char*, ZeroPointMode> kZeroPointModes[] = {
    {"add_after_round", ZeroPointMode::kAddAfterRound},
    {"add_before_round", ZeroPointMode::kAddBeforeRound}};
constexpr std::pair<const char*, NanMode> kNanModes[] = {{"propagate", NanMode::kPropagate},
                                                         {"to_quant_min", NanMode::kToQuantMin},
                                                         {"error", NanMode::kError}};

template <class E, size_t N>
const char* EnumName(E v, const std::pair<const char*, E> (&table)[N]) {
  for (const auto& [name, value] : table) {
    if (value == v) return name;
  }
  return "unknown";
}

}  // namespace

Json ObserverJsonHeader(std::string_view kind, uint32_t version) {
  Json j = Json::object();
  j["kind"] = std::string(kind);
  j["version"] = version;
  return j;
}

Json ParseObserverJson(std::string_view text, std::string_view kind, uint32_t version,
                       const char* caller) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  QKIT_REQUIRE(!j.is_discarded(), InvalidArgument, caller << ": malformed JSON");
  QKIT_REQUIRE(j.is_object(), InvalidArgument,
               caller << ": expected a JSON object, got a " << j.type_name());
  const std::string got = StringFromJson(JsonField(j, "kind", "", caller), "kind", caller);
  QKIT_REQUIRE(got == kind, InvalidArgument,
               caller << ": JSON holds `" << got << "`, expected `" << kind << "`");
  const int64_t v = Int64FromJson(JsonField(j, "version", "", caller), "version", caller);
  QKIT_REQUIRE(v == version, InvalidArgument,
               caller << ": `" << kind << "` JSON version " << v << ", this build reads "
                      << version);
  return j;
}

const Json& JsonField(const Json& obj, const char* name, const std::string& path,
                      const char* caller) {
  const std::string full = path.empty() ? std::string(name) : path + "." + name;
  QKIT_REQUIRE(obj.is_object(), InvalidArgument,
               caller << ": JSON field `" << (path.empty() ? "<root>" : path)
                      << "` must be an object");
  auto it = obj.find(name);
  QKIT_REQUIRE(it != obj.end(), InvalidArgument, caller << ": JSON field `" << full << "` missing");
  return *it;
}

Json FloatToJson(float v) {
  if (std::isfinite(v)) return Json(static_cast<double>(v));
  if (std::isinf(v)) return Json(v > 0 ? "inf" : "-inf");
  if (Bits(v) == kCanonicalNaN) return Json("nan");
  char buf[32];
  std::snprintf(buf, sizeof buf, "nan:0x%08x", Bits(v));
  return Json(buf);
}

float FloatFromJson(const Json& j, const std::string& path, const char* caller) {
  if (j.is_number()) {
    const double d = j.get<double>();
    const float f = static_cast<float>(d);
    // Only values that are exactly floats are accepted: anything else was not written by
    // ToJson and would not round-trip.
    QKIT_REQUIRE(std::isfinite(d) && static_cast<double>(f) == d, InvalidArgument,
                 caller << ": JSON field `" << path << "`=" << d
                        << " is not exactly representable as float32");
    return f;
  }
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "inf") return std::numeric_limits<float>::infinity();
    if (s == "-inf") return -std::numeric_limits<float>::infinity();
    if (s == "nan") return FromBits(kCanonicalNaN);
    unsigned bits = 0;
    char tail = 0;
    if (s.size() == 14 && std::sscanf(s.c_str(), "nan:0x%8x%c", &bits, &tail) == 1) {
      const float f = FromBits(bits);
      if (std::isnan(f)) return f;
    }
    std::ostringstream os;
    os << caller << ": JSON field `" << path << "`=\"" << s
       << "\" is not a number, \"inf\", \"-inf\" or \"nan\"";
    throw InvalidArgument(os.str());
  }
  std::ostringstream os;
  os << caller << ": JSON field `" << path << "` must be a number, got " << j.type_name();
  throw InvalidArgument(os.str());
}

Json FloatsToJson(const std::vector<float>& v) {
  Json a = Json::array();
  for (float f : v) a.push_back(FloatToJson(f));
  return a;
}

std::vector<float> FloatsFromJson(const Json& j, const std::string& path, const char* caller) {
  QKIT_REQUIRE(j.is_array(), InvalidArgument,
               caller << ": JSON field `" << path << "` must be an array, got " << j.type_name());
  std::vector<float> v;
  v.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    v.push_back(FloatFromJson(j[i], path + "[" + std::to_string(i) + "]", caller));
  }
  return v;
}

int64_t Int64FromJson(const Json& j, const std::string& path, const char* caller) {
  QKIT_REQUIRE(j.is_number_integer(), InvalidArgument,
               caller << ": JSON field `" << path << "` must be an integer, got "
                      << (j.is_number() ? j.dump() : std::string(j.type_name())));
  if (j.is_number_unsigned()) {
    const uint64_t u = j.get<uint64_t>();
    QKIT_REQUIRE(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                 InvalidArgument,
                 caller << ": JSON field `" << path << "`=" << u << " does not fit in int64");
  }
  return j.get<int64_t>();
}

std::vector<int64_t> Int64sFromJson(const Json& j, const std::string& path, const char* caller) {
  QKIT_REQUIRE(j.is_array(), InvalidArgument,
               caller << ": JSON field `" << path << "` must be an array, got " << j.type_name());
  std::vector<int64_t> v;
  v.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    v.push_back(Int64FromJson(j[i], path + "[" + std::to_string(i) + "]", caller));
  }
  return v;
}

bool BoolFromJson(const Json& j, const std::string& path, const char* caller) {
  QKIT_REQUIRE(j.is_boolean(), InvalidArgument,
               caller << ": JSON field `" << path << "` must be true or false, got "
                      << j.type_name());
  return j.get<bool>();
}

std::string StringFromJson(const Json& j, const std::string& path, const char* caller) {
  QKIT_REQUIRE(j.is_string(), InvalidArgument,
               caller << ": JSON field `" << path << "` must be a string, got " << j.type_name());
  return j.get<std::string>();
}

Json LayoutToJson(const ParamLayout& layout) {
  Json j = Json::object();
  j["granularity"] = GranularityName(layout.granularity);
  j["axis"] = layout.axis;
  j["group_size"] = layout.group_size;
  return j;
}

ParamLayout LayoutFromJson(const Json& j, const std::string& path, const char* caller) {
  ParamLayout l;
  l.granularity = EnumFromJson(JsonField(j, "granularity", path, caller), path + ".granularity",
                               caller, kGranularities);
  l.axis = Int64FromJson(JsonField(j, "axis", path, caller), path + ".axis", caller);
  l.group_size =
      Int64FromJson(JsonField(j, "group_size", path, caller), path + ".group_size", caller);
  return l;
}

NonFinite NonFiniteFromJson(const Json& j, const std::string& path, const char* caller) {
  return EnumFromJson(j, path, caller, kNonFinites);
}

Json SpecToJson(const QuantSpec& spec) {
  Json j = Json::object();
  j["bits"] = spec.bits;
  j["is_signed"] = spec.is_signed;
  j["narrow_range"] = spec.narrow_range;
  j["quant_min"] = spec.quant_min_override ? Json(*spec.quant_min_override) : Json(nullptr);
  j["quant_max"] = spec.quant_max_override ? Json(*spec.quant_max_override) : Json(nullptr);
  j["symmetric"] = spec.symmetric;
  j["rounding"] = EnumName(spec.rounding, kRoundings);
  j["scale_mode"] = EnumName(spec.scale_mode, kScaleModes);
  j["zero_point_mode"] = EnumName(spec.zero_point_mode, kZeroPointModes);
  j["nan_mode"] = EnumName(spec.nan_mode, kNanModes);
  j["layout"] = LayoutToJson(spec.layout);
  return j;
}

QuantSpec SpecFromJson(const Json& j, const std::string& path, const char* caller) {
  QuantSpec s;
  const int64_t bits = Int64FromJson(JsonField(j, "bits", path, caller), path + ".bits", caller);
  QKIT_REQUIRE(bits >= 0 && bits <= 64, InvalidArgument,
               caller << ": JSON field `" << path << ".bits`=" << bits << " outside [2, 16]");
  s.bits = static_cast<int>(bits);
  s.is_signed = BoolFromJson(JsonField(j, "is_signed", path, caller), path + ".is_signed", caller);
  s.narrow_range =
      BoolFromJson(JsonField(j, "narrow_range", path, caller), path + ".narrow_range", caller);
  const Json& qmin = JsonField(j, "quant_min", path, caller);
  const Json& qmax = JsonField(j, "quant_max", path, caller);
  if (!qmin.is_null()) s.quant_min_override = Int64FromJson(qmin, path + ".quant_min", caller);
  if (!qmax.is_null()) s.quant_max_override = Int64FromJson(qmax, path + ".quant_max", caller);
  s.symmetric = BoolFromJson(JsonField(j, "symmetric", path, caller), path + ".symmetric", caller);
  s.rounding = EnumFromJson(JsonField(j, "rounding", path, caller), path + ".rounding", caller,
                            kRoundings);
  s.scale_mode = EnumFromJson(JsonField(j, "scale_mode", path, caller), path + ".scale_mode",
                              caller, kScaleModes);
  s.zero_point_mode = EnumFromJson(JsonField(j, "zero_point_mode", path, caller),
                                   path + ".zero_point_mode", caller, kZeroPointModes);
  s.nan_mode = EnumFromJson(JsonField(j, "nan_mode", path, caller), path + ".nan_mode", caller,
                            kNanModes);
  s.layout = LayoutFromJson(JsonField(j, "layout", path, caller), path + ".layout", caller);
  return s;
}

void ComputeQParamsFromRanges(const ParamLayout& layout, const std::vector<float>& min,
                              const std::vector<float>& max, const std::vector<int64_t>& counts,
                              const QuantSpec& spec, const QParamsRule& rule, float* scale,
                              float* zero_point, const char* caller) {
  spec.Validate(caller);
  QKIT_REQUIRE(spec.layout.granularity == layout.granularity &&
                   (layout.granularity != Granularity::kPerGroup ||
                    spec.layout.group_size == layout.group_size),
               InvalidArgument,
               caller << ": `spec.layout`=" << spec.layout.ToString()
                      << " does not match the observer's layout " << layout.ToString());
  QKIT_REQUIRE(!min.empty(), FailedPrecondition,
               caller << ": the observer has not seen any data yet (no slots)");
  for (size_t p = 0; p < counts.size(); ++p) {
    QKIT_REQUIRE(counts[p] > 0, FailedPrecondition,
                 caller << ": slot " << p << " of " << counts.size()
                        << " has no data yet (every batch so far was empty or non-finite there)");
  }
  QKIT_REQUIRE(scale != nullptr && zero_point != nullptr, InvalidArgument,
               caller << ": null `scale` or `zero_point` output");
  ChooseQParams(min.data(), max.data(), static_cast<int64_t>(min.size()), spec, rule, scale,
                zero_point, caller);
}

void CheckSlotCount(int64_t n, int64_t held, const ParamLayout& layout, const TensorView* x,
                    const char* caller) {
  if (held == 0 || n == held) return;
  std::ostringstream shape;
  if (x != nullptr) shape << " (shape " << x->ShapeString() << ")";
  QKIT_FAIL(InvalidArgument, caller << ": the batch has " << n << " slots for "
                                    << layout.ToString() << shape.str()
                                    << ", but earlier batches had " << held
                                    << " (channel count mismatch)");
}

uint8_t ReadEnum(BlobReader& r, uint8_t num_values, const char* what, const char* caller) {
  const uint8_t v = r.U8();
  QKIT_REQUIRE(v < num_values, DataLoss,
               caller << ": corrupted state blob: `" << what << "`=" << int{v} << " is not one of "
                      << int{num_values} << " values");
  return v;
}

void WriteLayout(BlobWriter& w, const ParamLayout& layout) {
  w.U8(static_cast<uint8_t>(layout.granularity));
  w.I64(layout.axis);
  w.I64(layout.group_size);
}

ParamLayout ReadLayout(BlobReader& r, const char* caller) {
  ParamLayout l;
  l.granularity = static_cast<Granularity>(ReadEnum(r, 3, "granularity", caller));
  l.axis = r.I64();
  l.group_size = r.I64();
  return l;
}

void WriteNonFinite(BlobWriter& w, NonFinite policy) { w.U8(static_cast<uint8_t>(policy)); }

NonFinite ReadNonFinite(BlobReader& r, const char* caller) {
  return static_cast<NonFinite>(ReadEnum(r, 3, "nonfinite", caller));
}

void WriteSpec(BlobWriter& w, const QuantSpec& spec) {
  w.I32(spec.bits);
  w.Bool(spec.is_signed);
  w.Bool(spec.narrow_range);
  w.Bool(spec.quant_min_override.has_value());
  w.I64(spec.quant_min_override.value_or(0));
  w.Bool(spec.quant_max_override.has_value());
  w.I64(spec.quant_max_override.value_or(0));
  w.Bool(spec.symmetric);
  w.U8(static_cast<uint8_t>(spec.rounding));
  w.U8(static_cast<uint8_t>(spec.scale_mode));
  w.U8(static_cast<uint8_t>(spec.zero_point_mode));
  w.U8(static_cast<uint8_t>(spec.nan_mode));
  WriteLayout(w, spec.layout);
}

QuantSpec ReadSpec(BlobReader& r, const char* caller) {
  QuantSpec s;
  s.bits = r.I32();
  s.is_signed = r.Bool();
  s.narrow_range = r.Bool();
  const bool has_min = r.Bool();
  const int64_t qmin = r.I64();
  const bool has_max = r.Bool();
  const int64_t qmax = r.I64();
  if (has_min) s.quant_min_override = qmin;
  if (has_max) s.quant_max_override = qmax;
  s.symmetric = r.Bool();
  s.rounding = static_cast<Rounding>(ReadEnum(r, 3, "rounding", caller));
  s.scale_mode = static_cast<ScaleMode>(ReadEnum(r, 3, "scale_mode", caller));
  s.zero_point_mode = static_cast<ZeroPointMode>(ReadEnum(r, 2, "zero_point_mode", caller));
  s.nan_mode = static_cast<NanMode>(ReadEnum(r, 3, "nan_mode", caller));
  s.layout = ReadLayout(r, caller);
  return s;
}

}  // namespace qkit::internal
