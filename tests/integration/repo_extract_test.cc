// SPDX-License-Identifier: Apache-2.0
// blkfleet-restore rebuilds device images from the repository directory
// alone: the server is stopped and its catalog removed before the tool runs,
// and each image is compared byte for byte with the oracle copy the sim
// backend wrote at the snapshot instant. A flipped byte in a stored chunk
// makes the extraction fail naming the chunk, with no output file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/sha256.h"
#include "nlohmann/json.hpp"
#include "server/repository/device_index.h"
#include "server/repository/repo_key.h"
#include "tests/integration/fleet.h"

namespace blkfleet::testing {
namespace {

namespace sv = server::v1;
namespace simtest = agent::simtest::v1;

constexpr uint64_t kMiB = 1ull << 20;

std::string RestoreBin() { return BLKFLEET_RESTORE_BIN; }

class RepoExtractTest : public FleetTest {
 protected:
  void SetUp() override {
    StartFleet({"vda=32MiB", "vdb=12MiB"});
    RegisterHost({"vda", "vdb"});
  }

  sv::Backup GetBackup(const std::string& id) {
    sv::GetBackupRequest req;
    req.set_id(id);
    sv::Backup b;
    grpc::Status st = server_.stub->GetBackup(Ctx().get(), req, &b);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return b;
  }

  // Runs a full and an incremental backup and returns both, then stops the
  // server and deletes the catalog: from here on only the repository exists.
  std::vector<sv::Backup> TwoBackupsThenNoServer() {
    EXPECT_TRUE(FillDevice(*agent_.workload, "vda", 32 * kMiB, 21).ok());
    EXPECT_TRUE(FillDevice(*agent_.workload, "vdb", 12 * kMiB, 22).ok());
    std::vector<sv::Backup> out;
    auto full = RunBackupAndWait(*server_.stub, "h1", {});
    EXPECT_TRUE(full.ok() && full->state() == sv::JOB_STATE_SUCCEEDED);
    out.push_back(GetBackup(full->backup_id()));
    simtest::RandomWritesRequest req;
    req.set_device("vda");
    req.set_count(10);
    req.set_size_bytes(64 * 1024);
    req.set_seed(23);
    simtest::RandomWritesResponse resp;
    EXPECT_TRUE(agent_.workload->RandomWrites(Ctx(60).get(), req, &resp).ok());
    auto incr = RunBackupAndWait(*server_.stub, "h1", {});
    EXPECT_TRUE(incr.ok() && incr->state() == sv::JOB_STATE_SUCCEEDED);
    out.push_back(GetBackup(incr->backup_id()));

    server_.stub.reset();
    server_.process.Kill(SIGTERM);
    for (const char* f : {"catalog.db", "catalog.db-wal", "catalog.db-shm"}) {
      std::filesystem::remove(absl::StrCat(server_.dir, "/data/", f));
    }
    return out;
  }

