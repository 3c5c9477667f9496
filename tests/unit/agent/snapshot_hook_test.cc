// SPDX-License-Identifier: Apache-2.0
// The snapshot hook: run after each take with the snapshot's devices and
// images, and waited for before the snapshot is destroyed.

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/unit/agent/agent_fixture.h"

namespace blkfleet::agent {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes an executable shell script and returns its path.
std::string Script(const testing::TempDir& dir, const std::string& name, const std::string& body) {
  const std::string path = dir.Sub("hooks") + "/" + name;
  std::ofstream(path) << "#!/bin/sh\n" << body;
  ::chmod(path.c_str(), 0755);
  return path;
}

class SnapshotHookTest : public AgentFixture {
 protected:
  void SetUp() override {
    out_ = hook_dir_.path() + "/out";
    // Slow on purpose: destroy must wait for it, not find it half done.
    snapshot_hook_ = Script(hook_dir_, "hook", "sleep 1\necho \"$@\" > " + out_ + ".tmp\nmv " +
                                                   out_ + ".tmp " + out_ + "\n");
    AgentFixture::SetUp();
  }
  testing::TempDir hook_dir_;
  std::string out_;
};

TEST_F(SnapshotHookTest, RunsWithTheImagesAndDestroyWaitsForIt) {
  v1::Snapshot s = MustCreate({"vda", "vdb"});
  ASSERT_EQ(s.devices_size(), 2);
  v1::DestroySnapshotRequest req;
  req.set_id(s.id());
  v1::DestroySnapshotResponse resp;
  ASSERT_TRUE(stub_->DestroySnapshot(Ctx().get(), req, &resp).ok());
  // Destroy returned: the hook has finished, with every device's image.
  ASSERT_TRUE(std::filesystem::exists(out_));
  const std::string args = ReadAll(out_);
  EXPECT_EQ(args, absl::StrCat(s.id(), " ", s.devices(0).device(), "=", s.devices(0).image_path(),
                               " ", s.devices(1).device(), "=", s.devices(1).image_path(), "\n"));
}

class SlowHookTest : public AgentFixture {
 protected:
  void SetUp() override {
    snapshot_hook_ = Script(hook_dir_, "slow", "exec sleep 60\n");
    snapshot_hook_timeout_ = absl::Milliseconds(300);
    AgentFixture::SetUp();
  }
  testing::TempDir hook_dir_;
};

TEST_F(SlowHookTest, AHookPastItsTimeIsKilledAndTheSnapshotStillGoes) {
  v1::Snapshot s = MustCreate({"vda"});
  const absl::Time start = absl::Now();
  v1::DestroySnapshotRequest req;
  req.set_id(s.id());
  v1::DestroySnapshotResponse resp;
  ASSERT_TRUE(stub_->DestroySnapshot(Ctx().get(), req, &resp).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(Get(s.id()).error_code(), grpc::StatusCode::NOT_FOUND);
}

class MissingHookTest : public AgentFixture {
 protected:
  void SetUp() override {
    snapshot_hook_ = hook_dir_.path() + "/no-such-program";
    AgentFixture::SetUp();
  }
  testing::TempDir hook_dir_;
};

TEST_F(MissingHookTest, AHookThatCannotStartFailsTheCreateAndLeavesNoSnapshot) {
  v1::Snapshot s;
  grpc::Status st = Create({"vda"}, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("no-such-program"), std::string::npos) << st.error_message();
  v1::ListSnapshotsRequest req;
  v1::ListSnapshotsResponse resp;
  ASSERT_TRUE(stub_->ListSnapshots(Ctx().get(), req, &resp).ok());
  EXPECT_EQ(resp.snapshots_size(), 0);
}

}  // namespace
}  // namespace blkfleet::agent
