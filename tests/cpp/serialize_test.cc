// Blob round trip, and rejection of every kind of corruption and truncation.
#include <gtest/gtest.h>

#include <cmath>

#include "qkit/error.h"
#include "qkit/serialize.h"

namespace qkit {
namespace {

std::vector<uint8_t> Sample() {
  BlobWriter w("qkit.Test", 3);
  w.U8(7);
  w.I32(-5);
  w.I64(int64_t{1} << 40);
  w.F32(-0.0f);
  w.F64(0.1);
  w.Bool(true);
  w.String("hello");
  w.F32Vector({1.5f, NAN, -INFINITY});
  w.I64Vector({1, 2, 3});
  return w.Finish();
}

TEST(SerializeTest, RoundTripIsExact) {
  const auto blob = Sample();
  BlobReader r(blob.data(), blob.size(), "qkit.Test", 3, "test");
  EXPECT_EQ(r.U8(), 7);
  EXPECT_EQ(r.I32(), -5);
  EXPECT_EQ(r.I64(), int64_t{1} << 40);
  const float z = r.F32();
  EXPECT_EQ(z, 0.0f);
  EXPECT_TRUE(std::signbit(z));
  EXPECT_EQ(r.F64(), 0.1);
  EXPECT_TRUE(r.Bool());
  EXPECT_EQ(r.String(), "hello");
  const auto f = r.F32Vector(3);
  EXPECT_EQ(f[0], 1.5f);
  EXPECT_TRUE(std::isnan(f[1]));
  EXPECT_EQ(f[2], -INFINITY);
  EXPECT_EQ(r.I64Vector(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_NO_THROW(r.ExpectEnd());
}

TEST(SerializeTest, CrcMatchesTheStandardCheckValue) {
  // CRC-32/IEEE check value of "123456789" is 0xCBF43926 (the published check value).
  const char* s = "123456789";
  EXPECT_EQ(Crc32(reinterpret_cast<const uint8_t*>(s), 9), 0xCBF43926u);
}

TEST(SerializeTest, EveryTruncationIsRejected) {
  const auto blob = Sample();
  for (size_t n = 0; n < blob.size(); ++n) {
    EXPECT_THROW(BlobReader(blob.data(), n, "qkit.Test", 3, "test"), DataLoss) << "length " << n;
  }
}

TEST(SerializeTest, EverySingleByteCorruptionIsRejected) {
  const auto blob = Sample();
  for (size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] ^= 0x5A;
    EXPECT_THROW(BlobReader(bad.data(), bad.size(), "qkit.Test", 3, "test"), DataLoss)
        << "byte " << i;
  }
}

TEST(SerializeTest, WrongKindOrVersionIsRejectedWithAMessage) {
  const auto blob = Sample();
  try {
    BlobReader(blob.data(), blob.size(), "qkit.Other", 3, "Load");
    FAIL();
  } catch (const DataLoss& e) {
    EXPECT_NE(std::string(e.what()).find("qkit.Other"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BlobReader(blob.data(), blob.size(), "qkit.Test", 4, "Load"), DataLoss);
}

TEST(SerializeTest, ReadingPastThePayloadOrLeavingBytesIsRejected) {
  BlobWriter w("qkit.Test", 1);
  w.I32(1);
  const auto blob = w.Finish();
  {
    BlobReader r(blob.data(), blob.size(), "qkit.Test", 1, "test");
    EXPECT_THROW(r.I64(), DataLoss);
  }
  {
    BlobReader r(blob.data(), blob.size(), "qkit.Test", 1, "test");
    EXPECT_THROW(r.ExpectEnd(), DataLoss);
  }
  {
    BlobReader r(blob.data(), blob.size(), "qkit.Test", 1, "test");
    EXPECT_THROW(r.F32Vector(), DataLoss);  // 4 bytes cannot hold a length + data
  }
}

}  // namespace
}  // namespace qkit
