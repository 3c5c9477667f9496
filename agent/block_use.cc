// SPDX-License-Identifier: Apache-2.0
#include "agent/block_use.h"

#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace blkfleet::agent {
namespace {

bool ParseDevNumber(absl::string_view text, dev_t* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(absl::StripAsciiWhitespace(text), ':');
  unsigned major = 0, minor = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &major) ||
      !absl::SimpleAtoi(parts[1], &minor)) {
    return false;
  }
  *out = makedev(major, minor);
  return true;
}

std::string ReadSmallFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Names of the entries of `dir` (a holders folder); empty when it is missing.
std::vector<std::string> Entries(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    out.push_back(e.path().filename().string());
  }
  return out;
}

}  // namespace

std::vector<MountEntry> ParseMountinfo(absl::string_view text) {
  std::vector<MountEntry> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    // "36 35 98:0 /mnt1 /mnt/parent rw ..." : field 3 is major:minor, 5 the mount point.
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 5) continue;
    MountEntry e;
    if (!ParseDevNumber(f[2], &e.dev)) continue;
    e.mount_point = std::string(f[4]);
    out.push_back(std::move(e));
  }
  return out;
}

dev_t WholeDiskOf(dev_t dev, const std::string& sys_root) {
  std::error_code ec;
  const std::filesystem::path node = std::filesystem::canonical(
      std::filesystem::path(sys_root) / "dev" / "block" / absl::StrCat(major(dev), ":", minor(dev)),
      ec);
  if (ec || !std::filesystem::exists(node / "partition")) return dev;
  dev_t whole;
  if (!ParseDevNumber(ReadSmallFile(node.parent_path() / "dev"), &whole)) return dev;
  return whole;
}

absl::Status CheckBlockDeviceUnused(const std::string& name, dev_t rdev,
                                    const BlockUseRoots& roots) {
  // The device itself and every partition of it (sub-folders with a
  // "partition" file), by major:minor.
  const std::filesystem::path sys_dev = std::filesystem::path(roots.sys) / "dev" / "block" /
                                        absl::StrCat(major(rdev), ":", minor(rdev));
  struct Node {
    std::string label;
    dev_t dev;
    std::filesystem::path sys;
  };
  std::vector<Node> nodes{{name, rdev, sys_dev}};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(sys_dev, ec)) {
    if (!std::filesystem::exists(e.path() / "partition")) continue;
    dev_t d;
    if (!ParseDevNumber(ReadSmallFile(e.path() / "dev"), &d)) continue;
    nodes.push_back({absl::StrCat(name, " partition ", e.path().filename().string()), d, e.path()});
  }
  std::ifstream in(roots.mountinfo);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", roots.mountinfo));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<MountEntry> mounts = ParseMountinfo(ss.str());
  for (const Node& n : nodes) {
    for (const MountEntry& m : mounts) {
      if (m.dev == n.dev) {
        return absl::FailedPreconditionError(absl::StrCat(
            n.label, " is mounted on ", m.mount_point, ": unmount it before restoring onto ",
            name));
      }
    }
    const std::vector<std::string> holders = Entries(n.sys / "holders");
    if (!holders.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(n.label, " is held by ", holders.front(),
                       " (device-mapper, md or similar): release it before restoring onto ",
                       name));
    }
  }
  return absl::OkStatus();
}

}  // namespace blkfleet::agent
