// SPDX-License-Identifier: Apache-2.0
#include "server/chunk_intake.h"

#include <gtest/gtest.h>

#include "tests/unit/server/temp_dir.h"

namespace blkfleet::server {
namespace {

using blkfleet::testing::TempDir;

ReceivedChunk Chunk(uint64_t index, const std::string& plain, type::v1::ChunkEncoding enc) {
  ReceivedChunk c;
  c.index = index;
  c.digest = Sha256(plain);
  c.length = static_cast<uint32_t>(plain.size());
  c.encoding = enc;
  if (enc == type::v1::CHUNK_ENCODING_ZSTD) {
    ZstdCodec codec;
    EXPECT_TRUE(codec.Compress({reinterpret_cast<const uint8_t*>(plain.data()), plain.size()}, 1,
                               &c.data)
                    .ok());
  } else {
    c.data = plain;
  }
  return c;
}

class ChunkIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(store_.Init().ok()); }
  TempDir dir_;
  repo::ChunkStore store_{dir_.path()};
};

TEST_F(ChunkIntakeTest, StoresVerifiedRawAndZstdChunksOnce) {
  ChunkIntake intake(&store_, 2, 2);
  std::string a(70000, 'a'), b(5000, 'b');
  ASSERT_TRUE(intake.Submit(Chunk(0, a, type::v1::CHUNK_ENCODING_ZSTD)).ok());
  ASSERT_TRUE(intake.Submit(Chunk(1, b, type::v1::CHUNK_ENCODING_RAW)).ok());
  ASSERT_TRUE(intake.Submit(Chunk(2, b, type::v1::CHUNK_ENCODING_RAW)).ok());  // same data
  ASSERT_TRUE(intake.Drain().ok());
  EXPECT_EQ(intake.chunks_stored(), 2u);
  ZstdCodec codec;
  std::string out;
  ASSERT_TRUE(store_.Get(Sha256(a), &codec, &out).ok());
  EXPECT_EQ(out, a);
  ASSERT_TRUE(store_.Get(Sha256(b), &codec, &out).ok());
  EXPECT_EQ(out, b);
}

TEST_F(ChunkIntakeTest, RawChunkOfTheWrongLengthIsRejectedAndNotStored) {
  ChunkIntake intake(&store_, 1, 2);
  ReceivedChunk c = Chunk(3, std::string(4096, 'x'), type::v1::CHUNK_ENCODING_RAW);
  c.length = 8192;
  const Sha256Digest d = c.digest;
  ASSERT_TRUE(intake.Submit(std::move(c)).ok());
  absl::Status s = intake.Drain();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk 3"), std::string_view::npos) << s;
  EXPECT_FALSE(store_.Contains(d));
  // The failure sticks: later chunks are refused.
  EXPECT_FALSE(intake.Submit(Chunk(4, "y", type::v1::CHUNK_ENCODING_RAW)).ok());
}

TEST_F(ChunkIntakeTest, CorruptFrameAndWrongDigestAreRejected) {
  {
    ChunkIntake intake(&store_, 1, 2);
    ReceivedChunk c = Chunk(5, std::string(9000, 'z'), type::v1::CHUNK_ENCODING_ZSTD);
    c.data[c.data.size() / 2] ^= 0x55;
    ASSERT_TRUE(intake.Submit(std::move(c)).ok());
    EXPECT_EQ(intake.Drain().code(), absl::StatusCode::kDataLoss);
  }
  {
    ChunkIntake intake(&store_, 1, 2);
    ReceivedChunk c = Chunk(6, std::string(9000, 'q'), type::v1::CHUNK_ENCODING_RAW);
    c.digest = Sha256(std::string("something else"));
    const Sha256Digest d = c.digest;
    ASSERT_TRUE(intake.Submit(std::move(c)).ok());
    absl::Status s = intake.Drain();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(s.message().find("failed verification"), std::string_view::npos) << s;
    EXPECT_FALSE(store_.Contains(d));
  }
}

}  // namespace
}  // namespace blkfleet::server
