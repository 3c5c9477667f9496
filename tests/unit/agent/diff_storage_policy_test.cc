// SPDX-License-Identifier: Apache-2.0
// The confinement of CreateSnapshot's difference storage: the path check
// shared by both backends (agent/diff_storage_policy.h), then the service on
// the sim backend, where a path that escaped would be truncated at once.

#include "agent/diff_storage_policy.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/agent_fixture.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::agent {
namespace {

using ::testing::HasSubstr;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::trunc) << content;
}

uintmax_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

class DiffStoragePolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.dir = dir_.Sub("diff");
    config_.default_limit_bytes = 64 << 20;
    config_.max_limit_bytes = 256 << 20;
    secret_ = dir_.path() + "/secret";
    WriteFile(secret_, "precious data");
  }

  absl::StatusOr<DiffStorageSpec> Resolve(const std::string& path, uint64_t limit = 0) {
    return ResolveDiffStorage(config_, path, limit);
  }

  testing::TempDir dir_;
  DiffStorageConfig config_;
  std::string secret_;
};

TEST_F(DiffStoragePolicyTest, EmptyPathIsTheFolderAndZeroLimitTheDefault) {
  auto spec = Resolve("");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->path, std::filesystem::canonical(config_.dir).string());
  EXPECT_EQ(spec->limit_bytes, 64u << 20);
}

TEST_F(DiffStoragePolicyTest, NamesBelowTheFolderAreAccepted) {
  std::filesystem::create_directories(config_.dir + "/sub/deeper");
  WriteFile(config_.dir + "/sub/store", "");
  const std::string real = std::filesystem::canonical(config_.dir).string();
  for (const std::string& p : {std::string("sub"), std::string("./sub/deeper/"),
                               config_.dir + "/sub/store", real + "/sub"}) {
    auto spec = Resolve(p, 128 << 20);
    ASSERT_TRUE(spec.ok()) << p << ": " << spec.status();
    EXPECT_EQ(spec->path.rfind(real + "/sub", 0), 0u) << spec->path;
    EXPECT_EQ(spec->limit_bytes, 128u << 20);
  }
}

TEST_F(DiffStoragePolicyTest, EscapesAreRefusedNamingTheFieldAndTheFolder) {
  std::filesystem::create_directories(config_.dir + "/sub");
  ::symlink(secret_.c_str(), (config_.dir + "/link").c_str());
  ::symlink(dir_.path().c_str(), (config_.dir + "/sub/up").c_str());
  ::link(secret_.c_str(), (config_.dir + "/hard").c_str());
  const std::string cases[] = {
      secret_,                          // plain path outside
      dir_.path(),                      // the parent of the folder
      config_.dir + "/../secret",       // ".." out of it
      "../secret",                      // relative ".."
      "sub/../../secret",               // ".." further down
      "link",                           // a symlink to a file outside
      "sub/up/secret",                  // through a symlinked folder
      config_.dir + "x/secret",         // a sibling sharing the prefix
      "hard",                           // a second name of a file outside
      "/dev/null",
  };
  for (const std::string& p : cases) {
    auto spec = Resolve(p);
    ASSERT_FALSE(spec.ok()) << p;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied) << p << spec.status();
    EXPECT_THAT(spec.status().message(), HasSubstr("diff_storage_path"));
    EXPECT_THAT(spec.status().message(), HasSubstr(config_.dir));
  }
  EXPECT_EQ(FileSize(secret_), 13u);
}

TEST_F(DiffStoragePolicyTest, MalformedPathsAndLimitsAreInvalid) {
  EXPECT_EQ(Resolve(std::string("sub\0/../../secret", 17)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Resolve(std::string(5000, 'a')).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Resolve("missing").status().code(), absl::StatusCode::kInvalidArgument);
  auto huge = Resolve("", std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(huge.status().message(), HasSubstr("diff_storage_limit_bytes"));
  EXPECT_THAT(huge.status().message(), HasSubstr("--diff-storage-max-limit"));
  EXPECT_FALSE(Resolve("", (256u << 20) + 1).ok());
  EXPECT_TRUE(Resolve("", 256u << 20).ok());
  // Without a maximum, the default is the most a request may ask for.
  config_.max_limit_bytes = 0;
  EXPECT_FALSE(Resolve("", (64u << 20) + 1).ok());
}

TEST_F(DiffStoragePolicyTest, BlockDevicesOnlyWhenListedAndAsListed) {
  // /dev/null stands in for a listed name that is no block device.
  config_.devices = {"/dev/null"};
  auto listed = Resolve("/dev/null");
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kInvalidArgument) << listed.status();
  EXPECT_THAT(listed.status().message(), HasSubstr("not a block device"));
  auto other = Resolve("/dev/zero");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(other.status().message(), HasSubstr("--diff-storage-device (/dev/null)"));
}

// The service on the sim backend: refusals truncate and attach nothing, a
// legal request still works.
class DiffStorageServiceTest : public AgentFixture {
 protected:
  grpc::Status CreateWith(const std::string& path, uint64_t limit = 0) {
    v1::CreateSnapshotRequest req;
    req.add_devices("vda");
    req.set_lease_ms(60'000);
    req.set_diff_storage_path(path);
    req.set_diff_storage_limit_bytes(limit);
    v1::Snapshot s;
    return stub_->CreateSnapshot(Ctx().get(), req, &s);
  }
};

TEST_F(DiffStorageServiceTest, RefusedPathsAreNotTouched) {
  const std::string victim = dir_.path() + "/victim";
  WriteFile(victim, std::string(2100, 'x'));
  const std::string diff = dir_.Sub("diff");
  ::symlink(victim.c_str(), (diff + "/link").c_str());
  for (const std::string& p : {victim, diff + "/../victim", std::string("link")}) {
    grpc::Status st = CreateWith(p);
    EXPECT_EQ(st.error_code(), grpc::PERMISSION_DENIED) << p << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr("diff_storage_path"));
    EXPECT_THAT(st.error_message(), HasSubstr("--diff-storage-dir"));
  }
  grpc::Status huge = CreateWith("", std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(huge.error_code(), grpc::INVALID_ARGUMENT) << huge.error_message();
  EXPECT_THAT(huge.error_message(), HasSubstr("diff_storage_limit_bytes"));
  EXPECT_EQ(FileSize(victim), 2100u);
  EXPECT_TRUE(sim_->ListSnapshots()->empty());
  EXPECT_FALSE(sim_->GetCbtInfo("vda").ok()) << "a refused create attached the filter";
}

TEST_F(DiffStorageServiceTest, AFileBelowTheFolderIsUsed) {
  const std::string store = dir_.Sub("diff") + "/store";
  WriteFile(store, "old");
  grpc::Status st = CreateWith("store", 32 * kMiB);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(FileSize(store), 0u) << "the sim backend uses the named file from offset 0";
  ASSERT_EQ(sim_->ListSnapshots()->size(), 1u);
  EXPECT_EQ(sim_->GetSnapshotStatus(sim_->ListSnapshots()->front())->diff_storage_limit_bytes,
            32 * kMiB);
}

}  // namespace
}  // namespace blkfleet::agent
