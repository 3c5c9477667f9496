// SPDX-License-Identifier: Apache-2.0
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include "common/crc32c.h"
#include "common/durable_file.h"
#include "server/repository/repository.h"
#include "tests/unit/server/temp_dir.h"

namespace blkfleet::repo {
namespace {

namespace fs = std::filesystem;
using blkfleet::testing::TempDir;

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>((i % 64 < 32) ? 'a' + (i % 7) : (x >> 24));
  }
  return s;
}

void FlipByte(const std::string& path, off_t at) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, at), 1);
  c ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
  ::close(fd);
}

size_t CountTempFiles(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) ++n;
  }
  return n;
}

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(store_.Init().ok()); }
  TempDir dir_;
  ChunkStore store_{dir_.path()};
  ZstdCodec codec_;
};

TEST_F(ChunkStoreTest, ZstdChunkRoundTrips) {
  std::string plain = Pattern(200000, 1);
  Sha256Digest d = Sha256(plain);
  std::string frame;
  ASSERT_TRUE(codec_.Compress({reinterpret_cast<const uint8_t*>(plain.data()), plain.size()}, 1,
                              &frame)
                  .ok());
  auto put = store_.Put(d, plain.size(), StoredEncoding::kZstd, frame);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_TRUE(*put);
  EXPECT_TRUE(store_.Contains(d));
  EXPECT_TRUE(store_.SyncDirectories().ok());
  std::string out;
  ASSERT_TRUE(store_.Get(d, &codec_, &out).ok());
  EXPECT_EQ(out, plain);
  EXPECT_EQ(fs::file_size(store_.PathOf(d)), ChunkStore::kHeaderSize + frame.size());
  EXPECT_EQ(CountTempFiles(dir_.path()), 0u);
}

TEST(ChunkStoreFsTest, RoundTripsOnTmpfsToo) {
  // tmpfs may refuse O_DIRECT: the store falls back to buffered writes.
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  char tmpl[] = "/dev/shm/blkfleet-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  {
    ChunkStore store(tmpl);
    ASSERT_TRUE(store.Init().ok());
    std::string plain = Pattern(5000, 9);
    Sha256Digest d = Sha256(plain);
    ASSERT_TRUE(store.Put(d, plain.size(), StoredEncoding::kRaw, plain).ok());
    EXPECT_EQ(fs::file_size(store.PathOf(d)), ChunkStore::kHeaderSize + plain.size());
    ZstdCodec codec;
    std::string out;
    ASSERT_TRUE(store.Get(d, &codec, &out).ok());
    EXPECT_EQ(out, plain);
  }
  fs::remove_all(tmpl);
}

TEST_F(ChunkStoreTest, RawChunkRoundTrips) {
  std::string plain = Pattern(4096, 2);
  Sha256Digest d = Sha256(plain);
  ASSERT_TRUE(store_.Put(d, plain.size(), StoredEncoding::kRaw, plain).ok());
  std::string out;
  ASSERT_TRUE(store_.Get(d, &codec_, &out).ok());
  EXPECT_EQ(out, plain);
}

