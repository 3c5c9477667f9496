// SPDX-License-Identifier: Apache-2.0
// The server's jobs and API, end to end inside one process: the real
// service, catalog, repository and job manager, talking gRPC over loopback to
// a fake agent.
#include <grpcpp/grpcpp.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_join.h"

#include "common/durable_file.h"
#include "server/catalog/sqlite_catalog.h"
#include "server/prune_job.h"
#include "server/scheduler.h"
#include "server/server_service.h"
#include "server/snapshot_release.h"
#include "server/verify_job.h"
#include "tests/unit/server/fake_agent.h"
#include "tests/unit/server/temp_dir.h"

namespace blkfleet::server {
namespace {

namespace fs = std::filesystem;
using blkfleet::testing::FakeAgent;
using blkfleet::testing::TempDir;

constexpr uint32_t kChunk = 64 * 1024;
constexpr size_t kDevSize = 8 * 1024 * 1024;  // 128 chunks

std::string DeviceData(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    if ((i / 4096) % 3 == 0) {
      s[i] = static_cast<char>('A' + (i / 4096) % 26);  // compressible
    } else {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      s[i] = static_cast<char>(x);
    }
  }
  return s;
}

std::string ReadFile(const std::string& path) {
  auto r = ReadWholeFile(path);
  return r.ok() ? *r : std::string("<unreadable: ") + std::string(r.status().message()) + ">";
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    agent_.Start();
    agent_.AddDevice("vda", DeviceData(kDevSize, 1), 4096);
    auto repo = repo::Repository::Open(dir_.path() + "/repo");
    ASSERT_TRUE(repo.ok()) << repo.status();
    repo_ = std::move(*repo);
    auto cat = catalog::SqliteCatalog::Open(dir_.path() + "/catalog.db");
    ASSERT_TRUE(cat.ok()) << cat.status();
    catalog_ = std::move(*cat);
    jobs_ = std::make_unique<JobManager>(catalog_.get(), Clock::Real());
    BackupOptions opt;
    opt.lease_ms = 1500;
    opt.lease_renew_interval = absl::Milliseconds(250);
    opt.retry_backoff = absl::Milliseconds(20);
    opt.max_stream_retries = 3;
    service_ = std::make_unique<ServerService>(catalog_.get(), repo_.get(), &agents_, jobs_.get(),
                                               Clock::Real(), opt, gc_grace_);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = v1::Server::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    v1::CreateHostRequest req;
    req.mutable_host()->set_name("h1");
    req.mutable_host()->set_agent_address(agent_.address());
    req.mutable_host()->add_default_devices("vda");
    v1::Host h;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->CreateHost(&ctx, req, &h).ok());
  }

  void TearDown() override {
    server_->Shutdown();
    jobs_.reset();
  }

  grpc::Status StartBackup(v1::RunBackupRequest req, v1::Job* job) {
    grpc::ClientContext ctx;
    if (req.host().empty()) req.set_host("h1");
    return stub_->RunBackup(&ctx, req, job);
  }

  // Runs a backup of h1 and waits for its end.
  v1::Job Backup(bool force_full = false) {
    v1::RunBackupRequest req;
    req.set_chunk_size_bytes(kChunk);
    req.set_force_full(force_full);
    v1::Job job;
    grpc::Status s = StartBackup(req, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return *jobs_->Wait(job.id());
  }

  grpc::Status StartRestore(const std::string& backup_id, const std::string& path, bool overwrite,
                            v1::Job* job) {
    v1::RestoreRequest req;
    req.set_backup_id(backup_id);
    req.set_file_path(path);
    req.set_overwrite(overwrite);
    grpc::ClientContext ctx;
    return stub_->Restore(&ctx, req, job);
  }

  v1::Job RestoreAndWait(const std::string& backup_id, const std::string& path) {
    v1::Job job;
    grpc::Status s = StartRestore(backup_id, path, false, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return *jobs_->Wait(job.id());
  }

  v1::Backup GetBackup(const std::string& id) {
    v1::GetBackupRequest req;
    req.set_id(id);
    v1::Backup b;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->GetBackup(&ctx, req, &b).ok());
    return b;
  }

  int BackupCount() {
    v1::ListBackupsRequest req;
    v1::ListBackupsResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->ListBackups(&ctx, req, &resp).ok());
    return resp.backups_size();
  }

  absl::Duration gc_grace_ = absl::Hours(1);
  TempDir dir_;
  FakeAgent agent_;
  std::unique_ptr<repo::Repository> repo_;
  std::unique_ptr<catalog::SqliteCatalog> catalog_;
  AgentConnector agents_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<ServerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Server::Stub> stub_;
};

TEST_F(ServerTest, FullThenIncrementalReadsOnlyChangedChunksAndBothRestore) {
  const std::string original = agent_.Data("vda");
  v1::Job full = Backup();
  ASSERT_EQ(full.state(), v1::JOB_STATE_SUCCEEDED) << full.error();
  v1::Backup b1 = GetBackup(full.backup_id());
  ASSERT_EQ(b1.devices_size(), 1);
  const auto& d1 = b1.devices(0);
  EXPECT_EQ(d1.kind(), v1::BACKUP_KIND_FULL);
  EXPECT_EQ(d1.chunks_total(), 128u);
  EXPECT_EQ(d1.chunks_read(), 128u);
  EXPECT_EQ(d1.bytes_read(), kDevSize);
  EXPECT_GT(d1.bytes_received(), 0u);
  EXPECT_EQ(full.progress().chunks_done(), 128u);
  EXPECT_EQ(agent_.live_snapshots(), 0) << "snapshot destroyed after the backup";

  // Change three blocks: two in chunk 5, one straddling chunks 100/101.
  agent_.Write("vda", 5 * kChunk + 100, std::string(10, 'x'));
  agent_.Write("vda", 5 * kChunk + 9000, std::string(10, 'y'));
  agent_.Write("vda", 101 * kChunk - 5, std::string(10, 'z'));
  const std::string changed = agent_.Data("vda");
  const uint64_t sent_before = agent_.chunks_sent_with_data();
  v1::Job incr = Backup();
  ASSERT_EQ(incr.state(), v1::JOB_STATE_SUCCEEDED) << incr.error();
  v1::Backup b2 = GetBackup(incr.backup_id());
  const auto& d2 = b2.devices(0);
  EXPECT_EQ(d2.kind(), v1::BACKUP_KIND_INCREMENTAL);
  EXPECT_EQ(d2.base_backup_id(), b1.id());
  EXPECT_EQ(d2.chunks_total(), 128u);
  EXPECT_EQ(d2.chunks_read(), 3u);
  EXPECT_EQ(d2.chunks_new(), 3u);
  EXPECT_EQ(d2.bytes_read(), 3u * kChunk);
  EXPECT_LT(d2.bytes_received(), 3u * kChunk + 1024);
  EXPECT_EQ(agent_.chunks_sent_with_data() - sent_before, 3u);
  EXPECT_GT(d2.cbt().change_number(), d1.cbt().change_number());

  v1::Job r2 = RestoreAndWait(b2.id(), dir_.path() + "/r2.img");
  ASSERT_EQ(r2.state(), v1::JOB_STATE_SUCCEEDED) << r2.error();
  EXPECT_TRUE(ReadFile(dir_.path() + "/r2.img") == changed);
  v1::Job r1 = RestoreAndWait(b1.id(), dir_.path() + "/r1.img");
  ASSERT_EQ(r1.state(), v1::JOB_STATE_SUCCEEDED) << r1.error();
  EXPECT_TRUE(ReadFile(dir_.path() + "/r1.img") == original);
}

