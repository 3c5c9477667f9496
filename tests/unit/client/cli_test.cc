// SPDX-License-Identifier: Apache-2.0
// The CLI against an in-process fake of the Server API (the fake sits at the
// network boundary: the CLI dials it over loopback gRPC).
#include "client/cli.h"

#include <grpcpp/grpcpp.h>

#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "blkfleet/server/v1/server.grpc.pb.h"
#include "client/format.h"
#include "nlohmann/json.hpp"

namespace blkfleet::cli {
namespace {

namespace v1 = ::blkfleet::server::v1;

// web1 runs 6.1 (module loaded, ftrace); 6.12 is installed, with or
// without a module.
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

class FakeServer final : public v1::Server::Service {
 public:
  grpc::Status GetHost(grpc::ServerContext*, const v1::GetHostRequest* req,
                       v1::Host* resp) override {
    if (req->name() != "web1" && req->name() != "web2" && req->name() != "old") {
      return {grpc::StatusCode::NOT_FOUND, "host " + req->name() + " not found"};
    }
    resp->set_name(req->name());
    resp->set_agent_address("10.0.1.7:7401");
    resp->set_agent_version("0.9.0");
    resp->set_backend("kernel");
    if (req->name() == "old") return grpc::Status::OK;  // an agent without kernel report
    *resp->mutable_kernel() = SampleKernel(req->name() == "web2");
    resp->mutable_kernel_report_time()->set_seconds(1'800'000'000);
    if (req->name() == "web2") {
      resp->mutable_kernel()->set_module_loaded(false);
      resp->mutable_kernel()->set_module_version("");
      resp->mutable_kernel()->set_intercept_mode("");
      resp->mutable_kernel()->set_module_error(
          "blksnap module not loaded: no /dev/blksnap-control");
    }
    return grpc::Status::OK;
  }
  grpc::Status CreateHost(grpc::ServerContext*, const v1::CreateHostRequest* req,
                          v1::Host* resp) override {
    absl::MutexLock l(&mu_);
    last_create_ = *req;
    if (req->host().name() == "dup") {
      return {grpc::StatusCode::ALREADY_EXISTS, "host dup already exists"};
    }
    *resp = req->host();
    return grpc::Status::OK;
  }
  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest* req,
                         v1::ListHostsResponse* resp) override {
    // Two pages, to prove the CLI follows page tokens.
    v1::Host h;
    if (req->page_token().empty()) {
      h.set_name("alpha");
      h.set_agent_address("10.0.0.1:7481");
      h.add_default_devices("/dev/vda");
      h.set_agent_version("0.1.0");
      *h.mutable_kernel() = SampleKernel(false);
      resp->set_next_page_token("1");
    } else {
      h.set_name("beta");
      h.set_agent_address("10.0.0.2:7481");
    }
    *resp->add_hosts() = h;
    return grpc::Status::OK;
  }
  grpc::Status RunBackup(grpc::ServerContext*, const v1::RunBackupRequest* req,
                         v1::Job* resp) override {
    absl::MutexLock l(&mu_);
    last_backup_ = *req;
    if (req->host() == "ghost") return {grpc::StatusCode::NOT_FOUND, "host ghost not found"};
    resp->set_id(req->host() == "doomed" ? "66" : "7");
    resp->set_kind(v1::JOB_KIND_BACKUP);
    resp->set_host(req->host());
    resp->set_state(v1::JOB_STATE_PENDING);
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::Job>* writer) override {
    v1::Job j;
    j.set_id(req->id());
    j.set_kind(v1::JOB_KIND_BACKUP);
    j.set_state(v1::JOB_STATE_RUNNING);
    j.mutable_progress()->set_phase("reading vda");
    j.mutable_progress()->set_bytes_total(100);
    j.mutable_progress()->set_bytes_done(40);
    writer->Write(j);
    if (req->id() == "66") {
      j.set_state(v1::JOB_STATE_FAILED);
      j.set_error("difference storage overflow on host doomed (vda)");
    } else {
      j.set_state(v1::JOB_STATE_SUCCEEDED);
      j.set_backup_id("12");
      j.mutable_progress()->set_bytes_done(100);
    }
    writer->Write(j);
    return grpc::Status::OK;
  }
  grpc::Status ListBackups(grpc::ServerContext*, const v1::ListBackupsRequest* req,
                           v1::ListBackupsResponse* resp) override {
    absl::MutexLock l(&mu_);
    last_list_backups_ = *req;
    auto* b = resp->add_backups();
    b->set_id("12");
    b->set_host("alpha");
    b->set_snapshot_id("0f0e0d0c-0000-4000-8000-000000000001");
    auto* d = b->add_devices();
    d->set_device("/dev/vda");
    d->set_size_bytes(1 << 30);
    d->set_kind(v1::BACKUP_KIND_INCREMENTAL);
    return grpc::Status::OK;
  }
  grpc::Status Restore(grpc::ServerContext*, const v1::RestoreRequest* req,
                       v1::Job* resp) override {
    absl::MutexLock l(&mu_);
    last_restore_ = *req;
    if (!req->overwrite() && !req->has_host_device()) {
      return {grpc::StatusCode::ALREADY_EXISTS, req->file_path() + " exists"};
    }
    resp->set_id("8");
    resp->set_kind(v1::JOB_KIND_RESTORE);
    return grpc::Status::OK;
  }

