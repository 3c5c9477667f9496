// SPDX-License-Identifier: Apache-2.0
#include "common/cbt_delta.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace blkfleet {
namespace {

using ::testing::ElementsAre;

Uuid Gen(uint8_t b) {
  Uuid u;
  u.bytes.fill(b);
  return u;
}

CbtDeviceView View(uint64_t dev, uint32_t chunk, uint32_t block, Uuid gen, uint32_t c) {
  CbtDeviceView v;
  v.device_size_bytes = dev;
  v.chunk_size_bytes = chunk;
  v.cbt.generation = gen;
  v.cbt.change_number = c;
  v.cbt.block_size_bytes = block;
  v.cbt.block_count = static_cast<uint32_t>(ChunkCount(dev, block));
  return v;
}

TEST(CbtDeltaTest, ChunkCountRoundsUpTheLastPartialChunk) {
  EXPECT_EQ(ChunkCount(0, 4096), 0u);
  EXPECT_EQ(ChunkCount(4096, 4096), 1u);
  EXPECT_EQ(ChunkCount(4097, 4096), 2u);
}

TEST(CbtDeltaTest, NoBaseMeansFullRead) {
  auto now = View(1 << 20, 65536, 4096, Gen(1), 3);
  EXPECT_EQ(FullReadReason(std::nullopt, now), "no previous backup");
}

TEST(CbtDeltaTest, GenerationChangeMeansFullRead) {
  auto base = View(1 << 20, 65536, 4096, Gen(1), 3);
  auto now = View(1 << 20, 65536, 4096, Gen(2), 4);
  EXPECT_EQ(FullReadReason(base, now), "CBT generation changed");
}

TEST(CbtDeltaTest, ChangeNumberNotAdvancingMeansFullRead) {
  auto base = View(1 << 20, 65536, 4096, Gen(1), 5);
  EXPECT_TRUE(FullReadReason(base, View(1 << 20, 65536, 4096, Gen(1), 5)).has_value());
  EXPECT_TRUE(FullReadReason(base, View(1 << 20, 65536, 4096, Gen(1), 4)).has_value());
  EXPECT_FALSE(FullReadReason(base, View(1 << 20, 65536, 4096, Gen(1), 6)).has_value());
}

TEST(CbtDeltaTest, WrapShowsUpAsNewGenerationAndForcesFullRead) {
  // The tracker wraps after change number 255 by starting a new generation
  // whose change numbers restart low.
  auto base = View(1 << 20, 65536, 4096, Gen(1), 255);
  auto now = View(1 << 20, 65536, 4096, Gen(9), 1);
  EXPECT_TRUE(FullReadReason(base, now).has_value());
}

TEST(CbtDeltaTest, GeometryChangesMeanFullRead) {
  auto base = View(1 << 20, 65536, 4096, Gen(1), 1);
  EXPECT_TRUE(FullReadReason(base, View(2 << 20, 65536, 4096, Gen(1), 2)).has_value());
  EXPECT_TRUE(FullReadReason(base, View(1 << 20, 131072, 4096, Gen(1), 2)).has_value());
  EXPECT_TRUE(FullReadReason(base, View(1 << 20, 65536, 8192, Gen(1), 2)).has_value());
  auto bad_count = View(1 << 20, 65536, 4096, Gen(1), 2);
  bad_count.cbt.block_count -= 1;  // the map would not cover the device
  EXPECT_TRUE(FullReadReason(base, bad_count).has_value());
  auto nil = View(1 << 20, 65536, 4096, Uuid{}, 2);
  EXPECT_TRUE(FullReadReason(View(1 << 20, 65536, 4096, Uuid{}, 1), nil).has_value());
}

TEST(CbtDeltaTest, SmallBlocksManyPerChunk) {
  // 16 blocks of 4 KiB per 64 KiB chunk; 4 chunks.
  auto now = View(256 * 1024, 65536, 4096, Gen(1), 7);
  std::vector<uint8_t> map(64, 3);
  map[0] = 4;    // chunk 0
  map[15] = 7;   // chunk 0 again
  map[48] = 5;   // chunk 3
  auto spans = ChangedChunks(map, now, 3);
  ASSERT_TRUE(spans.ok()) << spans.status();
  EXPECT_THAT(*spans, ElementsAre(ChunkSpan{0, 1}, ChunkSpan{3, 1}));
  // Blocks at exactly the base change number did not change after it.
  auto none = ChangedChunks(map, now, 7);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(CbtDeltaTest, AdjacentChangedChunksMerge) {
  auto now = View(256 * 1024, 65536, 4096, Gen(1), 7);
  std::vector<uint8_t> map(64, 0);
  map[15] = 1;  // chunk 0
  map[16] = 1;  // chunk 1
  map[40] = 1;  // chunk 2
  auto spans = ChangedChunks(map, now, 0);
  ASSERT_TRUE(spans.ok());
  EXPECT_THAT(*spans, ElementsAre(ChunkSpan{0, 3}));
  EXPECT_EQ(CountChunks(*spans), 3u);
}

TEST(CbtDeltaTest, LargeBlocksSpanSeveralChunks) {
  // 1 MiB blocks, 64 KiB chunks: a changed block means 16 chunks.
  auto now = View(4 << 20, 65536, 1 << 20, Gen(1), 2);
  std::vector<uint8_t> map = {0, 2, 0, 2};
  auto spans = ChangedChunks(map, now, 1);
  ASSERT_TRUE(spans.ok());
  EXPECT_THAT(*spans, ElementsAre(ChunkSpan{16, 16}, ChunkSpan{48, 16}));
}

TEST(CbtDeltaTest, PartialLastBlockAndChunk) {
  // Device of 100 KiB + 512 bytes, 64 KiB chunks (2 chunks, last one short),
  // 32 KiB blocks (4 blocks, last one 512 bytes).
  const uint64_t dev = 100 * 1024 + 512;
  auto now = View(dev, 65536, 32768, Gen(1), 2);
  ASSERT_EQ(now.cbt.block_count, 4u);
  std::vector<uint8_t> map = {0, 0, 0, 2};
  auto spans = ChangedChunks(map, now, 1);
  ASSERT_TRUE(spans.ok());
  EXPECT_THAT(*spans, ElementsAre(ChunkSpan{1, 1}));
  // A last partial block larger than the chunk: 1 MiB blocks, device of
  // 1 MiB + 4 KiB, 64 KiB chunks: block 1 covers only chunk 16.
  auto now2 = View((1 << 20) + 4096, 65536, 1 << 20, Gen(1), 2);
  std::vector<uint8_t> map2 = {0, 2};
  auto spans2 = ChangedChunks(map2, now2, 1);
  ASSERT_TRUE(spans2.ok());
  EXPECT_THAT(*spans2, ElementsAre(ChunkSpan{16, 1}));
}

TEST(CbtDeltaTest, MapOfWrongLengthIsRejected) {
  auto now = View(256 * 1024, 65536, 4096, Gen(1), 7);
  std::vector<uint8_t> map(63, 0);
  EXPECT_EQ(ChangedChunks(map, now, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace blkfleet
