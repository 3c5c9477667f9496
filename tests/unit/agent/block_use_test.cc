// SPDX-License-Identifier: Apache-2.0
#include "agent/block_use.h"

#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::agent {
namespace {

using ::testing::HasSubstr;

void Put(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// A fake /sys with disk 8:0 (partitions 8:1 and 8:2) and disk 8:16.
class BlockUseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sys_ = dir_.Sub("sys");
    const std::filesystem::path disk = std::filesystem::path(sys_) / "dev/block/8:0";
    Put(disk / "dev", "8:0\n");
    std::filesystem::create_directories(disk / "holders");
    for (int p : {1, 2}) {
      const auto part = disk / ("sda" + std::to_string(p));
      Put(part / "dev", "8:" + std::to_string(p) + "\n");
      Put(part / "partition", std::to_string(p) + "\n");
      std::filesystem::create_directories(part / "holders");
    }
    Put(std::filesystem::path(sys_) / "dev/block/8:16/dev", "8:16\n");
    roots_.sys = sys_;
    roots_.mountinfo = dir_.Sub("x") + "/mountinfo";
    Mounts("");
  }
  void Mounts(const std::string& text) { Put(roots_.mountinfo, text); }

  testing::TempDir dir_;
  std::string sys_;
  BlockUseRoots roots_;
};

TEST(MountinfoTest, ParsesDeviceNumbersAndMountPointsAndSkipsJunk) {
  const auto m = ParseMountinfo(
      "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n"
      "garbage line\n"
      "40 22 253:3 /sub /mnt/data rw - xfs /dev/dm-3 rw\n");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].dev, makedev(8, 2));
  EXPECT_EQ(m[0].mount_point, "/");
  EXPECT_EQ(m[1].dev, makedev(253, 3));
  EXPECT_EQ(m[1].mount_point, "/mnt/data");
}

TEST_F(BlockUseTest, AnUnusedDiskPasses) {
  Mounts("22 1 0:21 / /proc rw - proc proc rw\n");
  EXPECT_TRUE(CheckBlockDeviceUnused("/dev/sda", makedev(8, 0), roots_).ok());
}

TEST_F(BlockUseTest, AMountedPartitionRefusesTheWholeDisk) {
  Mounts("22 1 8:2 / /srv rw - ext4 /dev/sda2 rw\n");
  absl::Status st = CheckBlockDeviceUnused("/dev/sda", makedev(8, 0), roots_);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.message()), HasSubstr("partition sda2 is mounted on /srv"));
  // The other disk is not concerned.
  EXPECT_TRUE(CheckBlockDeviceUnused("/dev/sdb", makedev(8, 16), roots_).ok());
}

TEST_F(BlockUseTest, AMountedDiskIsRefused) {
  Mounts("22 1 8:16 / /mnt rw - ext4 /dev/sdb rw\n");
  absl::Status st = CheckBlockDeviceUnused("/dev/sdb", makedev(8, 16), roots_);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.message()), HasSubstr("/dev/sdb is mounted on /mnt"));
}

TEST_F(BlockUseTest, AHolderOfAPartitionRefusesTheDisk) {
  std::filesystem::create_directories(std::filesystem::path(sys_) /
                                      "dev/block/8:0/sda1/holders/dm-0");
  absl::Status st = CheckBlockDeviceUnused("/dev/sda", makedev(8, 0), roots_);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.message()), HasSubstr("held by dm-0"));
}

TEST_F(BlockUseTest, UnreadableMountinfoIsAnErrorNotAPass) {
  roots_.mountinfo = dir_.Sub("x") + "/missing";
  EXPECT_EQ(CheckBlockDeviceUnused("/dev/sda", makedev(8, 0), roots_).code(),
            absl::StatusCode::kInternal);
}

TEST_F(BlockUseTest, WholeDiskOfAPartitionIsItsParent) {
  // In the real /sys, /sys/dev/block/8:1 links into the disk's folder.
  std::filesystem::create_symlink(std::filesystem::path(sys_) / "dev/block/8:0/sda1",
                                  std::filesystem::path(sys_) / "dev/block/8:1");
  EXPECT_EQ(WholeDiskOf(makedev(8, 1), sys_), makedev(8, 0));
  EXPECT_EQ(WholeDiskOf(makedev(8, 0), sys_), makedev(8, 0));
  EXPECT_EQ(WholeDiskOf(makedev(9, 9), sys_), makedev(9, 9));
}

}  // namespace
}  // namespace blkfleet::agent