  grpc::Status VerifyBackup(grpc::ServerContext*, const v1::VerifyBackupRequest* req,
                            v1::Job* resp) override {
    absl::MutexLock l(&mu_);
    last_verify_ = *req;
    if (req->backup_id() == "404") return {grpc::StatusCode::NOT_FOUND, "backup 404 not found"};
    resp->set_id("9");
    resp->set_kind(v1::JOB_KIND_VERIFY);
    resp->set_host("alpha");
    return grpc::Status::OK;
  }
  grpc::Status CollectGarbage(grpc::ServerContext*, const v1::CollectGarbageRequest* req,
                              v1::Job* resp) override {
    absl::MutexLock l(&mu_);
    last_gc_ = *req;
    resp->set_id("10");
    resp->set_kind(v1::JOB_KIND_GC);
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  v1::VerifyBackupRequest last_verify_;
  v1::CollectGarbageRequest last_gc_;
  v1::CreateHostRequest last_create_;
  v1::RunBackupRequest last_backup_;
  v1::ListBackupsRequest last_list_backups_;
  v1::RestoreRequest last_restore_;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&fake_);
    server_ = b.BuildAndStart();
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  void TearDown() override { server_->Shutdown(); }

  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), {"--server", address_, "--insecure"});
    return RunCli(args, CliIo{out_, err_, false});
  }

  FakeServer fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::ostringstream out_, err_;
};

TEST_F(CliTest, HostAddSendsNameAgentAndDevices) {
  ASSERT_EQ(Run({"host", "add", "web1", "--agent", "10.1.1.1:7481", "--device", "/dev/vda",
                 "--device", "/dev/vdb"}),
            0)
      << err_.str();
  absl::MutexLock l(&fake_.mu_);
  EXPECT_EQ(fake_.last_create_.host().name(), "web1");
  EXPECT_EQ(fake_.last_create_.host().agent_address(), "10.1.1.1:7481");
  ASSERT_EQ(fake_.last_create_.host().default_devices_size(), 2);
  EXPECT_EQ(fake_.last_create_.host().default_devices(1), "/dev/vdb");
}

TEST_F(CliTest, ServerErrorExitsNonZeroWithItsMessage) {
  EXPECT_EQ(Run({"host", "add", "dup", "--agent", "10.1.1.1:7481"}), 1);
  EXPECT_NE(err_.str().find("host dup already exists"), std::string::npos) << err_.str();
  EXPECT_EQ(Run({"backup", "run", "ghost", "--wait"}), 1);
  EXPECT_NE(err_.str().find("host ghost not found"), std::string::npos) << err_.str();
}

