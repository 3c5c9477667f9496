// SPDX-License-Identifier: Apache-2.0
// Encrypted repositories (server/repository/repo_key.h): key files, the key
// check in repo.json, AES-256-GCM chunks with HMAC-SHA256 ids, and that a
// plain repository keeps today's bytes.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include <map>

#include "common/crc32c.h"
#include "common/durable_file.h"
#include "nlohmann/json.hpp"
#include "server/repository/repository.h"
#include "tests/unit/server/temp_dir.h"

namespace blkfleet::repo {
namespace {

namespace fs = std::filesystem;
using blkfleet::testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string Data(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 7;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

RepoKey KeyOf(char fill) { return RepoKey{std::string(32, fill)}; }

// Stores `plain` raw under the repository's own chunk id.
Sha256Digest PutRaw(Repository& r, const std::string& plain) {
  Sha256Digest id = r.chunks().id_fn()(plain);
  EXPECT_TRUE(r.chunks().Put(id, plain.size(), StoredEncoding::kRaw, plain).ok());
  return id;
}

// Lists every file under `dir` with its content.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out[e.path().string()] = e.is_regular_file() ? ReadAll(e.path().string()) : "<dir>";
  }
  return out;
}

TEST(RepoKeyTest, GeneratedKeyFileLoadsAndIsNeverOverwritten) {
  TempDir dir;
  const std::string path = dir.path() + "/key";
  ASSERT_TRUE(GenerateRepoKeyFile(path).ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  EXPECT_EQ(fs::file_size(path), 65u);  // 64 hex digits and a newline
  auto k = LoadRepoKeyFile(path, "--repo-key-file");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->bytes.size(), 32u);
  const std::string before = ReadAll(path);
  EXPECT_EQ(GenerateRepoKeyFile(path).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadAll(path), before);
  // Two generated keys differ.
  ASSERT_TRUE(GenerateRepoKeyFile(dir.path() + "/key2").ok());
  EXPECT_NE(ReadAll(dir.path() + "/key2"), before);
}

TEST(RepoKeyTest, KeyFileReadableByOthersOrMalformedIsRefusedNamingTheFlag) {
  TempDir dir;
  const std::string path = dir.path() + "/key";
  ASSERT_TRUE(WriteFileDurably(path, std::string(64, 'a') + "\n").ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto open = LoadRepoKeyFile(path, "--repo-key-file");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(open.status().message().find("--repo-key-file"), std::string_view::npos);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(LoadRepoKeyFile(path, "--repo-key-file").ok());
  ASSERT_TRUE(WriteFileDurably(path, std::string(63, 'a') + "g\n").ok());
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto bad = LoadRepoKeyFile(path, "--repo-key-file");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("64 hex digits"), std::string_view::npos) << bad.status();
}

TEST(EncryptedRepositoryTest, RoundTripsAndRecordsOnlyTheKeyCheck) {
  TempDir dir;
  const RepoKey key = KeyOf('k');
  const std::string root = dir.path() + "/repo";
  std::string plain = Data(70000, 1);
  Sha256Digest id;
  {
    auto r = Repository::Open(root, &key);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE((*r)->encrypted());
    id = PutRaw(**r, plain);
    EXPECT_EQ(id, HmacSha256(DeriveRepoSubkeys(key, (*r)->id()).chunk_id.KeyBytes(), plain));
    EXPECT_NE(id, Sha256(plain));
  }
  nlohmann::json j = nlohmann::json::parse(ReadAll(root + "/repo.json"));
  EXPECT_EQ(j["encryption"], "aes-256-gcm");
  EXPECT_EQ(j["chunk_id"], "hmac-sha256");
  EXPECT_EQ(j["key_check"].get<std::string>().size(), 64u);
  // Neither the key nor the plain data appear in any file of the repository.
  for (const auto& [path, bytes] : Snapshot(root)) {
    EXPECT_EQ(bytes.find(key.bytes), std::string::npos) << path;
    EXPECT_EQ(bytes.find(plain.substr(1000, 64)), std::string::npos) << path;
  }
  auto again = Repository::Open(root, &key);
  ASSERT_TRUE(again.ok()) << again.status();
  ZstdCodec codec;
  std::string out;
  ASSERT_TRUE((*again)->chunks().Get(id, &codec, &out).ok());
  EXPECT_EQ(out, plain);
  // Dedup: the same data gives the same id, and the second Put writes nothing.
  auto second = (*again)->chunks().Put(id, plain.size(), StoredEncoding::kRaw, plain);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(*second);
}

TEST(EncryptedRepositoryTest, NoKeyOrWrongKeyIsRefusedAndChangesNothing) {
  TempDir dir;
  const RepoKey key = KeyOf('k');
  const RepoKey wrong = KeyOf('w');
  const std::string root = dir.path() + "/repo";
  {
    auto r = Repository::Open(root, &key);
    ASSERT_TRUE(r.ok());
    PutRaw(**r, Data(5000, 2));
  }
  const auto before = Snapshot(root);
  auto none = Repository::Open(root);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("encrypted"), std::string_view::npos) << none.status();
  EXPECT_NE(none.status().message().find("--repo-key-file"), std::string_view::npos);
  auto bad = Repository::Open(root, &wrong);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(bad.status().message().find("not this repository's key"), std::string_view::npos)
      << bad.status();
  EXPECT_EQ(Snapshot(root), before);