  std::string Repo() const { return server_.dir + "/data/repo"; }
};

TEST_F(RepoExtractTest, ListsBackupsAndRebuildsEveryImageByteForByteWithoutServer) {
  std::vector<sv::Backup> backups = TwoBackupsThenNoServer();
  ASSERT_EQ(backups.size(), 2u);
  ASSERT_FALSE(HasFailure());

  CommandResult list = RunCommand({RestoreBin(), "--repo", Repo(), "list", "--json"}, false);
  ASSERT_EQ(list.exit_code, 0) << list.output;
  nlohmann::json j = nlohmann::json::parse(list.output);
  ASSERT_EQ(j.size(), 2u) << list.output;
  EXPECT_EQ(j[0]["id"], backups[0].id());
  EXPECT_EQ(j[1]["id"], backups[1].id());
  EXPECT_EQ(j[0]["host"], "h1");
  EXPECT_EQ(j[1]["devices"].size(), 2u);

  for (const sv::Backup& b : backups) {
    for (const sv::BackupDevice& d : b.devices()) {
      const std::string out = absl::StrCat(dir_, "/x-", b.id(), "-", d.device(), ".img");
      CommandResult r = RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup",
                                    b.id(), "--device", d.device(), "--output", out});
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("chunks verified"), std::string::npos) << r.output;
      EXPECT_EQ(std::filesystem::file_size(out), d.size_bytes());
      EXPECT_EQ(FileSha256(out), FileSha256(agent_.OracleImage(b.snapshot_id(), d.device())))
          << "image of " << d.device() << " of backup " << b.id();
    }
  }

  // Refuses an existing output without --overwrite, an unknown device and
  // a directory that is no repository; each exits non-zero.
  const std::string again = absl::StrCat(dir_, "/x-", backups[0].id(), "-vda.img");
  EXPECT_NE(RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup", backups[0].id(),
                        "--device", "vda", "--output", again})
                .exit_code,
            0);
  CommandResult nodev = RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup",
                                    backups[0].id(), "--device", "vdz", "--output",
                                    dir_ + "/nodev.img"});
  EXPECT_NE(nodev.exit_code, 0);
  EXPECT_NE(nodev.output.find("--device vdz"), std::string::npos) << nodev.output;
  CommandResult norepo = RunCommand({RestoreBin(), "--repo", dir_ + "/sim", "list"});
  EXPECT_NE(norepo.exit_code, 0);
  EXPECT_NE(norepo.output.find("repo.json"), std::string::npos) << norepo.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/sim/repo.json")) << "created a repository";
}

TEST_F(RepoExtractTest, CorruptChunkIsNamedAndExtractionFailsWithoutOutput) {
  std::vector<sv::Backup> backups = TwoBackupsThenNoServer();
  ASSERT_EQ(backups.size(), 2u);
  ASSERT_FALSE(HasFailure());
  const sv::Backup& b = backups[1];

  // Chunk 3 of vda per the index on disk.
  std::ifstream in(absl::StrCat(Repo(), "/backups/", b.id(), "/device-0.index"),
                   std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto index = repo::DecodeDeviceIndex(bytes);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(b.devices(0).device(), "vda");
  ASSERT_GT(index->digests.size(), 3u);
  const std::string hex = DigestToHex(index->digests[3]);
  const std::string chunk = absl::StrCat(Repo(), "/chunks/", hex.substr(0, 2), "/", hex);
  ASSERT_TRUE(std::filesystem::exists(chunk));
  {
    // Flip one byte of the stored bytes, past the 32-byte header.
    std::fstream f(chunk, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(100);
    f.write(&c, 1);
  }

  const std::string out = dir_ + "/corrupt.img";
  CommandResult r = RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup", b.id(),
                                "--device", "vda", "--output", out});
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(hex), std::string::npos) << "bad chunk not named: " << r.output;
  EXPECT_NE(r.output.find("FAILED"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("restored"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  // No temporary file is left beside the target either.
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".corrupt.img"), std::string::npos)
        << e.path();
  }

  // vdb does not touch the chunk and still extracts.
  CommandResult ok = RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup", b.id(),
                                 "--device", "vdb", "--output", dir_ + "/vdb.img"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

// An encrypted repository (--repo-key-file) end to end: backups dedup across
// a full and an incremental, verify and restore through the server, the
// server refuses a restart without the key or with another key, and
// blkfleet-restore extracts byte for byte with the key and refuses without.
class EncryptedRepoTest : public RepoExtractTest {
 protected:
  void SetUp() override {
    key_dir_ = MakeTempDir("blkfleet-key");
    ASSERT_FALSE(key_dir_.empty());
    ASSERT_TRUE(repo::GenerateRepoKeyFile(Key()).ok());
    ASSERT_TRUE(repo::GenerateRepoKeyFile(key_dir_ + "/other.key").ok());
    server_.extra_args = {"--repo-key-file", Key()};
    RepoExtractTest::SetUp();
  }
  void TearDown() override {
    RepoExtractTest::TearDown();
    RemoveTree(key_dir_);
  }
  std::string Key() const { return key_dir_ + "/repo.key"; }
  size_t ChunkFiles() const {
    size_t n = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(Repo() + "/chunks")) {
      if (e.is_regular_file()) ++n;
    }
    return n;
  }
  repo::DeviceIndex Vda(const std::string& backup_id) {
    std::ifstream in(absl::StrCat(Repo(), "/backups/", backup_id, "/device-0.index"),
                     std::ios::binary);
    auto index = repo::DecodeDeviceIndex(
        std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
    EXPECT_TRUE(index.ok()) << index.status();
    return index.ok() ? *index : repo::DeviceIndex{};
  }
  std::string key_dir_;
};

