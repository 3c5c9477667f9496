// SPDX-License-Identifier: Apache-2.0
// End to end over real processes: one sim-backed agent, one server, loopback
// gRPC. Every restore is compared byte for byte with the oracle copy the sim
// backend wrote of the device at the snapshot instant.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <set>
#include <thread>

#include "tests/integration/fleet.h"

namespace blkfleet::testing {
namespace {

namespace sv = server::v1;
namespace simtest = agent::simtest::v1;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kChunk = 4 * kMiB;  // the server's default chunk size

class BackupRestoreTest : public FleetTest {
 protected:
  void SetUp() override {
    StartFleet({"vda=64MiB", "vdb=24MiB"});
    RegisterHost({"vda", "vdb"});
  }

  // Moves the agent to a 256 MiB device filled with `seed` (big enough for
  // the stream to be running when the agent dies), starts a backup and kills
  // the agent with SIGKILL once chunks arrive. Sets *job_id.
  void StartBackupAndKillAgentMidStream(uint64_t seed, std::string* job_id) {
    agent_.process.Kill(SIGKILL);
    agent_.dir = dir_ + "/h1-big";
    agent_.devices = {"vda=256MiB"};
    ASSERT_TRUE(agent_.Start().ok()) << agent_.process.LogTail();
    RegisterHost({"vda"});  // the agent listens on a new port
    ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 256 * kMiB, seed).ok());
    sv::RunBackupRequest req;
    req.set_host("h1");
    sv::Job job;
    ASSERT_TRUE(server_.stub->RunBackup(Ctx().get(), req, &job).ok());
    *job_id = job.id();
    bool killed = false;
    for (int i = 0; i < 2000 && !killed; ++i) {
      sv::GetJobRequest g;
      g.set_id(job.id());
      sv::Job now;
      ASSERT_TRUE(server_.stub->GetJob(Ctx().get(), g, &now).ok());
      if (now.state() != sv::JOB_STATE_PENDING && now.state() != sv::JOB_STATE_RUNNING) break;
      if (now.progress().chunks_done() >= 1) {
        agent_.process.Kill(SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(killed) << "the backup ended before the agent could be killed mid-stream";
  }

  sv::Backup GetBackup(const std::string& id) {
    sv::GetBackupRequest req;
    req.set_id(id);
    sv::Backup b;
    grpc::Status st = server_.stub->GetBackup(Ctx().get(), req, &b);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return b;
  }

  int CountBackups() {
    sv::ListBackupsRequest req;
    sv::ListBackupsResponse resp;
    grpc::Status st = server_.stub->ListBackups(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.backups_size();
  }

  // Restores every device of `backup` and compares it with the oracle image
  // of the snapshot the backup was read from.
  void ExpectRestoresMatchSnapshot(const sv::Backup& backup) {
    ASSERT_FALSE(backup.snapshot_id().empty());
    for (const sv::BackupDevice& d : backup.devices()) {
      std::string out = absl::StrCat(dir_, "/restore-", backup.id(), "-", d.device());
      auto job = RestoreAndWait(*server_.stub, backup.id(), d.device(), out);
      ASSERT_TRUE(job.ok()) << job.status();
      ASSERT_EQ(job->state(), sv::JOB_STATE_SUCCEEDED) << job->error();
      std::string oracle = agent_.OracleImage(backup.snapshot_id(), d.device());
      EXPECT_EQ(FileSha256(out), FileSha256(oracle))
          << "restore of " << d.device() << " from backup " << backup.id()
          << " differs from the device at the snapshot instant";
    }
  }

  simtest::RandomWritesResponse RandomWrites(const std::string& dev, uint32_t count,
                                             uint32_t size, uint64_t seed) {
    simtest::RandomWritesRequest req;
    req.set_device(dev);
    req.set_count(count);
    req.set_size_bytes(size);
    req.set_seed(seed);
    simtest::RandomWritesResponse resp;
    grpc::Status st = agent_.workload->RandomWrites(Ctx(60).get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

};

TEST_F(BackupRestoreTest, FullThenIncrementalRestoreBothPointsByteForByte) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 64 * kMiB, 11).ok());
  ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 24 * kMiB, 12).ok());

  auto full = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->state(), sv::JOB_STATE_SUCCEEDED) << full->error();
  sv::Backup b1 = GetBackup(full->backup_id());
  ASSERT_EQ(b1.devices_size(), 2);
  for (const auto& d : b1.devices()) EXPECT_EQ(d.kind(), sv::BACKUP_KIND_FULL) << d.device();

  RandomWrites("vda", 20, 64 * 1024, 101);
  RandomWrites("vdb", 3, 4096, 102);

  auto incr = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(incr.ok()) << incr.status();
  ASSERT_EQ(incr->state(), sv::JOB_STATE_SUCCEEDED) << incr->error();
  sv::Backup b2 = GetBackup(incr->backup_id());
  for (const auto& d : b2.devices()) {
    EXPECT_EQ(d.kind(), sv::BACKUP_KIND_INCREMENTAL) << d.device();
    EXPECT_EQ(d.base_backup_id(), b1.id()) << d.device();
  }