TEST_F(ServerTest, DeviceWithAShortLastChunkRestoresExactly) {
  // 2 MiB + 1000 bytes: the last chunk and the last CBT block are partial and
  // not a multiple of any block size, so padded direct writes must be cut.
  agent_.AddDevice("vdb", DeviceData(2 * 1024 * 1024 + 1000, 5), 4096);
  v1::RunBackupRequest req;
  req.set_chunk_size_bytes(kChunk);
  req.add_devices("vdb");
  v1::Job job;
  ASSERT_TRUE(StartBackup(req, &job).ok());
  v1::Job full = *jobs_->Wait(job.id());
  ASSERT_EQ(full.state(), v1::JOB_STATE_SUCCEEDED) << full.error();
  EXPECT_EQ(GetBackup(full.backup_id()).devices(0).chunks_total(), 33u);
  agent_.Write("vdb", 2 * 1024 * 1024 + 990, std::string(10, 'e'));  // inside the last chunk
  ASSERT_TRUE(StartBackup(req, &job).ok());
  v1::Job incr = *jobs_->Wait(job.id());
  ASSERT_EQ(incr.state(), v1::JOB_STATE_SUCCEEDED) << incr.error();
  EXPECT_EQ(GetBackup(incr.backup_id()).devices(0).chunks_read(), 1u);
  v1::Job r = RestoreAndWait(incr.backup_id(), dir_.path() + "/vdb.img");
  ASSERT_EQ(r.state(), v1::JOB_STATE_SUCCEEDED) << r.error();
  EXPECT_EQ(fs::file_size(dir_.path() + "/vdb.img"), 2u * 1024 * 1024 + 1000);
  EXPECT_TRUE(ReadFile(dir_.path() + "/vdb.img") == agent_.Data("vdb"));
}

TEST_F(ServerTest, NoChangeIncrementalReadsNothing) {
  ASSERT_EQ(Backup().state(), v1::JOB_STATE_SUCCEEDED);
  v1::Job j = Backup();
  ASSERT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.error();
  auto d = GetBackup(j.backup_id()).devices(0);
  EXPECT_EQ(d.kind(), v1::BACKUP_KIND_INCREMENTAL);
  EXPECT_EQ(d.chunks_read(), 0u);
  v1::Job r = RestoreAndWait(j.backup_id(), dir_.path() + "/r.img");
  ASSERT_EQ(r.state(), v1::JOB_STATE_SUCCEEDED) << r.error();
  EXPECT_TRUE(ReadFile(dir_.path() + "/r.img") == agent_.Data("vda"));
}

TEST_F(ServerTest, NewGenerationReadsEveryChunkButSendsOnlyNewData) {
  ASSERT_EQ(Backup().state(), v1::JOB_STATE_SUCCEEDED);
  agent_.NewGeneration("vda");
  agent_.Write("vda", 7 * kChunk, std::string(100, 'q'));
  const uint64_t sent_before = agent_.chunks_sent_with_data();
  v1::Job j = Backup();
  ASSERT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.error();
  auto d = GetBackup(j.backup_id()).devices(0);
  EXPECT_EQ(d.kind(), v1::BACKUP_KIND_FULL);
  EXPECT_EQ(d.chunks_read(), 128u);
  EXPECT_EQ(d.chunks_new(), 1u);  // the base's digests were known to the agent
  EXPECT_EQ(agent_.chunks_sent_with_data() - sent_before, 1u);
}

TEST_F(ServerTest, ForcedFullReadsEveryChunk) {
  ASSERT_EQ(Backup().state(), v1::JOB_STATE_SUCCEEDED);
  v1::Job j = Backup(/*force_full=*/true);
  ASSERT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.error();
  auto d = GetBackup(j.backup_id()).devices(0);
  EXPECT_EQ(d.kind(), v1::BACKUP_KIND_FULL);
  EXPECT_EQ(d.chunks_read(), 128u);
  EXPECT_EQ(d.chunks_new(), 0u);
}

TEST_F(ServerTest, BrokenStreamResumesFromTheLastChunkReceived) {
  agent_.BreakStreams(2, 10);
  v1::Job j = Backup();
  ASSERT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.error();
  EXPECT_EQ(j.attempts(), 2u);
  EXPECT_EQ(agent_.stream_resume_points(), (std::vector<uint64_t>{0, 10, 20}));
  auto d = GetBackup(j.backup_id()).devices(0);
  EXPECT_EQ(d.chunks_read(), 128u);
  v1::Job r = RestoreAndWait(j.backup_id(), dir_.path() + "/r.img");
  ASSERT_EQ(r.state(), v1::JOB_STATE_SUCCEEDED) << r.error();
  EXPECT_TRUE(ReadFile(dir_.path() + "/r.img") == agent_.Data("vda"));
}