TEST_F(EncryptedRepoTest, BackupsDedupRestoreAndNeedTheKey) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 32 * kMiB, 51).ok());
  // vdb holds the first 12 MiB of vda (same seed): its chunks dedup.
  ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 12 * kMiB, 51).ok());
  auto full = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->state(), sv::JOB_STATE_SUCCEEDED) << full->error();
  const size_t after_full = ChunkFiles();
  const repo::DeviceIndex index = Vda(full->backup_id());
  EXPECT_EQ(index.digest_algorithm, repo::kIndexDigestHmacSha256);
  ASSERT_GT(index.digests.size(), 2u);
  EXPECT_EQ(after_full, index.digests.size()) << "vdb's chunks did not dedup with vda's";
  // A second backup of unchanged devices adds no chunk: the agent computes
  // the keyed ids and the known ones travel as digests only.
  auto again = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(again.ok() && again->state() == sv::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(ChunkFiles(), after_full);
  const sv::Backup b = GetBackup(again->backup_id());

  sv::VerifyBackupRequest vreq;
  vreq.set_backup_id(b.id());
  sv::Job vjob;
  ASSERT_TRUE(server_.stub->VerifyBackup(Ctx().get(), vreq, &vjob).ok());
  auto verified = WaitJob(*server_.stub, vjob.id(), 120);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->state(), sv::JOB_STATE_SUCCEEDED) << verified->error();
  const std::string oracle = FileSha256(agent_.OracleImage(b.snapshot_id(), "vda"));
  auto r = RestoreAndWait(*server_.stub, b.id(), "vda", dir_ + "/srv-vda.img");
  ASSERT_TRUE(r.ok() && r->state() == sv::JOB_STATE_SUCCEEDED) << r->error();
  EXPECT_EQ(FileSha256(dir_ + "/srv-vda.img"), oracle);

  // The key file is nowhere in the data directory.
  const std::string key_text = FileSha256(Key());
  for (const auto& e : std::filesystem::recursive_directory_iterator(server_.dir)) {
    if (e.is_regular_file()) {
      EXPECT_NE(FileSha256(e.path().string()), key_text) << e.path();
    }
  }

  // Restarts without the key and with another key fail, naming the cause.
  server_.stub.reset();
  server_.process.Kill(SIGTERM);
  for (const auto& [args, want] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{}, "--repo-key-file"},
           {{"--repo-key-file", key_dir_ + "/other.key"}, "not this repository's key"}}) {
    server_.extra_args = args;
    EXPECT_FALSE(server_.Start().ok()) << "server started with key args " << args.size();
    EXPECT_NE(server_.process.LogTail().find(want), std::string::npos)
        << server_.process.LogTail();
    server_.stub.reset();
    server_.process.Kill(SIGTERM);
  }

  // blkfleet-restore: refuses without the key, extracts with it.
  CommandResult nokey = RunCommand({RestoreBin(), "--repo", Repo(), "list"});
  EXPECT_NE(nokey.exit_code, 0);
  EXPECT_NE(nokey.output.find("--repo-key-file"), std::string::npos) << nokey.output;
  const std::string out = dir_ + "/x-vda.img";
  CommandResult x = RunCommand({RestoreBin(), "--repo", Repo(), "--repo-key-file", Key(),
                                "extract", "--backup", b.id(), "--device", "vda", "--output",
                                out});
  ASSERT_EQ(x.exit_code, 0) << x.output;
  EXPECT_EQ(FileSha256(out), oracle);

  // One flipped ciphertext byte (both CRCs recomputed) fails on the GCM tag.
  const std::string hex = DigestToHex(Vda(b.id()).digests[2]);
  const std::string chunk = absl::StrCat(Repo(), "/chunks/", hex.substr(0, 2), "/", hex);
  std::string file;
  {
    std::ifstream cf(chunk, std::ios::binary);
    file.assign((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(file.size(), 100u);
  file[90] = static_cast<char>(file[90] ^ 0x01);
  const uint32_t crc = Crc32c(std::string_view(file).substr(32));
  for (int i = 0; i < 4; ++i) file[20 + i] = static_cast<char>(crc >> (8 * i));
  const uint32_t hcrc = Crc32c(std::string_view(file).substr(0, 28));
  for (int i = 0; i < 4; ++i) file[28 + i] = static_cast<char>(hcrc >> (8 * i));
  std::filesystem::permissions(chunk, std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  std::ofstream(chunk, std::ios::binary | std::ios::trunc) << file;
  CommandResult bad = RunCommand({RestoreBin(), "--repo", Repo(), "--repo-key-file", Key(),
                                  "extract", "--backup", b.id(), "--device", "vda", "--output",
                                  dir_ + "/bad.img"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("AES-256-GCM tag"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/bad.img"));
}

// The repository on a 64 MiB tmpfs (the catalog stays on the normal disk):
// a full backup of 44 MiB fits, a second full of 32 MiB of new data does not.
class FullDiskTest : public FleetTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a size-limited tmpfs needs root";
    StartFleet({"vda=32MiB", "vdb=12MiB"});
    RegisterHost({"vda", "vdb"});
    // Move the (still empty) repository onto the tmpfs while the server is
    // stopped, then start it again on the same catalog.
    server_.stub.reset();
    server_.process.Kill(SIGTERM);
    const std::string old = server_.dir + "/data/repo-old";
    std::filesystem::rename(Repo(), old);
    std::filesystem::create_directory(Repo());
    ASSERT_EQ(::mount("tmpfs", Repo().c_str(), "tmpfs", 0, "size=64m"), 0) << strerror(errno);
    mounted_ = true;
    std::filesystem::copy(old, Repo(), std::filesystem::copy_options::recursive);
    ASSERT_TRUE(server_.Start().ok()) << server_.process.LogTail();
  }
  void TearDown() override {
    server_.stub.reset();
    server_.process.Kill(SIGTERM);
    if (mounted_) ::umount2(Repo().c_str(), MNT_DETACH);
    FleetTest::TearDown();
  }
  std::string Repo() const { return server_.dir + "/data/repo"; }
  bool mounted_ = false;
};

TEST_F(FullDiskTest, FullRepositoryFailsTheBackupClearlyAndEarlierBackupsStayRestorable) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 32 * kMiB, 31).ok());
  ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 12 * kMiB, 32).ok());
  auto first = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->state(), sv::JOB_STATE_SUCCEEDED) << first->error();

  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 32 * kMiB, 33).ok());
  auto second = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->state(), sv::JOB_STATE_FAILED);
  EXPECT_NE(second->error().find("No space left on device"), std::string::npos)
      << second->error();

  sv::ListBackupsRequest lreq;
  sv::ListBackupsResponse lresp;
  ASSERT_TRUE(server_.stub->ListBackups(Ctx().get(), lreq, &lresp).ok());
  ASSERT_EQ(lresp.backups_size(), 1) << "a failed backup became visible";
  const sv::Backup& b = lresp.backups(0);
  EXPECT_EQ(b.id(), first->backup_id());

  // The earlier backup restores byte for byte, through the server (to a file
  // off the full filesystem) and with blkfleet-restore.
  for (const sv::BackupDevice& d : b.devices()) {
    const std::string oracle = FileSha256(agent_.OracleImage(b.snapshot_id(), d.device()));
    const std::string out = absl::StrCat(dir_, "/full-", d.device(), ".img");
    auto r = RestoreAndWait(*server_.stub, b.id(), d.device(), out);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->state(), sv::JOB_STATE_SUCCEEDED) << r->error();
    EXPECT_EQ(FileSha256(out), oracle) << d.device();
    const std::string out2 = absl::StrCat(dir_, "/full-x-", d.device(), ".img");
    CommandResult x = RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup", b.id(),
                                  "--device", d.device(), "--output", out2});
    ASSERT_EQ(x.exit_code, 0) << x.output;
    EXPECT_EQ(FileSha256(out2), oracle) << d.device();
  }
}