TEST_F(ChunkStoreTest, SecondPutKeepsTheFirstFile) {
  std::string plain = Pattern(4096, 3);
  Sha256Digest d = Sha256(plain);
  ASSERT_TRUE(*store_.Put(d, plain.size(), StoredEncoding::kRaw, plain));
  auto ino = fs::status(store_.PathOf(d));
  struct stat before, after;
  ASSERT_EQ(::stat(store_.PathOf(d).c_str(), &before), 0);
  auto again = store_.Put(d, plain.size(), StoredEncoding::kRaw, plain);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  ASSERT_EQ(::stat(store_.PathOf(d).c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  (void)ino;
}

TEST_F(ChunkStoreTest, FlippedStoredByteIsDataLoss) {
  std::string plain = Pattern(100000, 4);
  Sha256Digest d = Sha256(plain);
  std::string frame;
  ASSERT_TRUE(codec_.Compress({reinterpret_cast<const uint8_t*>(plain.data()), plain.size()}, 1,
                              &frame)
                  .ok());
  ASSERT_TRUE(store_.Put(d, plain.size(), StoredEncoding::kZstd, frame).ok());
  FlipByte(store_.PathOf(d), ChunkStore::kHeaderSize + static_cast<off_t>(frame.size() / 2));
  std::string out;
  absl::Status s = store_.Get(d, &codec_, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("checksum"), std::string_view::npos) << s;
}

TEST_F(ChunkStoreTest, FlippedHeaderByteIsDataLoss) {
  std::string plain = Pattern(4096, 5);
  Sha256Digest d = Sha256(plain);
  ASSERT_TRUE(store_.Put(d, plain.size(), StoredEncoding::kRaw, plain).ok());
  FlipByte(store_.PathOf(d), 12);  // plain length
  std::string out;
  EXPECT_EQ(store_.Get(d, &codec_, &out).code(), absl::StatusCode::kDataLoss);
}

TEST_F(ChunkStoreTest, ContentNotMatchingDigestIsDataLoss) {
  // A well-formed file under the wrong name: the digest check catches it.
  std::string plain = Pattern(4096, 6);
  Sha256Digest wrong = Sha256(std::string("something else"));
  ASSERT_TRUE(store_.Put(wrong, plain.size(), StoredEncoding::kRaw, plain).ok());
  std::string out;
  absl::Status s = store_.Get(wrong, &codec_, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("digest"), std::string_view::npos) << s;
}

uint32_t ReadLe32(const std::string& b, size_t at) {
  return uint32_t{static_cast<uint8_t>(b[at])} | uint32_t{static_cast<uint8_t>(b[at + 1])} << 8 |
         uint32_t{static_cast<uint8_t>(b[at + 2])} << 16 |
         uint32_t{static_cast<uint8_t>(b[at + 3])} << 24;
}

void WriteLe32(std::string& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(ChunkStoreTest, NewFilesAreVersion2WithCrc32c) {
  std::string plain = Pattern(5000, 4);
  Sha256Digest d = Sha256(plain);
  ASSERT_TRUE(store_.Put(d, plain.size(), StoredEncoding::kRaw, plain).ok());
  std::string file = ReadAll(store_.PathOf(d));
  ASSERT_EQ(file.size(), ChunkStore::kHeaderSize + plain.size());
  EXPECT_EQ(file[8], 2);
  EXPECT_EQ(file[9], 0);
  EXPECT_EQ(ReadLe32(file, 20), Crc32c(plain));
  EXPECT_EQ(ReadLe32(file, 28), Crc32c(file.data(), 28));
}

TEST_F(ChunkStoreTest, Version1FileWithZlibCrcIsStillRead) {
  std::string plain = Pattern(7000, 5);
  Sha256Digest d = Sha256(plain);
  ASSERT_TRUE(store_.Put(d, plain.size(), StoredEncoding::kRaw, plain).ok());
  const std::string path = store_.PathOf(d);
  // Rewrite the header as version 1 did: zlib CRC-32 for both checksums.
  std::string file = ReadAll(path);
  file[8] = 1;
  WriteLe32(file, 20, static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(plain.data()),
                                                    plain.size())));
  WriteLe32(file, 28,
            static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(file.data()), 28)));
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  ASSERT_TRUE(WriteFileDurably(path, file).ok());
  std::string out;
  absl::Status s = store_.Get(d, &codec_, &out);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(out, plain);
  // Its checksums still guard it.
  FlipByte(path, ChunkStore::kHeaderSize + 10);
  EXPECT_EQ(store_.Get(d, &codec_, &out).code(), absl::StatusCode::kDataLoss);
}

TEST_F(ChunkStoreTest, MissingChunkIsNotFound) {
  std::string out;
  EXPECT_EQ(store_.Get(Sha256(std::string("nope")), &codec_, &out).code(),
            absl::StatusCode::kNotFound);
}

DeviceIndex SampleIndex() {
  DeviceIndex idx;
  idx.device_size_bytes = 3 * 65536 + 100;
  idx.chunk_size_bytes = 65536;
  idx.cbt.generation.bytes.fill(0xab);
  idx.cbt.change_number = 9;
  idx.cbt.block_size_bytes = 4096;
  idx.cbt.block_count = static_cast<uint32_t>(ChunkCount(idx.device_size_bytes, 4096));
  idx.create_time_unix_micros = 1764000000123456;
  for (int i = 0; i < 4; ++i) idx.digests.push_back(Sha256(std::to_string(i)));
  return idx;
}

