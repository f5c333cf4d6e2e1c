#include "qkit/serialize.h"

#include <array>
#include <cstring>

#include "internal/check.h"

namespace qkit {
namespace {

constexpr char kMagic[4] = {'Q', 'K', 'I', 'T'};

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

template <class T>
void Append(std::vector<uint8_t>& out, T v) {
  // x86-64 and every supported target are little-endian. (resize + memcpy rather than
  // insert: GCC 12 reports a false -Warray-bounds on vector::insert of a small array.)
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

}  // namespace

uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

BlobWriter::BlobWriter(std::string_view kind, uint32_t state_version)
    : kind_(kind), state_version_(state_version) {}

void BlobWriter::Raw(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  payload_.insert(payload_.end(), b, b + n);
}
void BlobWriter::U8(uint8_t v) { Raw(&v, 1); }
void BlobWriter::I32(int32_t v) { Raw(&v, 4); }
void BlobWriter::I64(int64_t v) { Raw(&v, 8); }
void BlobWriter::F32(float v) { Raw(&v, 4); }
void BlobWriter::F64(double v) { Raw(&v, 8); }
void BlobWriter::String(std::string_view s) {
  I64(static_cast<int64_t>(s.size()));
  Raw(s.data(), s.size());
}
void BlobWriter::F32Array(const float* v, int64_t n) {
  I64(n);
  Raw(v, static_cast<size_t>(n) * 4);
}
void BlobWriter::I64Array(const int64_t* v, int64_t n) {
  I64(n);
  Raw(v, static_cast<size_t>(n) * 8);
}

std::vector<uint8_t> BlobWriter::Finish() const {
  std::vector<uint8_t> out;
  out.reserve(32 + kind_.size() + payload_.size());
  for (char c : kMagic) out.push_back(static_cast<uint8_t>(c));
  Append<uint16_t>(out, kBlobFormatVersion);
  Append<uint16_t>(out, static_cast<uint16_t>(kind_.size()));
  for (char c : kind_) out.push_back(static_cast<uint8_t>(c));
  Append<uint32_t>(out, state_version_);
  Append<uint64_t>(out, payload_.size());
  const size_t at = out.size();
  out.resize(at + payload_.size());
  if (!payload_.empty()) std::memcpy(out.data() + at, payload_.data(), payload_.size());
  Append<uint32_t>(out, Crc32(out.data(), out.size()));
  return out;
}

BlobReader::BlobReader(const uint8_t* data, size_t size, std::string_view expected_kind,
                       uint32_t expected_state_version, const char* caller)
    : caller_(caller) {
  QKIT_REQUIRE(data != nullptr || size == 0, DataLoss, caller << ": null state blob");
  const size_t fixed = 4 + 2 + 2 + 4 + 8 + 4;
  QKIT_REQUIRE(size >= fixed, DataLoss,
               caller << ": state blob truncated (" << size << " bytes, header needs " << fixed
                      << ")");
  QKIT_REQUIRE(std::memcmp(data, kMagic, 4) == 0, DataLoss,
               caller << ": not a qkit state blob (bad magic)");
  uint16_t fmt, kind_len;
  std::memcpy(&fmt, data + 4, 2);
  std::memcpy(&kind_len, data + 6, 2);
  QKIT_REQUIRE(fmt == kBlobFormatVersion, DataLoss,
               caller << ": blob format version " << fmt << ", this build reads "
                      << kBlobFormatVersion);
  QKIT_REQUIRE(size >= fixed + kind_len, DataLoss, caller << ": state blob truncated in header");
  const std::string kind(reinterpret_cast<const char*>(data + 8), kind_len);
  QKIT_REQUIRE(kind == expected_kind, DataLoss,
               caller << ": blob holds `" << kind << "`, expected `" << expected_kind << "`");
  const uint8_t* q = data + 8 + kind_len;
  uint32_t version;
  uint64_t payload_len;
  std::memcpy(&version, q, 4);
  std::memcpy(&payload_len, q + 4, 8);
  QKIT_REQUIRE(version == expected_state_version, DataLoss,
               caller << ": `" << kind << "` state version " << version << ", this build reads "
                      << expected_state_version);
  const size_t header = 8 + kind_len + 12;
  QKIT_REQUIRE(payload_len == size - header - 4, DataLoss,
               caller << ": state blob length mismatch (payload says " << payload_len
                      << " bytes, blob has " << (size - header - 4) << ")");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data + size - 4, 4);
  QKIT_REQUIRE(Crc32(data, size - 4) == stored_crc, DataLoss,
               caller << ": state blob checksum mismatch (corrupted)");
  p_ = data + header;
  end_ = data + size - 4;
}

void BlobReader::Raw(void* p, size_t n) {
  QKIT_REQUIRE(static_cast<size_t>(end_ - p_) >= n, DataLoss,
               caller_ << ": state blob payload ends early");
  if (n != 0) std::memcpy(p, p_, n);  // an empty vector's data() may be null
  p_ += n;
}
uint8_t BlobReader::U8() { uint8_t v; Raw(&v, 1); return v; }
int32_t BlobReader::I32() { int32_t v; Raw(&v, 4); return v; }
int64_t BlobReader::I64() { int64_t v; Raw(&v, 8); return v; }
float BlobReader::F32() { float v; Raw(&v, 4); return v; }
double BlobReader::F64() { double v; Raw(&v, 8); return v; }
bool BlobReader::Bool() {
  const uint8_t v = U8();
  QKIT_REQUIRE(v <= 1, DataLoss, caller_ << ": corrupted boolean " << int{v} << " in state blob");
  return v == 1;
}

int64_t BlobReader::ArrayLength(size_t elem_size, int64_t expected) {
  const int64_t n = I64();
  QKIT_REQUIRE(n >= 0 && static_cast<uint64_t>(n) <= static_cast<uint64_t>(end_ - p_) / elem_size,
               DataLoss, caller_ << ": corrupted array length " << n << " in state blob");
  QKIT_REQUIRE(expected < 0 || n == expected, DataLoss,
               caller_ << ": array of length " << n << " in state blob, expected " << expected);
  return n;
}

std::string BlobReader::String() {
  const int64_t n = ArrayLength(1, -1);
  std::string s(static_cast<size_t>(n), '\0');
  Raw(s.data(), static_cast<size_t>(n));
  return s;
}

std::vector<float> BlobReader::F32Vector(int64_t expected) {
  const int64_t n = ArrayLength(4, expected);
  std::vector<float> v(static_cast<size_t>(n));
  Raw(v.data(), static_cast<size_t>(n) * 4);
  return v;
}

std::vector<int64_t> BlobReader::I64Vector(int64_t expected) {
  const int64_t n = ArrayLength(8, expected);
  std::vector<int64_t> v(static_cast<size_t>(n));
  Raw(v.data(), static_cast<size_t>(n) * 8);
  return v;
}

void BlobReader::ExpectEnd() const {
  QKIT_REQUIRE(p_ == end_, DataLoss,
               caller_ << ": " << (end_ - p_) << " unread bytes at the end of the state blob");
}

}  // namespace qkit
