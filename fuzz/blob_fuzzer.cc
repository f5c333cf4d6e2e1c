// The state loaders on arbitrary bytes: BlobReader, and each observer's Load (binary blob) and
// FromJson. Each call must either throw a qkit::Error or give an object that Save()s, re-Load()s
// and Save()s again to the same bytes (and likewise through ToJson / FromJson).
//
// Input layout: byte 0 selects the target (0-5: MinMax / MovingAverage / Passive Load then
// FromJson, 6: BlobReader, 7/8: HistogramObserver Load / FromJson, 9/10: HistogramCalibrator); for the blob loaders bit 7 of byte 0 asks the harness
// to overwrite the last four bytes with the correct CRC-32, so that the fuzzer gets past the
// checksum and explores the payload parsers. The rest is the blob / JSON text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "qkit/error.h"
#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#include "qkit/observers/observers.h"
#include "qkit/serialize.h"

namespace {

template <typename Obs>
void CheckRoundTrip(const Obs& obs) {
  const std::vector<uint8_t> blob = obs.Save();
  const Obs again = Obs::Load(blob.data(), blob.size());
  QKIT_FUZZ_CHECK(again.Save() == blob, "Save -> Load -> Save differs");
  const std::string json = obs.ToJson();
  const Obs from_json = Obs::FromJson(json);
  QKIT_FUZZ_CHECK(from_json.Save() == blob, "ToJson -> FromJson -> Save differs: %s",
                  json.c_str());
  QKIT_FUZZ_CHECK(from_json.ToJson() == json, "ToJson -> FromJson -> ToJson differs");
}

template <typename Obs>
void FuzzLoad(const std::vector<uint8_t>& bytes) {
  try {
    const Obs obs = Obs::Load(bytes.data(), bytes.size());
    CheckRoundTrip(obs);
  } catch (const qkit::Error&) {
  }
}

template <typename Obs>
void FuzzJson(std::string_view json) {
  try {
    const Obs obs = Obs::FromJson(json);
    CheckRoundTrip(obs);
  } catch (const qkit::Error&) {
  }
}

// A BlobReader of kind "fuzz" version 1 driven by the first payload bytes as opcodes.
void FuzzReader(const std::vector<uint8_t>& bytes, uint8_t ops_seed) {
  try {
    qkit::BlobReader r(bytes.data(), bytes.size(), "fuzz", 1, "fuzz");
    uint32_t ops = ops_seed;
    for (int i = 0; i < 16; ++i) {
      switch ((ops + static_cast<uint32_t>(i) * 7u) % 10u) {
        case 0: r.U8(); break;
        case 1: r.I32(); break;
        case 2: r.I64(); break;
        case 3: r.F32(); break;
        case 4: r.F64(); break;
        case 5: r.Bool(); break;
        case 6: r.String(); break;
        case 7: r.F32Vector(); break;
        case 8: r.I64Vector(); break;
        default: r.ExpectEnd(); break;
      }
    }
  } catch (const qkit::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  std::vector<uint8_t> bytes(data + 1, data + size);
  if ((sel & 0x80) && bytes.size() >= 4) {
    const uint32_t crc = qkit::Crc32(bytes.data(), bytes.size() - 4);
    for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  switch (sel & 0x7f) {
    case 0: FuzzLoad<qkit::MinMaxObserver>(bytes); break;
    case 1: FuzzLoad<qkit::MovingAverageObserver>(bytes); break;
    case 2: FuzzLoad<qkit::PassiveObserver>(bytes); break;
    case 3: FuzzJson<qkit::MinMaxObserver>(text); break;
    case 4: FuzzJson<qkit::MovingAverageObserver>(text); break;
    case 5: FuzzJson<qkit::PassiveObserver>(text); break;
    // 6: the BlobReader (default)
    case 7: FuzzLoad<qkit::HistogramObserver>(bytes); break;
    case 8: FuzzJson<qkit::HistogramObserver>(text); break;
    case 9: FuzzLoad<qkit::HistogramCalibrator>(bytes); break;
    case 10: FuzzJson<qkit::HistogramCalibrator>(text); break;
    default: FuzzReader(bytes, sel); break;
  }
  return 0;
}
