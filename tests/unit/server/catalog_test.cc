// SPDX-License-Identifier: Apache-2.0
#include "server/catalog/sqlite_catalog.h"

#include <gtest/gtest.h>

#include "tests/unit/server/temp_dir.h"

namespace blkfleet::catalog {
namespace {

using blkfleet::testing::TempDir;

v1::Backup SampleBackup(const std::string& id, const std::string& host,
                        std::vector<std::string> devices) {
  v1::Backup b;
  b.set_id(id);
  b.set_host(host);
  b.set_snapshot_id("00000000-0000-4000-8000-00000000000" + id);
  b.mutable_start_time()->set_seconds(1000);
  b.mutable_end_time()->set_seconds(1010);
  for (const auto& dev : devices) {
    auto* d = b.add_devices();
    d->set_device(dev);
    d->set_size_bytes(1 << 20);
    d->set_chunk_size_bytes(65536);
    d->set_kind(v1::BACKUP_KIND_FULL);
    d->mutable_cbt()->set_generation_id(std::string(16, 'g'));
    d->mutable_cbt()->set_change_number(3);
    d->set_chunks_total(16);
    d->set_index_sha256(std::string(32, 'i'));
  }
  return b;
}

TEST(SqliteCatalogTest, FreshDatabaseGetsTheNewestSchema) {
  TempDir dir;
  auto cat = SqliteCatalog::Open(dir.path() + "/catalog.db");
  ASSERT_TRUE(cat.ok()) << cat.status();
  EXPECT_EQ((*cat)->SchemaVersion(), SchemaMigrations().back().version);
}

TEST(SqliteCatalogTest, HeldSnapshotsSurviveReopenUntilForgotten) {
  TempDir dir;
  const std::string path = dir.path() + "/catalog.db";
  {
    auto cat = SqliteCatalog::Open(path);
    ASSERT_TRUE(cat.ok()) << cat.status();
    ASSERT_TRUE((*cat)->RecordHeldSnapshot({"s1", "3", "h1", "10.0.0.1:9400", 120000}).ok());
    ASSERT_TRUE((*cat)->RecordHeldSnapshot({"s2", "4", "h2", "10.0.0.2:9400", 60000}).ok());
    ASSERT_TRUE((*cat)->ForgetHeldSnapshot("s2").ok());
    EXPECT_TRUE((*cat)->ForgetHeldSnapshot("never-recorded").ok());
  }
  auto cat = SqliteCatalog::Open(path);
  ASSERT_TRUE(cat.ok()) << cat.status();
  auto held = (*cat)->ListHeldSnapshots();
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ((*held)[0].snapshot_id, "s1");
  EXPECT_EQ((*held)[0].job_id, "3");
  EXPECT_EQ((*held)[0].host, "h1");
  EXPECT_EQ((*held)[0].agent_address, "10.0.0.1:9400");
  EXPECT_EQ((*held)[0].lease_ms, 120000);
}

TEST(SqliteCatalogTest, LaterMigrationsApplyOnReopenAndKeepData) {
  TempDir dir;
  const std::string path = dir.path() + "/catalog.db";
  std::vector<Migration> v1_only = {SchemaMigrations().front()};
  {
    auto cat = SqliteCatalog::Open(path, v1_only);
    ASSERT_TRUE(cat.ok());
    v1::Host h;
    h.set_name("h1");
    h.set_agent_address("127.0.0.1:1");
    ASSERT_TRUE((*cat)->CreateHost(h).ok());
  }
  auto cat = SqliteCatalog::Open(path);
  ASSERT_TRUE(cat.ok()) << cat.status();
  EXPECT_EQ((*cat)->SchemaVersion(), SchemaMigrations().back().version);
  EXPECT_TRUE((*cat)->GetHost("h1").ok());
}

blkfleet::type::v1::KernelReport SampleKernel(bool module_for_new) {
  blkfleet::type::v1::KernelReport k;
  k.set_running_release("6.1.0-28-amd64");
  k.set_module_loaded(true);
  k.set_module_version("2.0.1.0");
  k.set_intercept_mode("ftrace");
  k.set_modules_dir("/lib/modules");
  auto* a = k.add_installed_kernels();
  a->set_release("6.1.0-28-amd64");
  a->set_module_present(true);
  a->set_module_path("updates/dkms/blksnap.ko.xz");
  a->set_running(true);
  auto* b = k.add_installed_kernels();
  b->set_release("6.12.118+deb12-amd64");
  b->set_module_present(module_for_new);
  b->set_default_boot(true);
  return k;
}

// Schema 6 adds host_kernels: a catalog of schema 5 (hosts, a backup) gets
// it on open, keeps its data, and stores, replaces and drops reports.
TEST(SqliteCatalogTest, MigrationFromSchema5AddsHostKernelReports) {
  TempDir dir;
  const std::string path = dir.path() + "/catalog.db";
  std::vector<Migration> v5(SchemaMigrations().begin(), SchemaMigrations().begin() + 5);
  ASSERT_EQ(v5.back().version, 5);
  {
    auto cat = SqliteCatalog::Open(path, v5);
    ASSERT_TRUE(cat.ok()) << cat.status();
    v1::Host h;
    h.set_name("web1");
    h.set_agent_address("10.0.1.7:7401");
    ASSERT_TRUE((*cat)->CreateHost(h).ok());
    h.set_name("web2");
    ASSERT_TRUE((*cat)->CreateHost(h).ok());
    auto id = (*cat)->AllocateBackupId();
    ASSERT_TRUE(id.ok());
    ASSERT_TRUE((*cat)->CommitBackup(SampleBackup(*id, "web1", {"vda"}), Sha256Digest{}).ok());
  }
  auto opened = SqliteCatalog::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  auto& cat = *opened;
  EXPECT_EQ(cat->SchemaVersion(), 6);
  auto before = cat->GetHost("web1");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_FALSE(before->has_kernel()) << "no report before the first contact";
  EXPECT_EQ(cat->ListBackups("web1", {0, 10})->size(), 1u);

  ASSERT_TRUE(cat->PutHostKernels({{"web1", SampleKernel(false), 1'800'000'000'000'000},
                                   {"gone", SampleKernel(true), 1}})
                  .ok())
      << "an unknown host is skipped";
  auto got = cat->GetHost("web1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kernel().running_release(), "6.1.0-28-amd64");
  EXPECT_EQ(got->kernel().intercept_mode(), "ftrace");
  ASSERT_EQ(got->kernel().installed_kernels_size(), 2);
  EXPECT_FALSE(got->kernel().installed_kernels(1).module_present());
  EXPECT_EQ(got->kernel_report_time().seconds(), 1'800'000'000);
  ASSERT_TRUE(cat->PutHostKernels({{"web1", SampleKernel(true), 1'800'000'060'000'000}}).ok());
  auto list = cat->ListHosts({0, 10});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_TRUE((*list)[0].kernel().installed_kernels(1).module_present()) << "replaced";
  EXPECT_EQ((*list)[0].kernel_report_time().seconds(), 1'800'000'060);
  EXPECT_FALSE((*list)[1].has_kernel());
  EXPECT_EQ(cat->GetHost("gone").status().code(), absl::StatusCode::kNotFound);

  // Deleting the host drops its report: a new host of that name has none.
  ASSERT_TRUE(cat->DeleteHost("web1").ok());
  v1::Host again;
  again.set_name("web1");
  again.set_agent_address("10.0.1.8:7401");
  ASSERT_TRUE(cat->CreateHost(again).ok());
  EXPECT_FALSE(cat->GetHost("web1")->has_kernel());
}

TEST(SqliteCatalogTest, FailingMigrationRollsBackToThePreviousVersion) {
  TempDir dir;
  const std::string path = dir.path() + "/catalog.db";
  std::vector<Migration> ms = {SchemaMigrations().front()};
  ASSERT_TRUE(SqliteCatalog::Open(path, ms).ok());
  ms.push_back({2, "CREATE TABLE extra (x INTEGER); SELECT * FROM no_such_table;"});
  auto bad = SqliteCatalog::Open(path, ms);
  EXPECT_FALSE(bad.ok());
  ms.pop_back();
  auto cat = SqliteCatalog::Open(path, ms);
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ((*cat)->SchemaVersion(), 1);
  // The half-applied step left nothing behind: it can be applied again.
  ms.push_back({2, "CREATE TABLE extra (x INTEGER)"});
  cat = SqliteCatalog::Open(path, ms);
  ASSERT_TRUE(cat.ok()) << cat.status();
  EXPECT_EQ((*cat)->SchemaVersion(), 2);
}

TEST(SqliteCatalogTest, NewerSchemaThanKnownIsRefused) {
  TempDir dir;
  const std::string path = dir.path() + "/catalog.db";
  auto ms = SchemaMigrations();
  ms.push_back({ms.back().version + 1, "CREATE TABLE future (x INTEGER)"});
  ASSERT_TRUE(SqliteCatalog::Open(path, ms).ok());
  EXPECT_EQ(SqliteCatalog::Open(path).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SqliteCatalogTest, Hosts) {
  TempDir dir;
  auto cat = *SqliteCatalog::Open(dir.path() + "/c.db");
  v1::Host h;
  h.set_name("b-host");
  h.set_agent_address("10.0.0.2:7481");
  h.add_default_devices("/dev/vda");
  h.add_default_devices("/dev/vdb");
  ASSERT_TRUE(cat->CreateHost(h).ok());
  EXPECT_EQ(cat->CreateHost(h).code(), absl::StatusCode::kAlreadyExists);
  h.set_name("a-host");
  ASSERT_TRUE(cat->CreateHost(h).ok());
  auto got = cat->GetHost("b-host");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->default_devices_size(), 2);
  EXPECT_EQ(got->default_devices(1), "/dev/vdb");
  auto list = cat->ListHosts({0, 10});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "a-host");
  auto page2 = cat->ListHosts({1, 10});
  ASSERT_EQ(page2->size(), 1u);
  EXPECT_EQ((*page2)[0].name(), "b-host");
  ASSERT_TRUE(cat->DeleteHost("a-host").ok());
  EXPECT_EQ(cat->DeleteHost("a-host").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cat->GetHost("a-host").status().code(), absl::StatusCode::kNotFound);
}

TEST(SqliteCatalogTest, CommittedBackupIsVisibleWithItsDevices) {
  TempDir dir;
  auto cat = *SqliteCatalog::Open(dir.path() + "/c.db");
  auto id1 = cat->AllocateBackupId();
  auto id2 = cat->AllocateBackupId();
  ASSERT_TRUE(id1.ok() && id2.ok());
  EXPECT_NE(*id1, *id2);
  EXPECT_EQ(cat->GetBackup(*id1).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(cat->CommitBackup(SampleBackup(*id1, "h1", {"/dev/vda", "/dev/vdb"}),
                                Sha256(std::string("m")))
                  .ok());
  ASSERT_TRUE(cat->CommitBackup(SampleBackup(*id2, "h1", {"/dev/vdb"}), Sha256(std::string("m")))
                  .ok());
  auto b = cat->GetBackup(*id1);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->devices_size(), 2);
  EXPECT_EQ(b->devices(1).device(), "/dev/vdb");
  EXPECT_EQ(b->devices(0).cbt().generation_id(), std::string(16, 'g'));
  auto latest_a = cat->LatestDeviceBackup("h1", "/dev/vda");
  ASSERT_TRUE(latest_a.ok() && latest_a->has_value());
  EXPECT_EQ((*latest_a)->backup_id, *id1);
  auto latest_b = cat->LatestDeviceBackup("h1", "/dev/vdb");
  EXPECT_EQ((*latest_b)->backup_id, *id2);
  EXPECT_EQ((*latest_b)->ordinal, 0);
  EXPECT_FALSE(cat->LatestDeviceBackup("h2", "/dev/vdb")->has_value());
  auto list = cat->ListBackups("h1", {0, 10});
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id(), *id2);  // newest first
  EXPECT_TRUE(cat->ListBackups("other", {0, 10})->empty());
  EXPECT_EQ(cat->GetBackup("abc").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SqliteCatalogTest, FailedCommitLeavesNothingVisible) {
  TempDir dir;
  auto cat = *SqliteCatalog::Open(dir.path() + "/c.db");
  auto id = *cat->AllocateBackupId();
  // The second device row violates UNIQUE(backup_id, device) after the
  // backup row and the first device were inserted in the same transaction.
  absl::Status s = cat->CommitBackup(SampleBackup(id, "h1", {"/dev/vda", "/dev/vda"}),
                                     Sha256(std::string("m")));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(cat->GetBackup(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(cat->LatestDeviceBackup("h1", "/dev/vda")->has_value());
  EXPECT_TRUE(cat->ListBackups("", {0, 10})->empty());
  // The catalog is still usable.
  EXPECT_TRUE(cat->CommitBackup(SampleBackup(id, "h1", {"/dev/vda"}), Sha256(std::string("m"))).ok());
}

TEST(SqliteCatalogTest, ScheduleStatesWrittenTogetherSurviveReopen) {
  TempDir dir;
  const std::string path = dir.path() + "/c.db";
  {
    auto cat = *SqliteCatalog::Open(path);
    std::vector<ScheduleState> batch(3);
    for (int i = 0; i < 3; ++i) {
      batch[i].policy = "p";
      batch[i].host = "h" + std::to_string(i);
      batch[i].next_slot_us = 1000 + i;
      batch[i].running = i == 1;
      batch[i].job_id = std::to_string(i);
      batch[i].last_result = "running";
    }
    ASSERT_TRUE(cat->PutScheduleStates(batch).ok());
    batch[2].next_slot_us = 5000;  // replaces, in a later batch
    ASSERT_TRUE(cat->PutScheduleStates({batch[2]}).ok());
    ASSERT_TRUE(cat->PutScheduleStates({}).ok());
  }
  auto cat = *SqliteCatalog::Open(path);
  auto got = cat->ListScheduleStates();
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0].next_slot_us, 1000);
  EXPECT_TRUE((*got)[1].running);
  EXPECT_EQ((*got)[1].job_id, "1");
  EXPECT_EQ((*got)[2].next_slot_us, 5000);
}

TEST(SqliteCatalogTest, JobsPersistAndUnfinishedOnesFailAtRestart) {
  TempDir dir;
  const std::string path = dir.path() + "/c.db";
  std::string running_id;
  {
    auto cat = *SqliteCatalog::Open(path);
    v1::Job j;
    j.set_kind(v1::JOB_KIND_BACKUP);
    j.set_state(v1::JOB_STATE_PENDING);
    j.set_host("h1");
    j.mutable_create_time()->set_seconds(5);
    auto done = cat->CreateJob(j);
    ASSERT_TRUE(done.ok());
    done->set_state(v1::JOB_STATE_SUCCEEDED);
    done->set_backup_id("3");
    done->mutable_progress()->set_bytes_done(99);
    done->mutable_progress()->set_phase("done");
    ASSERT_TRUE(cat->UpdateJob(*done).ok());
    auto running = cat->CreateJob(j);
    running->set_state(v1::JOB_STATE_RUNNING);
    ASSERT_TRUE(cat->UpdateJob(*running).ok());
    running_id = running->id();
    auto got = cat->GetJob(done->id());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->backup_id(), "3");
    EXPECT_EQ(got->progress().bytes_done(), 99u);
    EXPECT_EQ(got->progress().phase(), "done");
  }
  auto cat = *SqliteCatalog::Open(path);
  EXPECT_EQ(*cat->FailUnfinishedJobs("server restarted"), 1);
  auto j = cat->GetJob(running_id);
  EXPECT_EQ(j->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(j->error(), "server restarted");
  auto list = cat->ListJobs("h1", {0, 10});
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id(), running_id);
  EXPECT_EQ(cat->GetJob("999").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace blkfleet::catalog
