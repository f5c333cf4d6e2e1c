// Versioned, checksummed binary blobs for observer and calibrator state (a Python state_dict
// stores them in a uint8 buffer). Layout, little-endian:
//   "QKIT" | u16 format version | u16 kind-name length | kind name | u32 state version |
//   u64 payload length | payload | u32 CRC-32 (IEEE) of everything before it.
// Readers reject a wrong magic, format version, kind, state version, length or checksum, and
// any read past the payload, with DataLoss naming what was wrong; nothing is read out of bounds.
#ifndef QKIT_SERIALIZE_H_
#define QKIT_SERIALIZE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qkit {

inline constexpr uint16_t kBlobFormatVersion = 1;

uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

class BlobWriter {
 public:
  // `kind` names the state type ("qkit.MinMaxObserver"); `state_version` its layout version.
  BlobWriter(std::string_view kind, uint32_t state_version);

  void U8(uint8_t v);
  void I32(int32_t v);
  void I64(int64_t v);
  void F32(float v);
  void F64(double v);
  void Bool(bool v) { U8(v ? 1 : 0); }
  void String(std::string_view s);
  void F32Array(const float* v, int64_t n);  // length-prefixed
  void I64Array(const int64_t* v, int64_t n);
  void F32Vector(const std::vector<float>& v) { F32Array(v.data(), static_cast<int64_t>(v.size())); }
  void I64Vector(const std::vector<int64_t>& v) { I64Array(v.data(), static_cast<int64_t>(v.size())); }

  // The finished blob (header + payload + checksum).
  std::vector<uint8_t> Finish() const;

 private:
  void Raw(const void* p, size_t n);
  std::string kind_;
  uint32_t state_version_;
  std::vector<uint8_t> payload_;
};

class BlobReader {
 public:
  // Verifies the header, kind, state version and checksum; throws DataLoss (message prefixed
  // by `caller`) on any mismatch.
  BlobReader(const uint8_t* data, size_t size, std::string_view expected_kind,
             uint32_t expected_state_version, const char* caller);

  uint8_t U8();
  int32_t I32();
  int64_t I64();
  float F32();
  double F64();
  bool Bool();
  std::string String();
  // Length-prefixed arrays; `expected` >= 0 requires that exact length (DataLoss otherwise),
  // and any length is bounded by the bytes left, so a corrupted length cannot allocate wildly.
  std::vector<float> F32Vector(int64_t expected = -1);
  std::vector<int64_t> I64Vector(int64_t expected = -1);

  // Throws DataLoss unless the whole payload was consumed.
  void ExpectEnd() const;

 private:
  void Raw(void* p, size_t n);
  int64_t ArrayLength(size_t elem_size, int64_t expected);
  const uint8_t* p_;
  const uint8_t* end_;
  std::string caller_;
};

}  // namespace qkit

#endif  // QKIT_SERIALIZE_H_
