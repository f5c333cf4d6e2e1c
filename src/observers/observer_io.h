// Private helpers shared by the observers' Save/Load (BlobWriter/BlobReader) and
// ToJson/FromJson (nlohmann-json, which never appears in a public header).
//
// JSON numbers: finite floats are written as numbers (nlohmann prints doubles with 17
// significant digits, so float -> double -> text -> double -> float is exact, -0 included);
// non-finite floats are the strings "inf", "-inf", "nan" (the canonical quiet NaN 0x7fc00000)
// or "nan:0xXXXXXXXX" (any other NaN, with its bits), so every value round-trips bit for bit.
// Every JSON problem throws InvalidArgument naming the caller and the field.
#ifndef QKIT_SRC_OBSERVERS_OBSERVER_IO_H_
#define QKIT_SRC_OBSERVERS_OBSERVER_IO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "qkit/tensor.h"
#include "qkit/quant_spec.h"
#include "qkit/serialize.h"

namespace qkit::internal {

using Json = nlohmann::json;

// ---- JSON ------------------------------------------------------------------------------------

// Parses `text` (InvalidArgument naming `caller` on a syntax error) and checks that it is an
// object with "kind" == kind and "version" == version.
Json ParseObserverJson(std::string_view text, std::string_view kind, uint32_t version,
                       const char* caller);
// The top-level object {"kind": kind, "version": version}.
Json ObserverJsonHeader(std::string_view kind, uint32_t version);

// obj[name], which must exist (InvalidArgument naming `path`.`name` otherwise).
const Json& JsonField(const Json& obj, const char* name, const std::string& path,
                      const char* caller);

Json FloatToJson(float v);
float FloatFromJson(const Json& j, const std::string& path, const char* caller);
Json FloatsToJson(const std::vector<float>& v);
std::vector<float> FloatsFromJson(const Json& j, const std::string& path, const char* caller);
std::vector<int64_t> Int64sFromJson(const Json& j, const std::string& path, const char* caller);
int64_t Int64FromJson(const Json& j, const std::string& path, const char* caller);
bool BoolFromJson(const Json& j, const std::string& path, const char* caller);
std::string StringFromJson(const Json& j, const std::string& path, const char* caller);

Json LayoutToJson(const ParamLayout& layout);
ParamLayout LayoutFromJson(const Json& j, const std::string& path, const char* caller);
NonFinite NonFiniteFromJson(const Json& j, const std::string& path, const char* caller);
Json SpecToJson(const QuantSpec& spec);
QuantSpec SpecFromJson(const Json& j, const std::string& path, const char* caller);

// ---- shared observer logic -----------------------------------------------------------------

// ChooseQParams over per-slot ranges for ComputeQParams: checks spec (Validate), that
// spec.layout has `layout`'s granularity and group size (InvalidArgument), that the observer
// has slots and every slot has data (counts[p] > 0; FailedPrecondition naming the slot), then
// calls qkit::ChooseQParams, which validates before writing.
void ComputeQParamsFromRanges(const ParamLayout& layout, const std::vector<float>& min,
                              const std::vector<float>& max, const std::vector<int64_t>& counts,
                              const QuantSpec& spec, const QParamsRule& rule, float* scale,
                              float* zero_point, const char* caller);

// Throws InvalidArgument unless `n` (slots of a new batch) matches `held` (slots in the state;
// 0 = not fixed yet). `x` (nullable) adds the batch's shape to the message.
void CheckSlotCount(int64_t n, int64_t held, const ParamLayout& layout, const TensorView* x,
                    const char* caller);

// ---- blobs -----------------------------------------------------------------------------------

void WriteLayout(BlobWriter& w, const ParamLayout& layout);
ParamLayout ReadLayout(BlobReader& r, const char* caller);
void WriteNonFinite(BlobWriter& w, NonFinite policy);
NonFinite ReadNonFinite(BlobReader& r, const char* caller);
void WriteSpec(BlobWriter& w, const QuantSpec& spec);
QuantSpec ReadSpec(BlobReader& r, const char* caller);
// An enum stored as u8, checked against its number of values (DataLoss naming `what`).
uint8_t ReadEnum(BlobReader& r, uint8_t num_values, const char* what, const char* caller);

}  // namespace qkit::internal

#endif  // QKIT_SRC_OBSERVERS_OBSERVER_IO_H_
