// SPDX-License-Identifier: Apache-2.0
#include "server/repository/image_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/tools/repo_builder.h"
#include "tests/unit/server/temp_dir.h"

namespace blkfleet::repo {
namespace {

using blkfleet::testing::TempDir;
namespace fs = std::filesystem;

constexpr uint32_t kChunk = 64 << 10;

// 10 chunks and a 1000-byte tail: chunk 3 all zeros, the rest patterned.
std::string MakeImage() {
  std::string s(10 * kChunk + 1000, '\0');
  std::mt19937 rng(7);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i / kChunk != 3) s[i] = static_cast<char>(rng());
  }
  return s;
}

class ImageReaderTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    image_ = MakeImage();
    const std::string file = dir_.path() + "/image";
    std::ofstream(file, std::ios::binary) << image_;
    if (GetParam()) key_ = RepoKey{std::string(32, 'k')};
    auto r = Repository::Open(dir_.path() + "/repo", key_ ? &*key_ : nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    repo_ = std::move(*r);
    blkfleet::testing::BackupSpec spec;
    spec.chunk_size_bytes = kChunk;
    auto b = blkfleet::testing::WriteBackupFromImage(repo_.get(), file, spec);
    ASSERT_TRUE(b.ok()) << b.status();
    backup_ = *b;
    auto idx = repo_->ReadIndex("1", 0, *DigestFromBytes(backup_.devices(0).index_sha256()));
    ASSERT_TRUE(idx.ok());
    index_ = *idx;
  }

  std::unique_ptr<DeviceImageReader> Open(uint64_t cache_bytes = 2 * kChunk) {
    auto r = OpenDeviceImage(repo_.get(), backup_, 0, {.cache_bytes = cache_bytes});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : nullptr;
  }

  std::string Read(DeviceImageReader& r, uint64_t off, size_t len, absl::Status* st) {
    std::string out(len, '\x55');
    *st = r.ReadAt(off, {out.data(), out.size()});
    return out;
  }

  TempDir dir_;
  std::optional<RepoKey> key_;
  std::unique_ptr<Repository> repo_;
  blkfleet::server::v1::Backup backup_;
  DeviceIndex index_;
  std::string image_;
};

TEST_P(ImageReaderTest, ReadsAnyRangeByteForByte) {
  auto r = Open();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->size_bytes(), image_.size());
  EXPECT_EQ(r->block_size_bytes(), kChunk);
  absl::Status st;
  EXPECT_EQ(Read(*r, 0, image_.size(), &st), image_);
  ASSERT_TRUE(st.ok()) << st;
  // Unaligned ranges across chunk borders, the tail, single bytes; the cache
  // holds two chunks, so these evict and refetch.
  std::mt19937 rng(1);
  for (int i = 0; i < 200; ++i) {
    const uint64_t off = rng() % image_.size();
    const size_t len = 1 + rng() % std::min<uint64_t>(3 * kChunk, image_.size() - off);
    ASSERT_EQ(Read(*r, off, len, &st), image_.substr(off, len)) << off << "+" << len;
    ASSERT_TRUE(st.ok()) << st;
  }
  EXPECT_EQ(Read(*r, image_.size() - 1, 1, &st), image_.substr(image_.size() - 1));
  EXPECT_TRUE(Read(*r, image_.size(), 0, &st).empty());
  EXPECT_TRUE(st.ok()) << st;
}

TEST_P(ImageReaderTest, RefusesRangesOutsideTheImage) {
  auto r = Open();
  ASSERT_NE(r, nullptr);
  absl::Status st;
  Read(*r, image_.size() - 10, 11, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange) << st;
  Read(*r, ~0ull - 2, 4, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange) << st;
}

TEST_P(ImageReaderTest, ZeroChunksAreKnownAndReadWithoutTheStore) {
  auto r = Open();
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(r->KnownZero(3 * kChunk, kChunk));
  EXPECT_TRUE(r->KnownZero(3 * kChunk + 5, 100));
  EXPECT_FALSE(r->KnownZero(3 * kChunk, kChunk + 1));
  EXPECT_FALSE(r->KnownZero(0, 10));
  EXPECT_FALSE(r->KnownZero(image_.size() - 1, 2));
  // The zero chunk's file is not needed to read zeros: its id says so.
  fs::remove(repo_->chunks().PathOf(index_.digests[3]));
  absl::Status st;
  EXPECT_EQ(Read(*r, 3 * kChunk, kChunk, &st), std::string(kChunk, '\0'));
  EXPECT_TRUE(st.ok()) << st;
}

TEST_P(ImageReaderTest, ADamagedChunkFailsItsRangeOnly) {
  const std::string path = repo_->chunks().PathOf(index_.digests[5]);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(path) - 3));
    f.put('\x7f');
  }
  fs::remove(repo_->chunks().PathOf(index_.digests[7]));
  auto r = Open();
  ASSERT_NE(r, nullptr);
  absl::Status st;
  Read(*r, 5 * kChunk + 10, 20, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("chunk 5 ("), std::string_view::npos) << st;
  EXPECT_NE(st.message().find(path), std::string_view::npos) << st;
  // A read that only touches the damaged chunk's neighbours is fine.
  EXPECT_EQ(Read(*r, 4 * kChunk, kChunk, &st), image_.substr(4 * kChunk, kChunk));
  EXPECT_TRUE(st.ok()) << st;
  Read(*r, 6 * kChunk + kChunk - 1, 2, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_NE(st.message().find("chunk 7 ("), std::string_view::npos) << st;
  // Asked again, it fails again: a failed fetch is not cached as good.
  Read(*r, 5 * kChunk, 1, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
}

TEST_P(ImageReaderTest, ManyThreadsReadTheSameChunksAtOnce) {
  auto r = Open(kChunk);  // one chunk of cache: every thread contends
  ASSERT_NE(r, nullptr);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::string out;
      for (int i = 0; i < 100; ++i) {
        const uint64_t off = (rng() % 10) * kChunk + rng() % 4096;
        const size_t len = std::min<uint64_t>(4096 + rng() % 8192, image_.size() - off);
        out.assign(len, '\0');
        if (!r->ReadAt(off, {out.data(), len}).ok() || out != image_.substr(off, len)) ++bad;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_P(ImageReaderTest, RefusesAnUnknownDeviceAndAWrongIndexDigest) {
  auto none = OpenDeviceImage(repo_.get(), backup_, 1);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument) << none.status();
  auto other = backup_;
  other.mutable_devices(0)->set_index_sha256(std::string(32, 'x'));
  auto wrong = OpenDeviceImage(repo_.get(), other, 0);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss) << wrong.status();
}

INSTANTIATE_TEST_SUITE_P(PlainAndEncrypted, ImageReaderTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Encrypted" : "Plain"; });

}  // namespace
}  // namespace blkfleet::repo