TEST(DeviceIndexTest, RoundTrips) {
  DeviceIndex idx = SampleIndex();
  auto back = DecodeDeviceIndex(EncodeDeviceIndex(idx));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->device_size_bytes, idx.device_size_bytes);
  EXPECT_EQ(back->chunk_size_bytes, idx.chunk_size_bytes);
  EXPECT_EQ(back->cbt.generation, idx.cbt.generation);
  EXPECT_EQ(back->cbt.change_number, 9u);
  EXPECT_EQ(back->cbt.block_size_bytes, 4096u);
  EXPECT_EQ(back->cbt.block_count, idx.cbt.block_count);
  EXPECT_EQ(back->create_time_unix_micros, idx.create_time_unix_micros);
  EXPECT_EQ(back->digests, idx.digests);
}

TEST(DeviceIndexTest, EveryFlippedByteIsCaught) {
  std::string bytes = EncodeDeviceIndex(SampleIndex());
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string copy = bytes;
    copy[i] ^= 0x01;
    EXPECT_EQ(DecodeDeviceIndex(copy).status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
  }
  EXPECT_FALSE(DecodeDeviceIndex(bytes.substr(0, bytes.size() - 1)).ok());
}

TEST(DurableFileTest, FailedWriteLeavesNoPartialFile) {
  TempDir dir;
  // The target is a non-empty directory: the final rename must fail.
  std::string target = dir.path() + "/target";
  ASSERT_TRUE(MakeDirectories(target + "/inside").ok());
  absl::Status s = WriteFileDurably(target, std::string(1 << 20, 'x'));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(fs::is_directory(target));
  EXPECT_EQ(CountTempFiles(dir.path()), 0u);
}

TEST(DurableFileTest, ReplacesWholeFile) {
  TempDir dir;
  std::string p = dir.path() + "/f";
  ASSERT_TRUE(WriteFileDurably(p, "first version, long").ok());
  ASSERT_TRUE(WriteFileDurably(p, "second").ok());
  EXPECT_EQ(*ReadWholeFile(p), "second");
  EXPECT_EQ(CountTempFiles(dir.path()), 0u);
}

TEST(RepositoryTest, CreatesThenReopensWithTheSameId) {
  TempDir dir;
  auto r1 = Repository::Open(dir.path() + "/repo");
  ASSERT_TRUE(r1.ok()) << r1.status();
  std::string id = (*r1)->id();
  auto r2 = Repository::Open(dir.path() + "/repo");
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ((*r2)->id(), id);
}

TEST(RepositoryTest, RefusesANonEmptyForeignDirectory) {
  TempDir dir;
  ASSERT_TRUE(WriteFileDurably(dir.path() + "/precious.txt", "data").ok());
  EXPECT_EQ(Repository::Open(dir.path()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RepositoryTest, IndexAndManifestRoundTrip) {
  TempDir dir;
  auto repo = Repository::Open(dir.path());
  ASSERT_TRUE(repo.ok());
  DeviceIndex idx = SampleIndex();
  auto sha = (*repo)->WriteIndex("7", 0, idx);
  ASSERT_TRUE(sha.ok()) << sha.status();
  auto back = (*repo)->ReadIndex("7", 0, *sha);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->digests, idx.digests);
  // A digest that does not match the one recorded is refused.
  EXPECT_EQ((*repo)->ReadIndex("7", 0, Sha256(std::string("x"))).status().code(),
            absl::StatusCode::kDataLoss);

  blkfleet::server::v1::Backup b;
  b.set_id("7");
  b.set_host("h1");
  b.set_snapshot_id("00000000-0000-4000-8000-000000000001");
  auto* d = b.add_devices();
  d->set_device("/dev/vdb");
  d->set_size_bytes(idx.device_size_bytes);
  d->set_index_sha256(DigestToBytes(*sha));
  ASSERT_TRUE((*repo)->WriteManifest(b).ok());
  auto m = (*repo)->ReadManifest("7");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->host(), "h1");
  EXPECT_EQ(m->devices(0).index_sha256(), DigestToBytes(*sha));
  EXPECT_EQ(CountTempFiles(dir.path()), 0u);
}

}  // namespace
}  // namespace blkfleet::repo