// kill -9 at named points of a backup and of gc (BLKFLEET_CRASH_POINT, see
// server/crash_point.h), restart, and check: no partial backup is visible,
// every committed backup verifies, the next backup succeeds, and the last
// one extracts byte for byte with blkfleet-restore.
class CrashTest : public FleetTest {
 protected:
  void SetUp() override {
    StartFleet({"vda=24MiB", "vdb=8MiB"});
    RegisterHost({"vda", "vdb"});
  }

  // Restarts the server, with BLKFLEET_CRASH_POINT=`point` when not empty.
  void Restart(const std::string& point) {
    server_.stub.reset();
    server_.process.Kill(SIGTERM);
    server_.extra_args = {"--gc-grace", "0s"};
    if (point.empty()) {
      ::unsetenv("BLKFLEET_CRASH_POINT");
    } else {
      ::setenv("BLKFLEET_CRASH_POINT", point.c_str(), 1);
    }
    absl::Status st = server_.Start();
    ::unsetenv("BLKFLEET_CRASH_POINT");
    ASSERT_TRUE(st.ok()) << st;
  }

  // Waits for the server to die of the crash point.
  void ExpectKilled(const std::string& point) {
    auto rc = server_.process.Wait(absl::Seconds(60));
    EXPECT_TRUE(rc.ok()) << "server did not die at " << point;
  }