  // A plain repository refuses a key, unchanged as well.
  const std::string plain_root = dir.path() + "/plain";
  ASSERT_TRUE(Repository::Open(plain_root).ok());
  const auto plain_before = Snapshot(plain_root);
  EXPECT_EQ(Repository::Open(plain_root, &key).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Snapshot(plain_root), plain_before);
}

TEST(EncryptedRepositoryTest, SameDataUnderTwoKeysGetsDifferentIdsAndCiphertexts) {
  TempDir dir;
  const RepoKey k1 = KeyOf('1'), k2 = KeyOf('2');
  auto r1 = Repository::Open(dir.path() + "/a", &k1);
  auto r2 = Repository::Open(dir.path() + "/b", &k2);
  ASSERT_TRUE(r1.ok() && r2.ok());
  const std::string plain = Data(8192, 3);
  Sha256Digest a = PutRaw(**r1, plain), b = PutRaw(**r2, plain);
  EXPECT_NE(a, b);
  EXPECT_NE(a, Sha256(plain));
  EXPECT_NE(ReadAll((*r1)->chunks().PathOf(a)).substr(32),
            ReadAll((*r2)->chunks().PathOf(b)).substr(32));
}

// Flips one byte of a chunk file and recomputes both CRC-32Cs, so only the
// GCM tag can notice.
void TamperKeepingCrc(const std::string& path, size_t at) {
  std::string f = ReadAll(path);
  f[at] = static_cast<char>(f[at] ^ 0x01);
  std::string_view stored(f.data() + 32, f.size() - 32);
  uint32_t crc = Crc32c(stored.data(), stored.size());
  for (int i = 0; i < 4; ++i) f[20 + i] = static_cast<char>(crc >> (8 * i));
  const uint32_t hcrc = Crc32c(f.data(), 28);  // the header checksum covers bytes 0..27
  for (int i = 0; i < 4; ++i) f[28 + i] = static_cast<char>(hcrc >> (8 * i));
  std::ofstream(path, std::ios::binary | std::ios::trunc) << f;
}