  ExpectRestoresMatchSnapshot(b1);
  ExpectRestoresMatchSnapshot(b2);
}

TEST_F(BackupRestoreTest, IncrementalMovesOnlyTheChangedChunks) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 64 * kMiB, 21).ok());
  auto full = RunBackupAndWait(*server_.stub, "h1", {"vda"});
  ASSERT_TRUE(full.ok() && full->state() == sv::JOB_STATE_SUCCEEDED)
      << (full.ok() ? full->error() : full.status().ToString());
  sv::Backup b1 = GetBackup(full->backup_id());
  ASSERT_EQ(b1.devices(0).chunk_size_bytes(), kChunk);
  EXPECT_EQ(b1.devices(0).chunks_read(), 16u);

  auto writes = RandomWrites("vda", 3, 4096, 202);
  std::set<uint64_t> changed;
  for (const auto& r : writes.ranges()) {
    for (uint64_t c = r.offset_bytes() / kChunk;
         c <= (r.offset_bytes() + r.length_bytes() - 1) / kChunk; ++c) {
      changed.insert(c);
    }
  }
  ASSERT_FALSE(changed.empty());

  auto incr = RunBackupAndWait(*server_.stub, "h1", {"vda"});
  ASSERT_TRUE(incr.ok() && incr->state() == sv::JOB_STATE_SUCCEEDED)
      << (incr.ok() ? incr->error() : incr.status().ToString());
  sv::BackupDevice d = GetBackup(incr->backup_id()).devices(0);
  EXPECT_EQ(d.kind(), sv::BACKUP_KIND_INCREMENTAL);
  EXPECT_EQ(d.chunks_read(), changed.size());
  EXPECT_EQ(d.chunks_new(), changed.size());
  // Random data does not compress: the payload is the changed chunks plus
  // zstd framing, far below one unchanged chunk more.
  const uint64_t budget = changed.size() * kChunk + changed.size() * 1024 + 64 * 1024;
  EXPECT_LE(d.bytes_received(), budget);
  EXPECT_GE(d.bytes_received(), changed.size() * kChunk / 2);
  ExpectRestoresMatchSnapshot(GetBackup(incr->backup_id()));
}

TEST_F(BackupRestoreTest, BackupWhileWorkloadWritesRestoresTheSnapshotInstant) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 64 * kMiB, 31).ok());
  ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 24 * kMiB, 32).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> batches{0};
  std::thread writer([&] {
    for (uint64_t seed = 1000; !stop.load(); ++seed) {
      RandomWrites(seed % 2 ? "vda" : "vdb", 4, 65536, seed);
      batches.fetch_add(1);
    }
  });
  auto full = RunBackupAndWait(*server_.stub, "h1", {});
  auto incr = RunBackupAndWait(*server_.stub, "h1", {});
  stop = true;
  writer.join();
  EXPECT_GT(batches.load(), 2) << "the workload did not run during the backups";
  ASSERT_TRUE(full.ok() && full->state() == sv::JOB_STATE_SUCCEEDED)
      << (full.ok() ? full->error() : full.status().ToString());
  ASSERT_TRUE(incr.ok() && incr->state() == sv::JOB_STATE_SUCCEEDED)
      << (incr.ok() ? incr->error() : incr.status().ToString());
  ExpectRestoresMatchSnapshot(GetBackup(full->backup_id()));
  ExpectRestoresMatchSnapshot(GetBackup(incr->backup_id()));
}

TEST_F(BackupRestoreTest, AgentKilledMidStreamCommitsNothingAndNextBackupWorks) {
  std::string job_id;
  StartBackupAndKillAgentMidStream(41, &job_id);
  if (HasFatalFailure()) return;
  auto ended = WaitJob(*server_.stub, job_id, 300);
  ASSERT_TRUE(ended.ok()) << ended.status();
  // The sim agent's snapshots die with it, so the job cannot resume: it must
  // fail, name the cause, and leave no backup behind.
  EXPECT_EQ(ended->state(), sv::JOB_STATE_FAILED);
  EXPECT_FALSE(ended->error().empty());
  EXPECT_EQ(CountBackups(), 0);

  // Same sim devices, new agent process (CBT state is gone: a new
  // generation), and the next backup completes and restores exactly.
  ASSERT_TRUE(agent_.Start().ok()) << agent_.process.LogTail();
  RegisterHost({"vda"});
  auto again = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(again.ok() && again->state() == sv::JOB_STATE_SUCCEEDED)
      << (again.ok() ? again->error() : again.status().ToString());
  EXPECT_EQ(CountBackups(), 1);
  ExpectRestoresMatchSnapshot(GetBackup(again->backup_id()));
}