  std::vector<sv::Backup> Backups() {
    sv::ListBackupsRequest req;
    sv::ListBackupsResponse resp;
    grpc::Status st = server_.stub->ListBackups(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.backups().begin(), resp.backups().end()};
  }

  // The ids of the backups blkfleet-restore finds in the repository alone.
  std::set<std::string> RepoListedIds() {
    CommandResult l = RunCommand({RestoreBin(), "--repo", Repo(), "list", "--json"}, false);
    EXPECT_EQ(l.exit_code, 0) << l.output;
    std::set<std::string> out;
    nlohmann::json j = nlohmann::json::parse(l.output, nullptr, false);
    if (j.is_array()) {
      for (const auto& b : j) out.insert(b.value("id", ""));
    }
    return out;
  }
  std::set<std::string> CatalogIds() {
    std::set<std::string> out;
    for (const sv::Backup& b : Backups()) out.insert(b.id());
    return out;
  }

  // Every device of backup `id` extracted by blkfleet-restore from the
  // repository alone equals the agent's image of its snapshot.
  void ExpectExtractsExactly(const std::string& id) {
    sv::GetBackupRequest greq;
    greq.set_id(id);
    sv::Backup b;
    ASSERT_TRUE(server_.stub->GetBackup(Ctx().get(), greq, &b).ok());
    for (const sv::BackupDevice& d : b.devices()) {
      const std::string out = absl::StrCat(dir_, "/extract-", id, "-", d.device(), ".img");
      CommandResult x = RunCommand({RestoreBin(), "--repo", Repo(), "extract", "--backup", b.id(),
                                    "--device", d.device(), "--output", out});
      ASSERT_EQ(x.exit_code, 0) << x.output;
      EXPECT_EQ(FileSha256(out), FileSha256(agent_.OracleImage(b.snapshot_id(), d.device())));
    }
  }