TEST_F(ServerTest, UnrecoverableBreakFailsTheJobAndLeavesNoBackup) {
  agent_.BreakStreams(100, 0);
  v1::Job j = Backup();
  EXPECT_EQ(j.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(j.error().find("giving up"), std::string::npos) << j.error();
  EXPECT_NE(j.error().find("host h1"), std::string::npos) << j.error();
  EXPECT_TRUE(j.backup_id().empty());
  EXPECT_EQ(BackupCount(), 0);
  EXPECT_EQ(agent_.live_snapshots(), 0) << "snapshot destroyed after a failure";
  EXPECT_FALSE(catalog_->LatestDeviceBackup("h1", "vda")->has_value());
  // The failure left no trace that hurts the next backup.
  agent_.BreakStreams(0, 0);
  v1::Job again = Backup();
  ASSERT_EQ(again.state(), v1::JOB_STATE_SUCCEEDED) << again.error();
  EXPECT_EQ(GetBackup(again.backup_id()).devices(0).kind(), v1::BACKUP_KIND_FULL);
}

TEST_F(ServerTest, LostSnapshotFailsTheJobCleanly) {
  agent_.SetChunkDelay(absl::Milliseconds(20));
  v1::RunBackupRequest req;
  req.set_chunk_size_bytes(kChunk);
  v1::Job job;
  ASSERT_TRUE(StartBackup(req, &job).ok());
  absl::SleepFor(absl::Milliseconds(400));
  agent_.DropSnapshots();
  v1::Job end = *jobs_->Wait(job.id());
  EXPECT_EQ(end.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(end.error().find("snapshot"), std::string::npos) << end.error();
  EXPECT_EQ(BackupCount(), 0);
}

TEST_F(ServerTest, ChunkNotMatchingItsDigestFailsTheJob) {
  agent_.CorruptNextChunk();
  v1::Job j = Backup();
  EXPECT_EQ(j.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(j.error().find("failed verification"), std::string::npos) << j.error();
  EXPECT_EQ(BackupCount(), 0);
}

TEST_F(ServerTest, LeaseIsRenewedWhileTheJobRuns) {
  // 128 chunks at 20 ms each outlast the 1.5 s lease several times.
  agent_.SetChunkDelay(absl::Milliseconds(20));
  v1::Job j = Backup();
  ASSERT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.error();
  EXPECT_GE(agent_.lease_renewals(), 3);
}

// A job records the snapshot it holds until it destroyed it; what a killed
// server's jobs held is destroyed by the next server's releaser, and a
// snapshot on an agent that never answers is forgotten once its lease must
// have ended.
TEST_F(ServerTest, HeldSnapshotsAreRecordedUntilDestroyedAndReleasedAfterARestart) {
  v1::Job full = Backup();
  ASSERT_EQ(full.state(), v1::JOB_STATE_SUCCEEDED) << full.error();
  auto held = catalog_->ListHeldSnapshots();
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_TRUE(held->empty()) << "the job's snapshot was destroyed, its record forgotten";

  // What a job killed mid-backup leaves: a live snapshot and its record.
  auto stub = agents_.Stub(agent_.address());
  agent::v1::CreateSnapshotRequest creq;
  creq.add_devices("vda");
  creq.set_lease_ms(60000);
  agent::v1::Snapshot snap;
  {
    grpc::ClientContext c;
    ASSERT_TRUE(stub->CreateSnapshot(&c, creq, &snap).ok());
  }
  ASSERT_EQ(agent_.live_snapshots(), 1);
  ASSERT_TRUE(catalog_->RecordHeldSnapshot({snap.id(), "7", "h1", agent_.address(), 60000}).ok());
  ASSERT_TRUE(
      catalog_->RecordHeldSnapshot({"00000000-0000-4000-8000-000000000001", "8", "gone",
                                    "127.0.0.1:1", /*lease_ms=*/400})
          .ok());
  held = catalog_->ListHeldSnapshots();
  ASSERT_TRUE(held.ok() && held->size() == 2u);

  const absl::Time t0 = absl::Now();
  {
    SnapshotReleaser releaser(catalog_.get(), &agents_, *held, absl::Milliseconds(50));
    releaser.WaitDone();
  }
  EXPECT_EQ(agent_.live_snapshots(), 0) << "released on the agent that answers";
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(400))
      << "the unreachable agent's snapshot was retried until its lease ended";
  held = catalog_->ListHeldSnapshots();
  ASSERT_TRUE(held.ok());
  EXPECT_TRUE(held->empty());
}

TEST_F(ServerTest, CancelEndsTheJobCancelledWithNothingVisible) {
  agent_.SetChunkDelay(absl::Milliseconds(30));
  v1::RunBackupRequest req;
  req.set_chunk_size_bytes(kChunk);
  v1::Job job;
  ASSERT_TRUE(StartBackup(req, &job).ok());
  // A second backup of the same host is refused while the first runs.
  v1::Job other;
  EXPECT_EQ(StartBackup(req, &other).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  absl::SleepFor(absl::Milliseconds(300));
  v1::CancelJobRequest creq;
  creq.set_id(job.id());
  v1::Job cancelled;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->CancelJob(&ctx, creq, &cancelled).ok());
  v1::Job end = *jobs_->Wait(job.id());
  EXPECT_EQ(end.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(BackupCount(), 0);
  EXPECT_EQ(agent_.live_snapshots(), 0);
  grpc::ClientContext ctx2;
  EXPECT_EQ(stub_->CancelJob(&ctx2, creq, &cancelled).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServerTest, WatchJobStreamsProgressUntilTheEnd) {
  agent_.SetChunkDelay(absl::Milliseconds(5));
  v1::RunBackupRequest req;
  req.set_chunk_size_bytes(kChunk);
  v1::Job job;
  ASSERT_TRUE(StartBackup(req, &job).ok());
  v1::WatchJobRequest wreq;
  wreq.set_id(job.id());
  grpc::ClientContext ctx;
  auto reader = stub_->WatchJob(&ctx, wreq);
  v1::Job j;
  std::vector<v1::Job> seen;
  while (reader->Read(&j)) seen.push_back(j);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.back().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(seen.back().progress().chunks_done(), 128u);
  EXPECT_EQ(seen.back().progress().chunks_total(), 128u);
  EXPECT_FALSE(seen.back().backup_id().empty());
  // GetJob after the end answers from the catalog with the same outcome.
  v1::GetJobRequest greq;
  greq.set_id(job.id());
  v1::Job got;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub_->GetJob(&ctx2, greq, &got).ok());
  EXPECT_EQ(got.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(got.backup_id(), seen.back().backup_id());
}

TEST_F(ServerTest, RestoreOfACorruptChunkFailsLoudlyAndWritesNothing) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED);
  auto dev = GetBackup(b.backup_id()).devices(0);
  auto index = repo_->ReadIndex(b.backup_id(), 0, *DigestFromBytes(dev.index_sha256()));
  ASSERT_TRUE(index.ok());
  const std::string chunk_path = repo_->chunks().PathOf(index->digests[40]);
  {
    std::fstream f(chunk_path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  const std::string target = dir_.path() + "/out.img";
  v1::Job r = RestoreAndWait(b.backup_id(), target);
  EXPECT_EQ(r.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(r.error().find("corrupt"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find(DigestToHex(index->digests[40])), std::string::npos) << r.error();
  EXPECT_FALSE(fs::exists(target));
  for (const auto& e : fs::directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().filename().string().find(".out.img"), std::string::npos) << e.path();
  }
  // A missing chunk too.
  fs::remove(chunk_path);
  r = RestoreAndWait(b.backup_id(), target);
  EXPECT_EQ(r.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(r.error().find("missing"), std::string::npos) << r.error();
}

TEST_F(ServerTest, RestoreRequestValidation) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED);
  v1::Job j;
  const std::string existing = dir_.path() + "/exists.img";
  ASSERT_TRUE(WriteFileDurably(existing, "keep me").ok());
  grpc::Status s = StartRestore(b.backup_id(), existing, false, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReadFile(existing), "keep me");
  s = StartRestore(b.backup_id(), existing, true, &j);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(jobs_->Wait(j.id())->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(ReadFile(existing) == agent_.Data("vda"));

  EXPECT_EQ(StartRestore(b.backup_id(), "relative.img", false, &j).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(StartRestore(b.backup_id(), "/no/such/dir/x.img", false, &j).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(StartRestore("999", dir_.path() + "/y.img", false, &j).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(StartRestore("x1", dir_.path() + "/y.img", false, &j).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::RestoreRequest req;
  req.set_backup_id(b.backup_id());
  req.set_device("vdz");
  req.set_file_path(dir_.path() + "/y.img");
  grpc::ClientContext c1;
  s = stub_->Restore(&c1, req, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("vdz"), std::string::npos);
  req.clear_file_path();
  req.set_device("");
  req.mutable_host_device()->set_host("no-such-host");
  req.mutable_host_device()->set_device("vda");
  grpc::ClientContext c2;
  s = stub_->Restore(&c2, req, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  req.mutable_host_device()->set_device("");
  grpc::ClientContext c2b;
  s = stub_->Restore(&c2b, req, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("host_device.device"), std::string::npos) << s.error_message();
  req.clear_host_device();
  grpc::ClientContext c3;
  EXPECT_EQ(stub_->Restore(&c3, req, &j).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, HostAndBackupRequestValidation) {
  auto create = [&](const std::string& name, const std::string& addr) {
    v1::CreateHostRequest req;
    req.mutable_host()->set_name(name);
    req.mutable_host()->set_agent_address(addr);
    v1::Host h;
    grpc::ClientContext ctx;
    return stub_->CreateHost(&ctx, req, &h);
  };
  grpc::Status s = create("", "127.0.0.1:1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("host.name"), std::string::npos) << s.error_message();
  s = create("bad name!", "127.0.0.1:1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = create("h2", "no-port");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("host.agent_address"), std::string::npos);
  EXPECT_EQ(create("h2", "10.0.0.1:70000").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(create("h1", "127.0.0.1:1").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_TRUE(create("h2", "[::1]:7481").ok());

  v1::GetHostRequest greq;
  greq.set_name("nope");
  v1::Host h;
  grpc::ClientContext g1;
  EXPECT_EQ(stub_->GetHost(&g1, greq, &h).error_code(), grpc::StatusCode::NOT_FOUND);
  greq.set_name("h1");
  grpc::ClientContext g2;
  ASSERT_TRUE(stub_->GetHost(&g2, greq, &h).ok());
  EXPECT_EQ(h.agent_version(), "0.0.0-fake");  // the agent answered

  v1::ListHostsRequest lreq;
  lreq.set_page_size(1);
  v1::ListHostsResponse lresp;
  grpc::ClientContext l1;
  ASSERT_TRUE(stub_->ListHosts(&l1, lreq, &lresp).ok());
  ASSERT_EQ(lresp.hosts_size(), 1);
  EXPECT_FALSE(lresp.next_page_token().empty());
  lreq.set_page_token(lresp.next_page_token());
  grpc::ClientContext l2;
  ASSERT_TRUE(stub_->ListHosts(&l2, lreq, &lresp).ok());
  EXPECT_EQ(lresp.hosts(0).name(), "h2");
  lreq.set_page_size(-1);
  grpc::ClientContext l3;
  EXPECT_EQ(stub_->ListHosts(&l3, lreq, &lresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  lreq.set_page_size(0);
  lreq.set_page_token("garbage");
  grpc::ClientContext l4;
  EXPECT_EQ(stub_->ListHosts(&l4, lreq, &lresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::Job j;
  v1::RunBackupRequest rb;
  rb.set_host("nope");
  EXPECT_EQ(StartBackup(rb, &j).error_code(), grpc::StatusCode::NOT_FOUND);
  rb.set_host("h1");
  rb.add_devices("vda");
  rb.add_devices("vda");
  s = StartBackup(rb, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("twice"), std::string::npos);
  rb.clear_devices();
  rb.set_chunk_size_bytes(12345);
  s = StartBackup(rb, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("chunk_size_bytes"), std::string::npos);
  rb.set_chunk_size_bytes(0);
  rb.set_host("h2");  // no default devices
  s = StartBackup(rb, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("devices"), std::string::npos);

  v1::GetJobRequest jreq;
  jreq.set_id("abc");
  grpc::ClientContext j1;
  s = stub_->GetJob(&j1, jreq, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("id"), std::string::npos);
  jreq.set_id("999");
  grpc::ClientContext j2;
  EXPECT_EQ(stub_->GetJob(&j2, jreq, &j).error_code(), grpc::StatusCode::NOT_FOUND);

  v1::DeleteHostRequest dreq;
  dreq.set_name("h2");
  v1::DeleteHostResponse dresp;
  grpc::ClientContext d1;
  EXPECT_TRUE(stub_->DeleteHost(&d1, dreq, &dresp).ok());
  grpc::ClientContext d2;
  EXPECT_EQ(stub_->DeleteHost(&d2, dreq, &dresp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, PolicyCallsWithoutASchedulerAreRefusedByName) {
  auto expect = [](const grpc::Status& s, const std::string& feature) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(s.error_message().find(feature), std::string::npos) << s.error_message();
  };
  v1::Job j;
  v1::Backup b;
  {
    // Prune is implemented but needs the policies of a scheduler.
    grpc::ClientContext c;
    grpc::Status s = stub_->Prune(&c, v1::PruneRequest(), &j);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(s.error_message().find("no policies applied"), std::string::npos)
        << s.error_message();
  }
  {
    // Protection is implemented: an unknown backup is NOT_FOUND, no id is
    // INVALID_ARGUMENT.
    grpc::ClientContext c1, c2;
    v1::ProtectBackupRequest req;
    EXPECT_EQ(stub_->ProtectBackup(&c1, req, &b).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    req.set_id("999");
    req.set_protected_(true);
    EXPECT_EQ(stub_->ProtectBackup(&c2, req, &b).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext c;
    v1::ListPoliciesResponse r;
    expect(stub_->ListPolicies(&c, v1::ListPoliciesRequest(), &r), "policies");
  }
  {
    grpc::ClientContext c;
    v1::ApplyPoliciesResponse r;
    expect(stub_->ApplyPolicies(&c, v1::ApplyPoliciesRequest(), &r), "policies");
  }
}

// --- Verify and garbage collection ---

class MaintenanceTest : public ServerTest {
 protected:
  v1::Job StartAndWait(const std::function<grpc::Status(grpc::ClientContext*, v1::Job*)>& call) {
    v1::Job job;
    grpc::ClientContext ctx;
    grpc::Status s = call(&ctx, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) return job;
    return *jobs_->Wait(job.id());
  }
  v1::Job Verify(const std::string& id) {
    return StartAndWait([&](grpc::ClientContext* c, v1::Job* j) {
      v1::VerifyBackupRequest req;
      req.set_backup_id(id);
      return stub_->VerifyBackup(c, req, j);
    });
  }
  v1::Job Gc(bool dry_run) {
    return StartAndWait([&](grpc::ClientContext* c, v1::Job* j) {
      v1::CollectGarbageRequest req;
      req.set_dry_run(dry_run);
      return stub_->CollectGarbage(c, req, j);
    });
  }
  // The job as the catalog keeps it, once its final state is written there
  // (shortly after the live job ended).
  v1::Job StoredOnceEnded(const std::string& id) {
    absl::StatusOr<v1::Job> stored;
    for (int i = 0; i < 100; ++i) {
      stored = catalog_->GetJob(id);
      EXPECT_TRUE(stored.ok()) << stored.status();
      if (!stored.ok()) return {};
      const v1::JobState st = stored->state();
      if (st == v1::JOB_STATE_SUCCEEDED || st == v1::JOB_STATE_FAILED ||
          st == v1::JOB_STATE_CANCELLED) {
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return *stored;
  }
  repo::DeviceIndex IndexOf(const std::string& backup_id) {
    auto dev = GetBackup(backup_id).devices(0);
    auto index = repo_->ReadIndex(backup_id, 0, *DigestFromBytes(dev.index_sha256()));
    EXPECT_TRUE(index.ok()) << index.status();
    return index.ok() ? *index : repo::DeviceIndex{};
  }
  static void SetAge(const std::string& path, absl::Duration age) {
    const int64_t t = absl::ToUnixSeconds(absl::Now() - age);
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, 0), 0) << path;
  }
  void AgeAllChunkFiles(absl::Duration age) {
    for (const auto& e : fs::recursive_directory_iterator(repo_->root() + "/chunks")) {
      if (e.is_regular_file()) SetAge(e.path().string(), age);
    }
  }
  size_t ChunkFileCount() {
    size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(repo_->root() + "/chunks")) {
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') ++n;
    }
    return n;
  }
  // Stores a chunk no backup uses; returns its path.
  std::string PutGarbage(uint32_t seed) {
    std::string data = DeviceData(kChunk, seed);
    Sha256Digest d = Sha256(data);
    EXPECT_TRUE(repo_->chunks().Put(d, data.size(), repo::StoredEncoding::kRaw, data).ok());
    return repo_->chunks().PathOf(d);
  }
};

TEST_F(MaintenanceTest, VerifyOfAnIntactBackupSucceedsAndCountsEveryChunk) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
  const size_t distinct = [&] {
    auto idx = IndexOf(b.backup_id());
    std::set<Sha256Digest> s(idx.digests.begin(), idx.digests.end());
    return s.size();
  }();
  v1::Job v = Verify(b.backup_id());
  EXPECT_EQ(v.state(), v1::JOB_STATE_SUCCEEDED) << v.error();
  EXPECT_EQ(v.kind(), v1::JOB_KIND_VERIFY);
  EXPECT_EQ(v.backup_id(), b.backup_id());
  EXPECT_EQ(v.progress().chunks_done(), distinct);
  EXPECT_EQ(v.progress().bytes_done(), v.progress().bytes_total());
  EXPECT_NE(v.summary().find(absl::StrCat("checked ", distinct, " distinct chunks")),
            std::string::npos)
      << v.summary();
  EXPECT_NE(v.summary().find("0 bad"), std::string::npos) << v.summary();
  // The summary is kept in the catalog once the job's final state is.
  const v1::Job stored = StoredOnceEnded(v.id());
  EXPECT_EQ(stored.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(stored.summary(), v.summary());
}

TEST_F(MaintenanceTest, VerifyNamesAFlippedChunkItsPlaceAndTheOtherBackupsUsingIt) {
  v1::Job b1 = Backup();
  ASSERT_EQ(b1.state(), v1::JOB_STATE_SUCCEEDED) << b1.error();
  v1::Job b2 = Backup(/*force_full=*/true);  // same data: same chunks
  ASSERT_EQ(b2.state(), v1::JOB_STATE_SUCCEEDED) << b2.error();
  const Sha256Digest bad = IndexOf(b1.backup_id()).digests[40];
  {
    std::fstream f(repo_->chunks().PathOf(bad), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(200);
    char c = static_cast<char>(f.get());
    f.seekp(200);
    f.put(static_cast<char>(c ^ 0x01));
  }
  v1::Job v = Verify(b1.backup_id());
  EXPECT_EQ(v.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(v.error().find(DigestToHex(bad)), std::string::npos) << v.error();
  EXPECT_NE(v.error().find("vda chunks 40)"), std::string::npos) << v.error();
  EXPECT_NE(v.error().find("1 bad chunks of"), std::string::npos) << v.error();
  EXPECT_NE(v.error().find(absl::StrCat("also used by backups ", b2.backup_id())),
            std::string::npos)
      << v.error();
  EXPECT_NE(v.summary().find("1 bad"), std::string::npos) << v.summary();
  // A restore touching the chunk fails loudly too.
  v1::Job r = RestoreAndWait(b2.backup_id(), dir_.path() + "/r.img");
  EXPECT_EQ(r.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(r.error().find(DigestToHex(bad)), std::string::npos) << r.error();
  EXPECT_FALSE(fs::exists(dir_.path() + "/r.img"));
}

TEST_F(MaintenanceTest, VerifyReportsAMissingChunkAndATamperedManifest) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
  const Sha256Digest gone = IndexOf(b.backup_id()).digests[7];
  fs::remove(repo_->chunks().PathOf(gone));
  {
    std::ofstream f(repo_->ManifestPath(b.backup_id()), std::ios::app);
    f << " ";
  }
  v1::Job v = Verify(b.backup_id());
  EXPECT_EQ(v.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(v.error().find("manifest does not match its catalog digest"), std::string::npos)
      << v.error();
  EXPECT_NE(v.error().find(DigestToHex(gone)), std::string::npos) << v.error();
  EXPECT_NE(v.error().find("missing"), std::string::npos) << v.error();
}

TEST_F(MaintenanceTest, VerifyReportsATamperedIndex) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
  {
    std::fstream f(repo_->IndexPath(b.backup_id(), 0),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(90);
    f.put('\x42');
  }
  v1::Job v = Verify(b.backup_id());
  EXPECT_EQ(v.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(v.error().find("does not match its catalog digest"), std::string::npos) << v.error();
}

TEST_F(MaintenanceTest, VerifyRequestValidation) {
  v1::Job j;
  v1::VerifyBackupRequest req;
  {
    grpc::ClientContext c;
    EXPECT_EQ(stub_->VerifyBackup(&c, req, &j).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  req.set_backup_id("12x");
  {
    grpc::ClientContext c;
    EXPECT_EQ(stub_->VerifyBackup(&c, req, &j).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  req.set_backup_id("999");
  {
    grpc::ClientContext c;
    EXPECT_EQ(stub_->VerifyBackup(&c, req, &j).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(MaintenanceTest, GcRemovesOnlyOldUnreferencedFilesAndDryRunRemovesNothing) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
  const std::string old1 = PutGarbage(101);
  const std::string old2 = PutGarbage(102);
  AgeAllChunkFiles(absl::Hours(2));  // the backup's chunks too: referenced, kept
  const std::string young = PutGarbage(103);
  const std::string stale_tmp = repo_->root() + "/chunks/00/.tmp-stale";
  const std::string fresh_tmp = repo_->root() + "/chunks/01/.tmp-fresh";
  ASSERT_TRUE(WriteFileDurably(stale_tmp, "x").ok());
  ASSERT_TRUE(WriteFileDurably(fresh_tmp, "y").ok());
  SetAge(stale_tmp, absl::Hours(2));
  const size_t before = ChunkFileCount();

  v1::Job dry = Gc(/*dry_run=*/true);
  ASSERT_EQ(dry.state(), v1::JOB_STATE_SUCCEEDED) << dry.error();
  EXPECT_EQ(dry.kind(), v1::JOB_KIND_GC);
  EXPECT_NE(dry.summary().find("would remove 2 chunks"), std::string::npos) << dry.summary();
  EXPECT_EQ(ChunkFileCount(), before);
  EXPECT_TRUE(fs::exists(old1));
  EXPECT_TRUE(fs::exists(stale_tmp));

  v1::Job gc = Gc(/*dry_run=*/false);
  ASSERT_EQ(gc.state(), v1::JOB_STATE_SUCCEEDED) << gc.error();
  EXPECT_NE(gc.summary().find("removed 2 chunks"), std::string::npos) << gc.summary();
  EXPECT_NE(gc.summary().find(", 1 temporary files"), std::string::npos) << gc.summary();
  EXPECT_NE(gc.summary().find("1 unreferenced but younger"), std::string::npos) << gc.summary();
  EXPECT_EQ(gc.progress().chunks_done(), 2u);
  EXPECT_FALSE(fs::exists(old1));
  EXPECT_FALSE(fs::exists(old2));
  EXPECT_FALSE(fs::exists(stale_tmp));
  EXPECT_TRUE(fs::exists(young));
  EXPECT_TRUE(fs::exists(fresh_tmp));
  EXPECT_EQ(ChunkFileCount(), before - 2);
  // The backup is whole.
  v1::Job v = Verify(b.backup_id());
  EXPECT_EQ(v.state(), v1::JOB_STATE_SUCCEEDED) << v.error();
}

// A backup job killed between writing its files and the catalog commit
// leaves a directory that looks like a backup to the repository alone
// (blkfleet-restore) while gc takes its chunks: gc removes such directories
// first, once they are as old as a stale temporary file.
TEST_F(MaintenanceTest, GcRemovesTheFilesOfBackupsTheCatalogDoesNotKnow) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
  const std::string committed = repo_->BackupDir(b.backup_id());
  const std::string old_orphan = repo_->BackupDir("77");
  const std::string young_orphan = repo_->BackupDir("78");
  for (const std::string& dir : {old_orphan, young_orphan}) {
    fs::copy(committed, dir, fs::copy_options::recursive);
  }
  SetAge(old_orphan, absl::Hours(2));
  SetAge(committed, absl::Hours(2));

  v1::Job dry = Gc(/*dry_run=*/true);
  ASSERT_EQ(dry.state(), v1::JOB_STATE_SUCCEEDED) << dry.error();
  EXPECT_NE(dry.summary().find("the files of 1 failed backups"), std::string::npos)
      << dry.summary();
  EXPECT_TRUE(fs::exists(old_orphan + "/manifest.json"));

  v1::Job gc = Gc(/*dry_run=*/false);
  ASSERT_EQ(gc.state(), v1::JOB_STATE_SUCCEEDED) << gc.error();
  EXPECT_NE(gc.summary().find("the files of 1 failed backups"), std::string::npos)
      << gc.summary();
  EXPECT_FALSE(fs::exists(old_orphan));
  EXPECT_TRUE(fs::exists(young_orphan)) << "as young as a backup committing now";
  EXPECT_TRUE(fs::exists(committed + "/manifest.json"));
  auto dirs = repo_->ListBackupDirs();
  ASSERT_TRUE(dirs.ok()) << dirs.status();
  std::vector<std::string> ids;
  for (const auto& d : *dirs) ids.push_back(d.id);
  EXPECT_EQ(ids, (std::vector<std::string>{b.backup_id(), "78"}));
  v1::Job v = Verify(b.backup_id());
  EXPECT_EQ(v.state(), v1::JOB_STATE_SUCCEEDED) << v.error();

  // At server start no backup commits: every unknown directory goes.
  auto removed = RemoveOrphanBackups(catalog_.get(), repo_.get(), absl::InfiniteFuture(), false);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, std::vector<std::string>{"78"});
  EXPECT_FALSE(fs::exists(young_orphan));
  EXPECT_TRUE(fs::exists(committed + "/manifest.json"));
}

TEST_F(MaintenanceTest, GcWithAnUnreadableIndexRemovesNothing) {
  v1::Job b = Backup();
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
  const std::string garbage = PutGarbage(104);
  AgeAllChunkFiles(absl::Hours(2));
  fs::remove(repo_->IndexPath(b.backup_id(), 0));
  v1::Job gc = Gc(false);
  EXPECT_EQ(gc.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(gc.error().find("nothing was removed"), std::string::npos) << gc.error();
  EXPECT_TRUE(fs::exists(garbage));
}

// No grace period: only the pins of running backups protect their chunks.
class GcNoGraceTest : public MaintenanceTest {
 protected:
  GcNoGraceTest() { gc_grace_ = absl::ZeroDuration(); }
};

TEST_F(GcNoGraceTest, GcBesideRunningBackupsNeverRemovesAChunkTheyNeed) {
  v1::Job b1 = Backup();
  ASSERT_EQ(b1.state(), v1::JOB_STATE_SUCCEEDED) << b1.error();
  // Change a third of the chunks, then run an incremental slowly while
  // collections run back to back; the full backup is forced once too, so
  // both the base's reused chunks and fresh ones are in play.
  for (int i = 0; i < 128; i += 3) agent_.Write("vda", i * kChunk + 10, std::string(20, 'q'));
  const std::string changed = agent_.Data("vda");
  agent_.SetChunkDelay(absl::Milliseconds(15));
  uint64_t pinned_seen = 0;
  for (bool full : {false, true}) {
    v1::RunBackupRequest req;
    req.set_chunk_size_bytes(kChunk);
    req.set_force_full(full);
    v1::Job job;
    ASSERT_TRUE(StartBackup(req, &job).ok());
    int gcs = 0;
    while (true) {
      auto live = jobs_->Get(job.id());
      ASSERT_TRUE(live.ok());
      if (live->state() != v1::JOB_STATE_RUNNING && live->state() != v1::JOB_STATE_PENDING) break;
      v1::Job gc = Gc(false);
      ASSERT_EQ(gc.state(), v1::JOB_STATE_SUCCEEDED) << gc.error();
      const auto& s = gc.summary();
      const std::string key = " unreferenced but younger than the grace period, ";
      const size_t at = s.find(key);
      ASSERT_NE(at, std::string::npos) << s;
      pinned_seen += std::stoull(s.substr(at + key.size()));
      ++gcs;
    }
    v1::Job done = *jobs_->Wait(job.id());
    ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
    EXPECT_GT(gcs, 0);
    v1::Job gc = Gc(false);  // after the commit: everything is referenced
    ASSERT_EQ(gc.state(), v1::JOB_STATE_SUCCEEDED) << gc.error();
    v1::Job v = Verify(done.backup_id());
    EXPECT_EQ(v.state(), v1::JOB_STATE_SUCCEEDED) << v.error();
    v1::Job r = RestoreAndWait(done.backup_id(), dir_.path() + (full ? "/f.img" : "/i.img"));
    ASSERT_EQ(r.state(), v1::JOB_STATE_SUCCEEDED) << r.error();
    EXPECT_TRUE(ReadFile(dir_.path() + (full ? "/f.img" : "/i.img")) == changed);
  }
  // The collections did meet chunks of uncommitted backups and kept them.
  EXPECT_GT(pinned_seen, 0u);
  // The first backup's replaced chunks are garbage now and went away.
  v1::Job v1job = Verify(b1.backup_id());
  EXPECT_EQ(v1job.state(), v1::JOB_STATE_SUCCEEDED) << v1job.error();
}

// --- Prune ---

class SettableClock final : public Clock {
 public:
  absl::Time Now() const override {
    absl::MutexLock l(&mu_);
    return now_;
  }
  void Set(absl::Time t) {
    absl::MutexLock l(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
};

// h1 (device vda) under a policy keeping the 2 newest backups; the scheduler
// is not started: tests tick it by hand on its own clock.
class PruneTest : public MaintenanceTest {
 protected:
  void SetUp() override {
    MaintenanceTest::SetUp();
    scheduler_ = std::make_unique<Scheduler>(
        catalog_.get(), &sched_clock_,
        [this](const std::string& host, const std::vector<std::string>& devices) {
          v1::RunBackupRequest req;
          req.set_host(host);
          req.set_chunk_size_bytes(kChunk);
          for (const auto& d : devices) req.add_devices(d);
          return service_->StartBackup(req);
        },
        [this](const std::string& id) { return jobs_->Get(id); });
    service_->SetScheduler(scheduler_.get());
    ApplyPolicy(2, false);
  }
  void ApplyPolicy(int keep_last, bool prune_after_backup) {
    auto set = scheduler_->Apply(absl::StrCat(R"(
version: 1
host_groups:
  g: {hosts: [h1]}
device_sets:
  d: {devices: [vda]}
policies:
  - name: p
    host_group: g
    device_set: d
    schedule: {cron: "0 * * * *"}
    retention: {keep_last: )", keep_last, R"(}
    prune_after_backup: )", prune_after_backup ? "true" : "false", "\n"),
                                 false);
    ASSERT_TRUE(set.ok()) << set.status();
  }
  grpc::Status StartPrune(const std::string& host, bool dry_run, v1::Job* job) {
    v1::PruneRequest req;
    req.set_host(host);
    req.set_dry_run(dry_run);
    grpc::ClientContext ctx;
    return stub_->Prune(&ctx, req, job);
  }
  v1::Job Prune(const std::string& host, bool dry_run) {
    v1::Job job;
    grpc::Status s = StartPrune(host, dry_run, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return s.ok() ? *jobs_->Wait(job.id()) : job;
  }
  // A backup of h1 after writing version `k` of chunk 0, which no other
  // backup holds; remembers the image it holds.
  std::string BackupAfterChanging(int k) {
    agent_.Write("vda", 0, std::string(64, static_cast<char>('a' + k)));
    const std::string image = agent_.Data("vda");
    v1::Job b = Backup();
    EXPECT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.error();
    images_[b.backup_id()] = image;
    return b.backup_id();
  }
  // "id: keep reason, reason" / "id: remove[d][ (skipped: why)]".
  static std::vector<std::string> Render(const v1::PruneResult& r) {
    std::vector<std::string> out;
    for (const auto& d : r.decisions()) {
      std::string line = d.backup_id() + ": ";
      if (d.keep()) {
        line += "keep " + absl::StrJoin(d.reasons(), ", ");
      } else {
        line += d.removed() ? "removed" : "remove";
        if (!d.skipped().empty()) line += " (skipped: " + d.skipped() + ")";
      }
      out.push_back(line);
    }
    return out;
  }
  bool InCatalog(const std::string& id) { return catalog_->GetBackup(id).ok(); }
  bool HasFiles(const std::string& id) { return fs::exists(repo_->BackupDir(id)); }
  void ExpectRestoresExactly(const std::string& id) {
    const std::string path = absl::StrCat(dir_.path(), "/restored-", id, ".img");
    v1::Job r = RestoreAndWait(id, path);
    ASSERT_EQ(r.state(), v1::JOB_STATE_SUCCEEDED) << r.error();
    EXPECT_TRUE(ReadFile(path) == images_.at(id)) << "backup " << id << " restores other bytes";
  }

  SettableClock sched_clock_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<std::string, std::string> images_;
};

TEST_F(PruneTest, RequestValidationChangesNothing) {
  const std::string b = BackupAfterChanging(1);
  v1::Host h2;
  h2.set_name("h2");
  h2.set_agent_address(agent_.address());
  ASSERT_TRUE(catalog_->CreateHost(h2).ok());
  v1::Job j;
  grpc::Status s = StartPrune("bad host!", false, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("host"), std::string::npos) << s.error_message();
  s = StartPrune("nope", false, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = StartPrune("h2", false, &j);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("h2 is in no policy's host group"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(InCatalog(b));
  EXPECT_EQ(BackupCount(), 1);
}

TEST_F(PruneTest, DryRunListsTheDecisionsAndChangesNothing) {
  const std::string b1 = BackupAfterChanging(1), b2 = BackupAfterChanging(2),
                    b3 = BackupAfterChanging(3), b4 = BackupAfterChanging(4);
  v1::ProtectBackupRequest pr;
  pr.set_id(b2);
  pr.set_protected_(true);
  v1::Backup pb;
  grpc::ClientContext pc;
  ASSERT_TRUE(stub_->ProtectBackup(&pc, pr, &pb).ok());

  v1::Job dry = Prune("h1", /*dry_run=*/true);
  ASSERT_EQ(dry.state(), v1::JOB_STATE_SUCCEEDED) << dry.error();
  EXPECT_EQ(dry.kind(), v1::JOB_KIND_PRUNE);
  EXPECT_EQ(dry.host(), "h1");
  EXPECT_TRUE(dry.prune_result().dry_run());
  EXPECT_EQ(absl::StrJoin(Render(dry.prune_result()), "\n"),
            absl::StrJoin({b4 + ": keep last 1", b3 + ": keep last 2", b2 + ": keep protected",
                           b1 + ": remove"},
                          "\n"));
  EXPECT_NE(dry.summary().find("would remove 1 of 4 backups"), std::string::npos)
      << dry.summary();
  EXPECT_EQ(BackupCount(), 4);
  EXPECT_TRUE(InCatalog(b1));
  EXPECT_TRUE(HasFiles(b1));
  auto pending = catalog_->ListBackupRemovals();
  ASSERT_TRUE(pending.ok());
  EXPECT_TRUE(pending->empty());
}

TEST_F(PruneTest, RemovesExactlyWhatRetentionLetsGoAndTheRestRestoresAfterGc) {
  const std::string b1 = BackupAfterChanging(1), b2 = BackupAfterChanging(2),
                    b3 = BackupAfterChanging(3), b4 = BackupAfterChanging(4),
                    b5 = BackupAfterChanging(5);
  ASSERT_TRUE(catalog_->SetBackupProtected(b1, true).ok());
  v1::Job p = Prune("", /*dry_run=*/false);  // every host with a policy
  ASSERT_EQ(p.state(), v1::JOB_STATE_SUCCEEDED) << p.error();
  EXPECT_EQ(absl::StrJoin(Render(p.prune_result()), "\n"),
            absl::StrJoin({b5 + ": keep last 1", b4 + ": keep last 2", b3 + ": removed",
                           b2 + ": removed", b1 + ": keep protected"},
                          "\n"));
  EXPECT_EQ(p.progress().chunks_done(), 2u);
  EXPECT_NE(p.summary().find("removed 2 of 5 backups of 1 hosts"), std::string::npos)
      << p.summary();
  for (const auto& id : {b2, b3}) {
    EXPECT_FALSE(InCatalog(id)) << id;
    EXPECT_FALSE(HasFiles(id)) << id;
  }
  for (const auto& id : {b1, b4, b5}) {
    EXPECT_TRUE(InCatalog(id)) << id;
    EXPECT_TRUE(HasFiles(id)) << id;
  }
  for (const auto& e : fs::directory_iterator(repo_->root() + "/backups")) {
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << e.path();
  }
  // The decisions stay with the job once it ended.
  const v1::Job stored = StoredOnceEnded(p.id());
  EXPECT_EQ(stored.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Render(stored.prune_result()), Render(p.prune_result()));

  // The chunks only b2 and b3 used (their versions of chunk 0) go with gc;
  // every remaining backup still restores byte for byte.
  const size_t before = ChunkFileCount();
  AgeAllChunkFiles(absl::Hours(2));
  v1::Job gc = Gc(false);
  ASSERT_EQ(gc.state(), v1::JOB_STATE_SUCCEEDED) << gc.error();
  EXPECT_EQ(ChunkFileCount(), before - 2) << gc.summary();
  for (const auto& id : {b1, b4, b5}) ExpectRestoresExactly(id);
  // A pruned backup is gone for restore and verify alike.
  v1::Job j;
  EXPECT_EQ(StartRestore(b2, dir_.path() + "/x.img", false, &j).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(PruneTest, ABackupInUseIsSkippedAndABackupBeingRemovedCannotBeRead) {
  const std::string b1 = BackupAfterChanging(1), b2 = BackupAfterChanging(2),
                    b3 = BackupAfterChanging(3), b4 = BackupAfterChanging(4);
  BackupUses uses;
  auto use = uses.Acquire(b1, "a restore to /tmp/x");
  ASSERT_TRUE(use.ok());
  auto set = scheduler_->Policies();
  ASSERT_TRUE(set.has_value());
  v1::PruneResult result;
  v1::Job job;
  job.set_kind(v1::JOB_KIND_PRUNE);
  auto started = jobs_->Start(job, "", "", [&](JobContext& ctx) {
    return RunPrune(catalog_.get(), repo_.get(), &uses, *set, PruneOptions{}, ctx, &result);
  });
  ASSERT_TRUE(started.ok());
  v1::Job done = *jobs_->Wait(started->id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(absl::StrJoin(Render(result), "\n"),
            absl::StrJoin({b4 + ": keep last 1", b3 + ": keep last 2", b2 + ": removed",
                           b1 + ": remove (skipped: in use by a restore to /tmp/x: not removed)"},
                          "\n"));
  EXPECT_NE(done.summary().find("skipped 1 in use"), std::string::npos) << done.summary();
  EXPECT_TRUE(InCatalog(b1));
  EXPECT_TRUE(HasFiles(b1));
  EXPECT_FALSE(InCatalog(b2));

  // Released, it can be claimed for removal; claimed, no one can read it.
  (*use)->Release();
  ASSERT_TRUE(uses.BeginRemoval(b1).ok());
  auto refused = uses.Acquire(b1, "a verify");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("being pruned"), std::string::npos);
  uses.EndRemoval(b1);
  EXPECT_TRUE(uses.Acquire(b1, "a verify").ok());
}

TEST_F(PruneTest, ACrashAfterTheCatalogCommitIsFinishedBeforeGcSweeps) {
  const std::string b1 = BackupAfterChanging(1), b2 = BackupAfterChanging(2);
  // The state a crash at CrashPoint("prune.deleted") leaves: b1 deleted from
  // the catalog (with its removal pending), its files still there, and a
  // half-removed leftover of an earlier interrupted removal.
  ASSERT_TRUE(catalog_->DeleteBackup(b1).ok());
  ASSERT_TRUE(HasFiles(b1));
  const std::string leftover = repo_->root() + "/backups/.tmp-removed-99";
  ASSERT_TRUE(MakeDirectories(leftover).ok());
  ASSERT_TRUE(WriteFileDurably(leftover + "/device-0.index", "x").ok());
  auto pending = catalog_->ListBackupRemovals();
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, std::vector<std::string>{b1});

  const size_t before = ChunkFileCount();
  AgeAllChunkFiles(absl::Hours(2));
  v1::Job gc = Gc(false);
  ASSERT_EQ(gc.state(), v1::JOB_STATE_SUCCEEDED) << gc.error();
  EXPECT_FALSE(HasFiles(b1));
  pending = catalog_->ListBackupRemovals();
  ASSERT_TRUE(pending.ok());
  EXPECT_TRUE(pending->empty());
  EXPECT_EQ(ChunkFileCount(), before - 1);  // chunk 0 as b1 held it
  ExpectRestoresExactly(b2);

  // A removal a crash cut short inside the repository: the leftover goes.
  ASSERT_TRUE(repo_->RemoveBackupFiles("99").ok());
  EXPECT_FALSE(fs::exists(leftover));
}

TEST_F(PruneTest, PruneAfterBackupRunsOnceAScheduledBackupCommits) {
  ApplyPolicy(1, /*prune_after_backup=*/true);
  const std::string b1 = BackupAfterChanging(1), b2 = BackupAfterChanging(2);
  // The first tick learns the targets, the next one at the slot starts it.
  sched_clock_.Set(absl::FromCivil(absl::CivilMinute(2027, 1, 15, 9, 30), absl::UTCTimeZone()));
  scheduler_->Tick();
  sched_clock_.Set(absl::FromCivil(absl::CivilMinute(2027, 1, 15, 10, 0), absl::UTCTimeZone()));
  scheduler_->Tick();
  auto targets = scheduler_->Targets();
  ASSERT_EQ(targets.size(), 1u);
  ASSERT_FALSE(targets[0].job_id.empty());
  v1::Job scheduled = *jobs_->Wait(targets[0].job_id);
  ASSERT_EQ(scheduled.state(), v1::JOB_STATE_SUCCEEDED) << scheduled.error();
  EXPECT_EQ(BackupCount(), 3);
  scheduler_->Tick();  // sees the backup end: starts the prune of h1

  std::string prune_id;
  auto jobs = catalog_->ListJobs("h1", {0, 100});
  ASSERT_TRUE(jobs.ok());
  for (const auto& j : *jobs) {
    if (j.kind() == v1::JOB_KIND_PRUNE) prune_id = j.id();
  }
  ASSERT_FALSE(prune_id.empty()) << "no prune job after the scheduled backup";
  v1::Job p = *jobs_->Wait(prune_id);
  ASSERT_EQ(p.state(), v1::JOB_STATE_SUCCEEDED) << p.error();
  EXPECT_FALSE(p.prune_result().dry_run());
  EXPECT_EQ(BackupCount(), 1);
  EXPECT_FALSE(InCatalog(b1));
  EXPECT_FALSE(InCatalog(b2));
  EXPECT_TRUE(InCatalog(scheduled.backup_id()));
}

TEST(ChunkPinsTest, ASweepKeepsWhatWasPinnedBeforeOrDuringItEvenIfReleased) {
  ChunkPins pins;
  const Sha256Digest a = Sha256(std::string("a")), b = Sha256(std::string("b")),
                     c = Sha256(std::string("c"));
  int removed = 0;
  auto remove = [&] { ++removed; };
  {
    auto h = ChunkPins::Hold(&pins);
    h.Pin(a);
    pins.BeginSweep();
    h.Pin(b);
  }  // released, but the sweep started while they were pinned
  EXPECT_EQ(pins.pinned(), 0u);
  EXPECT_FALSE(pins.RemoveUnlessPinned(a, remove));
  EXPECT_FALSE(pins.RemoveUnlessPinned(b, remove));
  EXPECT_TRUE(pins.RemoveUnlessPinned(c, remove));
  EXPECT_EQ(removed, 1);
  pins.EndSweep();
  EXPECT_TRUE(pins.RemoveUnlessPinned(a, remove));
  auto h = ChunkPins::Hold(nullptr);  // pins nothing, must not crash
  h.Pin(a);
}

TEST(FormatIndexesTest, CollapsesRunsAndCaps) {
  EXPECT_EQ(FormatIndexes({}), "");
  EXPECT_EQ(FormatIndexes({3}), "3");
  EXPECT_EQ(FormatIndexes({3, 7, 8, 9, 12}), "3, 7-9, 12");
  EXPECT_EQ(FormatIndexes({1, 3, 5, 7}, 2), "1, 3, ...");
}

}  // namespace
}  // namespace blkfleet::server
