// .npy reader/writer: files written by numpy itself (hex images below, produced with
// numpy 1.24.2 `np.save` / `np.lib.format.write_array`), round trips, and rejection of every
// truncation and malformed header without reading out of bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "qkit/error.h"
#include "qkit/io/npy.h"

namespace qkit {
namespace {

// Each from numpy 1.24.2 (Debian 12 python3-numpy), see the file comment:
//   kF32Shape23   = np.save(np.arange(6, dtype='<f4').reshape(2, 3) * 0.5)
//   kF64Fortran23 = np.save(np.asfortranarray([[1., 2., 3.], [4., 5., 0.1]]))
//   kI8Version2   = write_array(np.array([-128, 0, 127], np.int8), version=(2, 0))
//   kF16Scalar    = np.save(np.float16(1.5) 0-d)
//   kBigEndianF32 = np.save(np.array([1, 2], '>f4'));  kI64 = np.save(np.array([1, 2], '<i8'))
constexpr char kF32Shape23[] =
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a000000000000003f0000803f0000c03f"
    "0000004000002040"
    ;
constexpr char kF64Fortran23[] =
    "934e554d5059010076007b276465736372273a20273c6638272c2027666f727472616e5f6f72646572273a2054727565"
    "2c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a000000000000f03f0000000000001040"
    "0000000000000040000000000000144000000000000008409a9999999999b93f"
    ;
constexpr char kI8Version2[] =
    "934e554d50590200740000007b276465736372273a20277c6931272c2027666f727472616e5f6f72646572273a204661"
    "6c73652c20277368617065273a2028332c292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a80007f"
    ;
constexpr char kF16Scalar[] =
    "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028292c207d20202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a003e"
    ;
constexpr char kBigEndianF32[] =
    "934e554d5059010076007b276465736372273a20273e6634272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a3f80000040000000"
    ;
constexpr char kI64[] =
    "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a01000000000000000200000000000000"
    ;

std::vector<uint8_t> FromHex(const char* hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; hex[i] && hex[i + 1]; i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  }
  return out;
}

NpyArray Parse(const std::vector<uint8_t>& b) { return ParseNpy(b.data(), b.size(), "test.npy"); }

TEST(NpyTest, ReadsFloat32Matrix) {
  auto a = Parse(FromHex(kF32Shape23));
  ASSERT_EQ(a.dtype, DType::kFloat32);
  ASSERT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  const float* f = reinterpret_cast<const float*>(a.data.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f[i], 0.5f * i);
}

TEST(NpyTest, FortranOrderFloat64IsTransposedAndRounded) {
  auto a = Parse(FromHex(kF64Fortran23));
  ASSERT_EQ(a.dtype, DType::kFloat32);
  ASSERT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  const float* f = reinterpret_cast<const float*>(a.data.data());
  const float want[6] = {1, 2, 3, 4, 5, static_cast<float>(0.1)};  // row-major logical order
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f[i], want[i]) << i;
}

TEST(NpyTest, ReadsVersion2Int8AndZeroDimFloat16) {
  auto a = Parse(FromHex(kI8Version2));
  ASSERT_EQ(a.dtype, DType::kInt8);
  ASSERT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(static_cast<int8_t>(a.data[0]), -128);
  EXPECT_EQ(static_cast<int8_t>(a.data[2]), 127);
  auto s = Parse(FromHex(kF16Scalar));
  ASSERT_EQ(s.dtype, DType::kFloat16);
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.data[0] | (s.data[1] << 8), 0x3e00);  // 1.5 in binary16
}

TEST(NpyTest, UnsupportedDtypesAreRefusedByName) {
  for (const char* hex : {kBigEndianF32, kI64}) {
    try {
      Parse(FromHex(hex));
      FAIL() << "accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("test.npy"), std::string::npos) << e.what();
    }
  }
}

TEST(NpyTest, EveryTruncationAndTrailingGarbageIsRejected) {
  const auto good = FromHex(kF32Shape23);
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(ParseNpy(good.data(), n, "t.npy"), Error) << "length " << n;
  }
  auto longer = good;
  longer.push_back(0);
  EXPECT_THROW(Parse(longer), DataLoss);
}

TEST(NpyTest, CorruptedHeaderBytesNeverCrash) {
  // Every single-byte change either parses to a consistent array or throws a qkit::Error.
  const auto good = FromHex(kF32Shape23);
  for (size_t i = 0; i < 128; ++i) {
    for (uint8_t v : {uint8_t{0}, uint8_t{'('}, uint8_t{'9'}, uint8_t{'\''}, uint8_t{0xFF}}) {
      auto bad = good;
      bad[i] = v;
      try {
        auto a = Parse(bad);
        EXPECT_EQ(static_cast<int64_t>(a.data.size()), a.numel() * 4);
      } catch (const Error&) {
      }
    }
  }
}

TEST(NpyTest, MalformedHeadersHaveClearErrors) {
  auto make = [](const std::string& dict, size_t payload) {
    std::string s = "\x93NUMPY";
    s += '\x01';
    s += '\x00';
    s += static_cast<char>(dict.size());
    s += '\x00';
    s += dict;
    s.append(payload, '\0');
    return std::vector<uint8_t>(s.begin(), s.end());
  };
  EXPECT_THROW(Parse(make("{'descr': '<f4', 'shape': (2,), }", 8)), DataLoss);  // no order
  EXPECT_THROW(Parse(make("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", 8)),
               DataLoss);
  EXPECT_THROW(Parse(make("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8)),
               DataLoss);
  EXPECT_THROW(
      Parse(make("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,), }", 8)),
      DataLoss);
  EXPECT_THROW(Parse(make("{'descr': '<f4', 'fortran_order': False, "
                          "'shape': (65536, 65536, 65536), }", 8)),
               InvalidArgument);  // absurd: refused before allocating
  EXPECT_THROW(Parse(make("{'descr': 'O', 'fortran_order': False, 'shape': (2,), }", 16)),
               InvalidArgument);
  EXPECT_NO_THROW(Parse(make("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 0)));
}

TEST(NpyTest, WriteThenReadRoundTripsAndNumpyHeaderIsAligned) {
  float v[6] = {1.5f, -0.0f, NAN, INFINITY, 3.0f, 1e-40f};
  auto view = TensorView::Contiguous(v, DType::kFloat32, {3, 2});
  const std::string path = ::testing::TempDir() + "/qkit_npy_roundtrip.npy";
  WriteNpy(path, view);
  auto a = ReadNpy(path);
  ASSERT_EQ(a.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::memcmp(a.data.data(), v, sizeof v), 0);
  FILE* f = std::fopen(path.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  std::fseek(f, 0, SEEK_END);
  EXPECT_EQ((std::ftell(f) - 24) % 64, 0);  // header padded to 64 bytes as numpy does
  std::fclose(f);
  std::remove(path.c_str());
  EXPECT_THROW(ReadNpy(::testing::TempDir() + "/does_not_exist.npy"), InvalidArgument);
}

}  // namespace
}  // namespace qkit
