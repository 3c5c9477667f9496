// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_BLOCK_USE_H_
#define BLKFLEET_AGENT_BLOCK_USE_H_

// Checks that keep WriteImage from writing under a user of a block device:
// a mount of the device or of one of its partitions, or a holder (a
// device-mapper or md device built on it). The paths are parameters so
// tests can give a fake /sys and mountinfo.

#include <sys/types.h>

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"

namespace blkfleet::agent {

struct MountEntry {
  dev_t dev = 0;            // major:minor of the mounted device
  std::string mount_point;  // unescaped as the kernel prints it
};

// The entries of a /proc/<pid>/mountinfo text (proc(5)); malformed lines are
// skipped.
std::vector<MountEntry> ParseMountinfo(absl::string_view text);

struct BlockUseRoots {
  std::string sys = "/sys";
  std::string mountinfo = "/proc/self/mountinfo";
};

// OK when neither the block device `rdev` nor any of its partitions is
// mounted or has holders. FAILED_PRECONDITION naming `name`, the mount point
// or the holder otherwise; INTERNAL when mountinfo cannot be read.
absl::Status CheckBlockDeviceUnused(const std::string& name, dev_t rdev,
                                    const BlockUseRoots& roots = {});

// The whole disk of a partition `dev` (by /sys/dev/block/MAJ:MIN/partition
// and its parent's dev file); `dev` itself when it is not a partition or
// /sys does not tell.
dev_t WholeDiskOf(dev_t dev, const std::string& sys_root = "/sys");

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_BLOCK_USE_H_