TEST_F(CliTest, HostListFollowsPagesAsTableAndJson) {
  ASSERT_EQ(Run({"host", "list"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("NAME"), std::string::npos);
  EXPECT_NE(out_.str().find("alpha"), std::string::npos);
  EXPECT_NE(out_.str().find("10.0.0.2:7481"), std::string::npos);
  ASSERT_EQ(Run({"--json", "host", "list"}), 0) << err_.str();
  nlohmann::json j = nlohmann::json::parse(out_.str(), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out_.str();
  ASSERT_EQ(j["hosts"].size(), 2u);
  EXPECT_EQ(j["hosts"][1]["name"], "beta");
  EXPECT_EQ(j["hosts"][0]["agent_address"], "10.0.0.1:7481");
}

TEST_F(CliTest, HostListShowsTheKernelAndTheModuleReadiness) {
  ASSERT_EQ(Run({"host", "list"}), 0) << err_.str();
  const std::string out = out_.str();
  EXPECT_NE(out.find("KERNEL"), std::string::npos) << out;
  EXPECT_NE(out.find("6.1.0-28-amd64"), std::string::npos) << out;
  EXPECT_NE(out.find("MISSING for 6.12.118+deb12-amd64"), std::string::npos) << out;
}

TEST_F(CliTest, HostShowNamesTheKernelTheModuleAndEachInstalledKernel) {
  ASSERT_EQ(Run({"host", "show", "web1"}), 0) << err_.str();
  std::string out = out_.str();
  EXPECT_NE(out.find("kernel           6.1.0-28-amd64 (reported 2027-01-15 08:00:00)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("blksnap module   2.0.1.0, interception ftrace"), std::string::npos) << out;
  EXPECT_NE(out.find("installed kernels (/lib/modules):"), std::string::npos) << out;
  EXPECT_NE(out.find("6.1.0-28-amd64        yes     updates/dkms/blksnap.ko.xz  running"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("6.12.118+deb12-amd64  NO      -                           default boot"),
            std::string::npos)
      << out;
  ASSERT_EQ(Run({"host", "show", "web2"}), 0) << err_.str();
  out = out_.str();
  EXPECT_NE(out.find("NOT LOADED: blksnap module not loaded: no /dev/blksnap-control"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("readiness        NOT LOADED"), std::string::npos) << out;
  ASSERT_EQ(Run({"host", "show", "old"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("no report from the agent yet"), std::string::npos) << out_.str();
  ASSERT_EQ(Run({"--json", "host", "show", "web1"}), 0) << err_.str();
  nlohmann::json j = nlohmann::json::parse(out_.str(), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out_.str();
  EXPECT_EQ(j["kernel"]["installed_kernels"][1]["module_present"], false);
  EXPECT_NE(Run({"host", "show", "nobody"}), 0);
  EXPECT_NE(err_.str().find("host nobody not found"), std::string::npos) << err_.str();
}

TEST_F(CliTest, BackupRunWaitSucceeds) {
  ASSERT_EQ(Run({"backup", "run", "alpha", "--device", "/dev/vda", "--full", "--wait"}), 0)
      << err_.str();
  EXPECT_NE(out_.str().find("backup 12"), std::string::npos) << out_.str();
  absl::MutexLock l(&fake_.mu_);
  EXPECT_TRUE(fake_.last_backup_.force_full());
  ASSERT_EQ(fake_.last_backup_.devices_size(), 1);
}

TEST_F(CliTest, BackupRunWaitFailsWithTheJobsError) {
  EXPECT_EQ(Run({"backup", "run", "doomed", "--wait"}), 1);
  EXPECT_NE(err_.str().find("difference storage overflow on host doomed"), std::string::npos)
      << err_.str();
}

TEST_F(CliTest, BackupRunWithoutWaitPrintsTheJob) {
  ASSERT_EQ(Run({"--json", "backup", "run", "alpha"}), 0);
  nlohmann::json j = nlohmann::json::parse(out_.str(), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out_.str();
  EXPECT_EQ(j["id"], "7");
}

TEST_F(CliTest, BackupListJsonCarriesIdsAndFilter) {
  ASSERT_EQ(Run({"--json", "backup", "list", "--host", "alpha"}), 0) << err_.str();
  nlohmann::json j = nlohmann::json::parse(out_.str(), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out_.str();
  EXPECT_EQ(j["backups"][0]["id"], "12");
  EXPECT_EQ(j["backups"][0]["snapshot_id"], "0f0e0d0c-0000-4000-8000-000000000001");
  {
    absl::MutexLock l(&fake_.mu_);
    EXPECT_EQ(fake_.last_list_backups_.host(), "alpha");
  }
  ASSERT_EQ(Run({"backup", "list"}), 0);
  EXPECT_NE(out_.str().find("incremental"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("1.0 GiB"), std::string::npos) << out_.str();
}

TEST_F(CliTest, RestoreSendsTargetAndOverwrite) {
  EXPECT_EQ(Run({"restore", "12", "--to", "/srv/x.img"}), 1);
  EXPECT_NE(err_.str().find("/srv/x.img exists"), std::string::npos);
  ASSERT_EQ(Run({"restore", "12", "--to", "/srv/x.img", "--device", "/dev/vda", "--overwrite"}),
            0);
  absl::MutexLock l(&fake_.mu_);
  EXPECT_EQ(fake_.last_restore_.backup_id(), "12");
  EXPECT_EQ(fake_.last_restore_.file_path(), "/srv/x.img");
  EXPECT_EQ(fake_.last_restore_.device(), "/dev/vda");
  EXPECT_TRUE(fake_.last_restore_.overwrite());
}

TEST_F(CliTest, RestoreOntoAHostDeviceSendsTheTargetAndRefusesMixedTargets) {
  ASSERT_EQ(Run({"restore", "12", "--host", "alpha", "--target-device", "/dev/vdb"}), 0)
      << err_.str();
  {
    absl::MutexLock l(&fake_.mu_);
    EXPECT_EQ(fake_.last_restore_.host_device().host(), "alpha");
    EXPECT_EQ(fake_.last_restore_.host_device().device(), "/dev/vdb");
    EXPECT_TRUE(fake_.last_restore_.file_path().empty());
  }
  EXPECT_EQ(Run({"restore", "13", "--host", "alpha"}), 2);
  EXPECT_EQ(Run({"restore", "13", "--to", "/srv/y.img", "--host", "alpha", "--target-device",
                 "/dev/vdb"}),
            2);
  EXPECT_EQ(Run({"restore", "13"}), 2);
  EXPECT_NE(err_.str().find("--target-device"), std::string::npos) << err_.str();
  absl::MutexLock l(&fake_.mu_);
  EXPECT_EQ(fake_.last_restore_.backup_id(), "12") << "a refused command sent a request";
}

TEST_F(CliTest, BackupVerifySendsTheIdAndReportsTheJob) {
  ASSERT_EQ(Run({"backup", "verify", "12"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("job 9 started (verify of host alpha)"), std::string::npos)
      << out_.str();
  {
    absl::MutexLock l(&fake_.mu_);
    EXPECT_EQ(fake_.last_verify_.backup_id(), "12");
  }
  EXPECT_EQ(Run({"backup", "verify", "404"}), 1);
  EXPECT_NE(err_.str().find("backup 404 not found"), std::string::npos) << err_.str();
  EXPECT_NE(Run({"backup", "verify"}), 0);  // the id is required
}

TEST_F(CliTest, GcSendsDryRunAndNamesNoHost) {
  ASSERT_EQ(Run({"gc", "--dry-run"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("job 10 started (gc)"), std::string::npos) << out_.str();
  absl::MutexLock l(&fake_.mu_);
  EXPECT_TRUE(fake_.last_gc_.dry_run());
}

TEST_F(CliTest, UnreachableServerIsAClearError) {
  std::ostringstream out, err;
  int rc = RunCli({"--server", "127.0.0.1:1", "--insecure", "host", "list"}, CliIo{out, err, false});
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.str().find("cannot reach server 127.0.0.1:1"), std::string::npos) << err.str();
}

TEST_F(CliTest, UsageErrorsAreNonZero) {
  EXPECT_NE(Run({"backup"}), 0);
  EXPECT_NE(Run({"restore", "12"}), 0);  // --to is required
  EXPECT_NE(Run({"frobnicate"}), 0);
}

TEST(FormatTest, HumanBytesAndProgress) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(3u << 20), "3.0 MiB");
  v1::Job j;
  j.mutable_progress()->set_phase("reading vda");
  j.mutable_progress()->set_bytes_done(1 << 20);
  j.mutable_progress()->set_bytes_total(4 << 20);
  j.mutable_progress()->set_chunks_done(1);
  j.mutable_progress()->set_chunks_total(4);
  EXPECT_EQ(ProgressLine(j), "reading vda  25%  1.0 MiB / 4.0 MiB  1/4 chunks");
}

TEST(FormatTest, TableAlignsColumns) {
  Table t({"A", "LONGER"});
  t.AddRow({"xxxx", "y"});
  std::ostringstream out;
  t.Print(out);
  EXPECT_EQ(out.str(), "A     LONGER\nxxxx  y\n");
}

}  // namespace
}  // namespace blkfleet::cli