TEST(EncryptedRepositoryTest, TamperedCiphertextFailsTheGcmTag) {
  TempDir dir;
  const RepoKey key = KeyOf('t');
  auto r = Repository::Open(dir.path() + "/repo", &key);
  ASSERT_TRUE(r.ok());
  Sha256Digest id = PutRaw(**r, Data(9000, 4));
  const std::string path = (*r)->chunks().PathOf(id);
  ASSERT_EQ(fs::file_size(path), 32u + 12u + 9000u + 16u);
  ::chmod(path.c_str(), 0644);
  TamperKeepingCrc(path, 32 + 12 + 4500);
  ZstdCodec codec;
  std::string out;
  absl::Status s = (*r)->chunks().Get(id, &codec, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("AES-256-GCM tag"), std::string_view::npos) << s;

  // A valid chunk file copied under another id fails too (the id is AAD).
  Sha256Digest other = PutRaw(**r, Data(9000, 5));
  Sha256Digest third = (*r)->chunks().id_fn()(Data(9000, 6));
  fs::copy_file((*r)->chunks().PathOf(other), (*r)->chunks().PathOf(third));
  s = (*r)->chunks().Get(third, &codec, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("AES-256-GCM tag"), std::string_view::npos) << s;
}

TEST(EncryptedRepositoryTest, ManifestAndIndexAreBoundToTheKey) {
  TempDir dir;
  const RepoKey key = KeyOf('m');
  auto r = Repository::Open(dir.path() + "/repo", &key);
  ASSERT_TRUE(r.ok());
  DeviceIndex idx;
  idx.device_size_bytes = 8192;
  idx.chunk_size_bytes = 65536;
  idx.digests.push_back(PutRaw(**r, Data(8192, 7)));
  auto sha = (*r)->WriteIndex("b1", 0, idx);
  ASSERT_TRUE(sha.ok());
  auto back = (*r)->ReadIndex("b1", 0, *sha);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->digest_algorithm, kIndexDigestHmacSha256);
  blkfleet::server::v1::Backup b;
  b.set_id("b1");
  b.set_host("h1");
  ASSERT_TRUE((*r)->WriteManifest(b).ok());
  ASSERT_TRUE((*r)->ReadManifest("b1").ok());
  // An edited manifest no longer matches manifest.mac.
  const std::string m = (*r)->ManifestPath("b1");
  std::string text = ReadAll(m);
  text.replace(text.find("\"h1\""), 4, "\"h2\"");
  std::ofstream(m, std::ios::binary | std::ios::trunc) << text;
  auto edited = (*r)->ReadManifest("b1");
  EXPECT_EQ(edited.status().code(), absl::StatusCode::kDataLoss) << edited.status();
  EXPECT_NE(edited.status().message().find("manifest.mac"), std::string_view::npos);
}

TEST(PlainRepositoryTest, KeepsTodaysBytes) {
  TempDir dir;
  const std::string root = dir.path() + "/repo";
  auto r = Repository::Open(root);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->encrypted());
  nlohmann::json j = nlohmann::json::parse(ReadAll(root + "/repo.json"));
  EXPECT_EQ(j["encryption"], "none");
  EXPECT_EQ(j["chunk_id"], "sha256");
  EXPECT_FALSE(j.contains("key_check"));
  EXPECT_FALSE(j.contains("kdf"));
  const std::string plain = Data(4096, 8);
  Sha256Digest id = PutRaw(**r, plain);
  EXPECT_EQ(id, Sha256(plain));
  const std::string file = ReadAll((*r)->chunks().PathOf(id));
  ASSERT_EQ(file.size(), 32u + plain.size());
  EXPECT_EQ(file[10], 0);  // flags: no encryption bit
  EXPECT_EQ(file.substr(32), plain);
  DeviceIndex idx;
  idx.device_size_bytes = 4096;
  idx.chunk_size_bytes = 65536;
  idx.digests.push_back(id);
  ASSERT_TRUE((*r)->WriteIndex("b1", 0, idx).ok());
  EXPECT_EQ(ReadAll((*r)->IndexPath("b1", 0))[72], 1);  // digest algorithm SHA-256
  blkfleet::server::v1::Backup b;
  b.set_id("b1");
  ASSERT_TRUE((*r)->WriteManifest(b).ok());
  EXPECT_FALSE(fs::exists((*r)->ManifestMacPath("b1")));
}

}  // namespace
}  // namespace blkfleet::repo