  // Runs a garbage collection to its end; it must succeed.
  void CollectGarbage() {
    sv::CollectGarbageRequest req;
    sv::Job job;
    ASSERT_TRUE(server_.stub->CollectGarbage(Ctx().get(), req, &job).ok());
    auto done = WaitJob(*server_.stub, job.id(), 120);
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state(), sv::JOB_STATE_SUCCEEDED) << done->error();
  }

  void ExpectAllVerify() {
    for (const sv::Backup& b : Backups()) {
      sv::VerifyBackupRequest req;
      req.set_backup_id(b.id());
      sv::Job job;
      grpc::Status st = server_.stub->VerifyBackup(Ctx().get(), req, &job);
      ASSERT_TRUE(st.ok()) << st.error_message();
      auto done = WaitJob(*server_.stub, job.id(), 120);
      ASSERT_TRUE(done.ok()) << done.status();
      EXPECT_EQ(done->state(), sv::JOB_STATE_SUCCEEDED) << "verify of " << b.id() << ": "
                                                        << done->error();
    }
  }

  void Writes(uint64_t seed) {
    simtest::RandomWritesRequest req;
    req.set_device("vda");
    req.set_count(8);
    req.set_size_bytes(64 * 1024);
    req.set_seed(seed);
    simtest::RandomWritesResponse resp;
    EXPECT_TRUE(agent_.workload->RandomWrites(Ctx(60).get(), req, &resp).ok());
  }

  void ExpectNoSnapshotWithin(absl::Duration limit) {
    const absl::Time deadline = absl::Now() + limit;
    int held = -1;
    while (absl::Now() < deadline) {
      agent::v1::ListSnapshotsRequest req;
      agent::v1::ListSnapshotsResponse resp;
      ASSERT_TRUE(agent_.agent->ListSnapshots(Ctx().get(), req, &resp).ok());
      held = resp.snapshots_size();
      if (held == 0) return;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << held << " snapshots still held " << limit << " after the restart";
  }

  std::string Repo() const { return server_.dir + "/data/repo"; }
};

TEST_F(CrashTest, KillDuringBackupAndGcLeavesCatalogAndRepositoryConsistent) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 24 * kMiB, 41).ok());
  ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 8 * kMiB, 42).ok());
  Restart("");
  auto first = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(first.ok() && first->state() == sv::JOB_STATE_SUCCEEDED);
  size_t committed = 1;
  uint64_t seed = 100;
  for (const std::string point :
       {"backup.after_chunk_write:2", "backup.before_chunk_sync", "backup.after_index",
        "backup.before_catalog_commit"}) {
    SCOPED_TRACE(point);
    Writes(++seed);
    const std::set<std::string> before = CatalogIds();
    Restart(point);
    (void)RunBackupAndWait(*server_.stub, "h1", {}, 60);  // the server dies under it
    ExpectKilled(point);
    if (point == "backup.before_catalog_commit") {
      // The killed job's manifest is complete: until the restart the
      // repository alone shows one backup more (its chunks are all there).
      EXPECT_EQ(RepoListedIds().size(), before.size() + 1);
    }
    Restart("");
    EXPECT_EQ(Backups().size(), committed) << "a partial backup became visible";
    EXPECT_EQ(RepoListedIds(), CatalogIds())
        << "the repository alone shows a backup the catalog does not know";
    // The killed job's snapshot would live on at the agent until its lease
    // (120 s) ran out: the restarted server releases it at once.
    ExpectNoSnapshotWithin(absl::Seconds(20));
    ExpectAllVerify();
    auto next = RunBackupAndWait(*server_.stub, "h1", {});
    ASSERT_TRUE(next.ok()) << next.status();
    ASSERT_EQ(next->state(), sv::JOB_STATE_SUCCEEDED) << next->error();
    ++committed;
    EXPECT_EQ(Backups().size(), committed);
  }

  // Orphan chunks for gc: a job killed after writing 4 chunks, then the
  // device rewritten whole so that no later backup names them.
  Writes(++seed);
  Restart("backup.after_chunk_write:4");
  (void)RunBackupAndWait(*server_.stub, "h1", {}, 60);
  ExpectKilled("backup.after_chunk_write:4");
  Restart("");
  ExpectNoSnapshotWithin(absl::Seconds(20));
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 24 * kMiB, 43).ok());

  // gc over the crashed jobs' leftovers (grace 0), killed mid-sweep.
  Restart("gc.mid_sweep:2");
  {
    sv::CollectGarbageRequest req;
    sv::Job job;
    ASSERT_TRUE(server_.stub->CollectGarbage(Ctx().get(), req, &job).ok());
  }
  ExpectKilled("gc.mid_sweep:2");
  Restart("");
  EXPECT_EQ(Backups().size(), committed);
  CollectGarbage();
  ExpectAllVerify();
  Writes(++seed);
  auto last = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(last.ok() && last->state() == sv::JOB_STATE_SUCCEEDED);

  // The last backup rebuilds exactly from the repository alone.
  ExpectExtractsExactly(last->backup_id());
}

