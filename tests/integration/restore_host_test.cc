// SPDX-License-Identifier: Apache-2.0
// Restore onto a device of a host, over real processes (sim agent, server,
// CLI): a backup of vda restored onto vdb through the agent's WriteImage is
// byte-identical to the snapshot; targets the agent refuses change nothing.

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/fleet.h"

namespace blkfleet::testing {
namespace {

namespace sv = server::v1;
constexpr uint64_t kMiB = 1ull << 20;

class RestoreHostTest : public FleetTest {
 protected:
  void SetUp() override {
    agent_.extra_args = {"--restore-device", "vdb", "--restore-device", "vdc"};
    StartFleet({"vda=24MiB", "vdb=32MiB", "vdc=8MiB", "vdd=32MiB"});
    RegisterHost({"vda"});
  }

  absl::StatusOr<sv::Job> RestoreOnto(const std::string& backup_id, const std::string& device) {
    sv::RestoreRequest req;
    req.set_backup_id(backup_id);
    req.mutable_host_device()->set_host("h1");
    req.mutable_host_device()->set_device(device);
    sv::Job job;
    grpc::Status st = server_.stub->Restore(Ctx().get(), req, &job);
    if (!st.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    }
    return WaitJob(*server_.stub, job.id(), 300);
  }

  // Fills vda and vdb (seeds `seed`, `seed` + 1), backs up vda; sets the
  // backup and the agent's oracle image of vda at its snapshot.
  void BackUpVda(uint64_t seed, sv::Backup* b, std::string* oracle) {
    ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 24 * kMiB, seed).ok());
    ASSERT_TRUE(FillDevice(*agent_.workload, "vdb", 32 * kMiB, seed + 1).ok());
    auto backup = RunBackupAndWait(*server_.stub, "h1", {"vda"});
    ASSERT_TRUE(backup.ok()) << backup.status();
    ASSERT_EQ(backup->state(), sv::JOB_STATE_SUCCEEDED) << backup->error();
    sv::GetBackupRequest greq;
    greq.set_id(backup->backup_id());
    ASSERT_TRUE(server_.stub->GetBackup(Ctx().get(), greq, b).ok());
    *oracle = agent_.OracleImage(b->snapshot_id(), "vda");
  }

  std::string DevicePrefixSha(const std::string& device, uint64_t bytes) {
    const std::string out = absl::StrCat(dir_, "/", device, ".prefix");
    const std::string path = absl::StrCat(agent_.dir, "/sim/", device, ".img");
    std::string cmd = absl::StrCat("head -c ", bytes, " ", path, " > ", out);
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    return FileSha256(out);
  }
};

TEST_F(RestoreHostTest, BackupRestoredOntoASecondDeviceIsByteIdentical) {
  sv::Backup b;
  std::string oracle;
  ASSERT_NO_FATAL_FAILURE(BackUpVda(31, &b, &oracle));

  // Through the CLI, as an operator would.
  const std::string cmd =
      absl::StrCat(Binaries::Cli(), " --insecure --server ", server_.address, " restore ",
                   b.id(), " --host h1 --target-device vdb --wait > ", dir_, "/cli.out 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(DevicePrefixSha("vdb", 24 * kMiB), FileSha256(oracle));

  // Refused targets: not in the allowlist (vdd), too small (vdc); neither
  // changes a byte.
  const std::string vdd_before = DevicePrefixSha("vdd", 32 * kMiB);
  const std::string vdc_before = DevicePrefixSha("vdc", 8 * kMiB);
  auto refused = RestoreOnto(b.id(), "vdd");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->state(), sv::JOB_STATE_FAILED);
  EXPECT_NE(refused->error().find("restore allowlist"), std::string::npos) << refused->error();
  auto small = RestoreOnto(b.id(), "vdc");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->state(), sv::JOB_STATE_FAILED);
  EXPECT_NE(small->error().find("does not fit"), std::string::npos) << small->error();
  EXPECT_EQ(DevicePrefixSha("vdd", 32 * kMiB), vdd_before);
  EXPECT_EQ(DevicePrefixSha("vdc", 8 * kMiB), vdc_before);
}

// From an encrypted repository: the server opens (AES-256-GCM) and checks
// (HMAC id) every chunk before WriteImage, so the device gets plain data.
class EncryptedRestoreHostTest : public RestoreHostTest {
 protected:
  void SetUp() override {
    key_dir_ = MakeTempDir("blkfleet-key");
    ASSERT_FALSE(key_dir_.empty());
    const std::string key = key_dir_ + "/repo.key";
    const std::string init = absl::StrCat(Binaries::Server(), " --init-repo-key ", key, " > ",
                                          key_dir_, "/init.out 2>&1");
    ASSERT_EQ(std::system(init.c_str()), 0);
    server_.extra_args = {"--repo-key-file", key};
    RestoreHostTest::SetUp();
  }
  void TearDown() override {
    RestoreHostTest::TearDown();
    RemoveTree(key_dir_);
  }
  std::string key_dir_;
};

TEST_F(EncryptedRestoreHostTest, BackupRestoredOntoASecondDeviceIsByteIdentical) {
  sv::Backup b;
  std::string oracle;
  ASSERT_NO_FATAL_FAILURE(BackUpVda(41, &b, &oracle));
  auto restored = RestoreOnto(b.id(), "vdb");
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_EQ(restored->state(), sv::JOB_STATE_SUCCEEDED) << restored->error();
  EXPECT_EQ(DevicePrefixSha("vdb", 24 * kMiB), FileSha256(oracle));
}

}  // namespace
}  // namespace blkfleet::testing
