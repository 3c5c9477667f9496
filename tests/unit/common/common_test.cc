// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <string>

#include "common/sha256.h"
#include "common/uuid.h"
#include "common/zstd_codec.h"

namespace blkfleet {
namespace {

TEST(Sha256Test, MatchesKnownVector) {
  EXPECT_EQ(DigestToHex(Sha256(std::string_view("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, HexRoundTripAndRejectsGarbage) {
  Sha256Digest d = Sha256(std::string_view("x"));
  EXPECT_EQ(DigestFromHex(DigestToHex(d)), d);
  EXPECT_FALSE(DigestFromHex("zz").has_value());
  EXPECT_FALSE(DigestFromHex(std::string(64, 'g')).has_value());
  EXPECT_FALSE(DigestFromBytes("short").has_value());
}

TEST(UuidTest, TextRoundTripAndVersionBits) {
  Uuid u = Uuid::Random();
  EXPECT_EQ(u.bytes[6] >> 4, 4);
  EXPECT_EQ(Uuid::Parse(u.ToString()), u);
  EXPECT_FALSE(Uuid::Parse("not-a-uuid").has_value());
  EXPECT_FALSE(Uuid::Parse("0123456789abcdef0123456789abcdef0123").has_value());
  EXPECT_TRUE(Uuid().IsNil());
}

TEST(ZstdCodecTest, RoundTrip) {
  ZstdCodec codec;
  std::string in(1 << 20, 'a');
  for (size_t i = 0; i < in.size(); i += 7) in[i] = static_cast<char>(i);
  std::string frame, out;
  ASSERT_TRUE(codec.Compress({reinterpret_cast<const uint8_t*>(in.data()), in.size()}, 1, &frame).ok());
  EXPECT_LT(frame.size(), in.size());
  ASSERT_TRUE(codec.Decompress(frame, in.size(), &out).ok());
  EXPECT_EQ(out, in);
}

TEST(ZstdCodecTest, RejectsWrongSizeAndCorruptFrame) {
  ZstdCodec codec;
  std::string in(4096, 'q'), frame, out;
  ASSERT_TRUE(codec.Compress({reinterpret_cast<const uint8_t*>(in.data()), in.size()}, 1, &frame).ok());
  EXPECT_EQ(codec.Decompress(frame, 4095, &out).code(), absl::StatusCode::kDataLoss);
  std::string bad = frame;
  bad[bad.size() / 2] ^= 0x5a;
  bad.resize(bad.size() - 2);
  EXPECT_FALSE(codec.Decompress(bad, in.size(), &out).ok());
  EXPECT_FALSE(codec.Decompress("garbage", 10, &out).ok());
}

}  // namespace
}  // namespace blkfleet