// kill -9 right after a pruned backup left the catalog (before its files
// went): while the server is down the repository still holds the files; the
// restarted server finishes the removal before serving, and the remaining
// backups verify, prune on, collect and extract byte for byte.
// Two servers on one data directory would each take the other's backups in
// progress for leftovers: the second refuses to start and names the first.
TEST_F(CrashTest, ASecondServerOnTheSameDataDirectoryIsRefused) {
  CommandResult second = RunCommand({Binaries::Server(), "--listen", "127.0.0.1:0", "--data-dir",
                                     server_.dir + "/data", "--insecure"});
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.output.find(absl::StrCat("is in use by another blkfleet-server (pid ",
                                            server_.process.pid(), ")")),
            std::string::npos)
      << second.output;
  EXPECT_TRUE(Backups().empty()) << "the first server still answers";
  Restart("");  // the lock goes with the process
  EXPECT_TRUE(Backups().empty());
}

TEST_F(CrashTest, KillBetweenPruneCatalogCommitAndFileRemovalIsFinishedAtRestart) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 24 * kMiB, 51).ok());
  ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 8 * kMiB, 52).ok());
  Restart("");
  {
    absl::Status applied = ApplyPolicies(*server_.stub, R"(
version: 1
host_groups:
  all: {hosts: [h1]}
device_sets:
  both: {devices: [vda, vdb]}
policies:
  - name: keep1
    host_group: all
    device_set: both
    schedule: {cron: "0 0 1 1 *"}
    retention: {keep_last: 1}
)");
    ASSERT_TRUE(applied.ok()) << applied;
  }
  std::vector<std::string> ids;
  for (uint64_t seed = 200; seed < 203; ++seed) {
    Writes(seed);
    auto b = RunBackupAndWait(*server_.stub, "h1", {});
    ASSERT_TRUE(b.ok() && b->state() == sv::JOB_STATE_SUCCEEDED);
    ids.push_back(b->backup_id());
  }
  auto prune = [&](bool wait) -> std::optional<sv::Job> {
    sv::PruneRequest req;
    req.set_host("h1");
    sv::Job job;
    grpc::Status st = server_.stub->Prune(Ctx().get(), req, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    if (!st.ok() || !wait) return std::nullopt;
    auto done = WaitJob(*server_.stub, job.id(), 120);
    EXPECT_TRUE(done.ok()) << done.status();
    return done.ok() ? std::optional<sv::Job>(*done) : std::nullopt;
  };

  // Retention removes ids[0] and ids[1], oldest first; the crash comes after
  // the first one left the catalog.
  Restart("prune.deleted");
  prune(false);
  ExpectKilled("prune.deleted");
  EXPECT_EQ(RepoListedIds(), (std::set<std::string>{ids[0], ids[1], ids[2]}))
      << "the files of the first pruned backup stay until the server is back";
  Restart("");
  EXPECT_EQ(RepoListedIds(), (std::set<std::string>{ids[1], ids[2]}));
  std::vector<sv::Backup> left = Backups();
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0].id(), ids[2]);
  EXPECT_EQ(left[1].id(), ids[1]);
  ExpectAllVerify();

  auto done = prune(true);
  ASSERT_TRUE(done.has_value());
  ASSERT_EQ(done->state(), sv::JOB_STATE_SUCCEEDED) << done->error();
  EXPECT_NE(done->summary().find("removed 1 of 2 backups"), std::string::npos)
      << done->summary();
  EXPECT_EQ(RepoListedIds(), std::set<std::string>{ids[2]});
  CollectGarbage();
  ExpectAllVerify();
  ExpectExtractsExactly(ids[2]);
}

}  // namespace
}  // namespace blkfleet::testing