TEST_F(BackupRestoreTest, AgentRestartedMidStreamJobRetriesWithANewSnapshotAndSucceeds) {
  std::string job_id;
  StartBackupAndKillAgentMidStream(43, &job_id);
  if (HasFatalFailure()) return;
  // The agent comes back on its address, as a service manager restarts it,
  // while the job waits to try again. Its snapshots died with it.
  ASSERT_TRUE(agent_.Start(agent_.address).ok()) << agent_.process.LogTail();

  auto ended = WaitJob(*server_.stub, job_id, 300);
  ASSERT_TRUE(ended.ok()) << ended.status();
  ASSERT_EQ(ended->state(), sv::JOB_STATE_SUCCEEDED) << ended->error();
  EXPECT_GE(ended->attempts(), 1u) << "the job should say it retried";
  EXPECT_EQ(CountBackups(), 1);
  ExpectRestoresMatchSnapshot(GetBackup(ended->backup_id()));
}

TEST_F(BackupRestoreTest, NewCbtGenerationReadsEverythingButSendsOnlyNewData) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 64 * kMiB, 51).ok());
  auto first = RunBackupAndWait(*server_.stub, "h1", {"vda"});
  ASSERT_TRUE(first.ok() && first->state() == sv::JOB_STATE_SUCCEEDED)
      << (first.ok() ? first->error() : first.status().ToString());

  // A restarted agent (like a rebooted host) has lost CBT: new generation.
  agent_.process.Kill(SIGKILL);
  ASSERT_TRUE(agent_.Start().ok()) << agent_.process.LogTail();
  RegisterHost({"vda"});
  auto writes = RandomWrites("vda", 1, 4096, 52);
  ASSERT_EQ(writes.ranges_size(), 1);
  uint64_t first_chunk = writes.ranges(0).offset_bytes() / kChunk;
  uint64_t last_chunk =
      (writes.ranges(0).offset_bytes() + writes.ranges(0).length_bytes() - 1) / kChunk;

  auto second = RunBackupAndWait(*server_.stub, "h1", {"vda"});
  ASSERT_TRUE(second.ok() && second->state() == sv::JOB_STATE_SUCCEEDED)
      << (second.ok() ? second->error() : second.status().ToString());
  sv::Backup b2 = GetBackup(second->backup_id());
  const sv::BackupDevice& d = b2.devices(0);
  EXPECT_EQ(d.kind(), sv::BACKUP_KIND_FULL);
  EXPECT_EQ(d.chunks_read(), 16u);
  EXPECT_EQ(d.chunks_new(), last_chunk - first_chunk + 1);
  EXPECT_LE(d.bytes_received(), (last_chunk - first_chunk + 1) * (kChunk + 1024));
  ExpectRestoresMatchSnapshot(b2);
}

TEST_F(BackupRestoreTest, MalformedRequestsAreInvalidArgumentUnknownIdsNotFound) {
  {
    sv::CreateHostRequest req;  // no name
    req.mutable_host()->set_agent_address("127.0.0.1:1");
    sv::Host h;
    EXPECT_EQ(server_.stub->CreateHost(Ctx().get(), req, &h).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    sv::RunBackupRequest req;
    req.set_host("no-such-host");
    sv::Job j;
    EXPECT_EQ(server_.stub->RunBackup(Ctx().get(), req, &j).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    sv::GetBackupRequest req;
    req.set_id("999999");
    sv::Backup b;
    EXPECT_EQ(server_.stub->GetBackup(Ctx().get(), req, &b).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    sv::GetJobRequest req;
    req.set_id("not a job id");
    sv::Job j;
    EXPECT_EQ(server_.stub->GetJob(Ctx().get(), req, &j).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    sv::RestoreRequest req;  // no target
    req.set_backup_id("1");
    sv::Job j;
    EXPECT_EQ(server_.stub->Restore(Ctx().get(), req, &j).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    agent::v1::GetSnapshotRequest req;
    req.set_id("garbage");
    agent::v1::Snapshot s;
    EXPECT_EQ(agent_.agent->GetSnapshot(Ctx().get(), req, &s).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    req.set_id("7d444840-9dc0-11d1-b245-5ffdce74fad2");
    EXPECT_EQ(agent_.agent->GetSnapshot(Ctx().get(), req, &s).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    agent::v1::CreateSnapshotRequest req;
    req.add_devices("nope");
    req.set_lease_ms(60000);
    agent::v1::Snapshot s;
    EXPECT_EQ(agent_.agent->CreateSnapshot(Ctx().get(), req, &s).error_code(),
              grpc::StatusCode::NOT_FOUND);
    req.clear_devices();
    EXPECT_EQ(agent_.agent->CreateSnapshot(Ctx().get(), req, &s).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // A StreamImage whose first message is not `start`.
    auto ctx = Ctx();
    auto stream = agent_.agent->StreamImage(ctx.get());
    agent::v1::StreamImageRequest req;
    req.set_known_digests_done(true);
    stream->Write(req);
    stream->WritesDone();
    agent::v1::StreamImageResponse resp;
    while (stream->Read(&resp)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(CountBackups(), 0);
}

}  // namespace
}  // namespace blkfleet::testing
