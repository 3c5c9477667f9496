// SPDX-License-Identifier: Apache-2.0
#include "agent/diff_storage_policy.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/unique_fd.h"

namespace blkfleet::agent {
namespace {

constexpr char kField[] = "diff_storage_path";

// The configured places, for refusals: the caller learns where storage may go.
std::string Places(const DiffStorageConfig& config) {
  std::string s = absl::StrCat("the agent's --diff-storage-dir ", config.dir);
  if (config.devices.empty()) {
    absl::StrAppend(&s, " (no --diff-storage-device is configured)");
  } else {
    absl::StrAppend(&s, " or a --diff-storage-device (", absl::StrJoin(config.devices, ", "), ")");
  }
  return s;
}

absl::Status Denied(const DiffStorageConfig& config, const std::string& path,
                    const std::string& why) {
  return absl::PermissionDeniedError(absl::StrCat(kField, ": \"", path, "\" ", why,
                                                  "; difference storage must lie below ",
                                                  Places(config)));
}

// `path` with `prefix` and the slashes after it removed, when `path` is
// `prefix` or lies below it by its spelling.
std::optional<std::string> Below(const std::string& path, std::string prefix) {
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  if (path == prefix) return std::string();
  if (prefix == "/" || (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                        path[prefix.size()] == '/')) {
    return path.substr(prefix == "/" ? 1 : prefix.size() + 1);
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<DiffStorageSpec> ResolveDiffStorage(const DiffStorageConfig& config,
                                                   const std::string& requested_path,
                                                   uint64_t requested_limit_bytes) {
  const uint64_t max_limit =
      config.max_limit_bytes == 0 ? config.default_limit_bytes : config.max_limit_bytes;
  if (requested_limit_bytes > max_limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff_storage_limit_bytes: ", requested_limit_bytes, " is above the agent's maximum of ",
        max_limit, " bytes (--diff-storage-max-limit)"));
  }
  DiffStorageSpec spec;
  spec.limit_bytes = requested_limit_bytes == 0 ? config.default_limit_bytes : requested_limit_bytes;
  if (config.dir.empty()) {
    return absl::FailedPreconditionError(
        "diff_storage_path: the agent has no difference storage folder (--diff-storage-dir)");
  }
  // The protobuf string may hold a NUL: the C string a backend opens would
  // then be a shorter path than the one checked here.
  if (requested_path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(kField, ": holds a NUL byte"));
  }
  if (requested_path.size() >= PATH_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(kField, ": longer than ", PATH_MAX - 1, " bytes"));
  }
  if (std::find(config.devices.begin(), config.devices.end(), requested_path) !=
      config.devices.end()) {
    struct stat st;
    if (::stat(requested_path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kField, ": --diff-storage-device ", requested_path, " is not a block device now"));
    }
    spec.path = requested_path;
    return spec;
  }

  char real[PATH_MAX];
  if (::realpath(config.dir.c_str(), real) == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        kField, ": the agent's --diff-storage-dir ", config.dir, ": ", std::strerror(errno)));
  }
  const std::string real_dir = real;
  std::string rest;
  if (requested_path.empty()) {
    rest = "";
  } else if (requested_path.front() != '/') {
    rest = requested_path;
  } else if (auto below = Below(requested_path, config.dir)) {
    rest = *below;
  } else if (auto below_real = Below(requested_path, real_dir)) {
    rest = *below_real;
  } else {
    return Denied(config, requested_path, "is outside the difference storage folder");
  }

  // Walk down from the folder itself, one component at a time, refusing
  // what could lead out of it whatever the spelling: ".." and symlinks
  // (O_NOFOLLOW on an O_PATH open yields the link itself, seen by fstat).
  UniqueFd cur(::open(real_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur.valid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        kField, ": the agent's --diff-storage-dir ", config.dir, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(cur.get(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(kField, ": fstat ", real_dir, ": ",
                                                      std::strerror(errno)));
  }
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(rest, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") return Denied(config, requested_path, "holds \"..\"");
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kField, ": \"", requested_path, "\": ", absl::StrJoin(parts, "/"),
                       " is not a folder"));
    }
    const std::string name(part);
    UniqueFd next(::openat(cur.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      if (errno == ENOENT) {
        return absl::InvalidArgumentError(
            absl::StrCat(kField, ": \"", requested_path, "\" does not exist"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(kField, ": \"", requested_path, "\": ", std::strerror(errno)));
    }
    if (::fstat(next.get(), &st) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kField, ": \"", requested_path, "\": ", std::strerror(errno)));
    }
    parts.push_back(name);
    if (S_ISLNK(st.st_mode)) {
      return Denied(config, requested_path,
                    absl::StrCat("goes through the symlink ", absl::StrJoin(parts, "/")));
    }
    cur = std::move(next);
  }
  if (S_ISBLK(st.st_mode)) {
    return Denied(config, requested_path, "is a block device that is no --diff-storage-device");
  }
  if (S_ISREG(st.st_mode) && st.st_nlink != 1) {
    // A second name elsewhere would let the storage write over that file.
    return Denied(config, requested_path,
                  absl::StrCat("is a regular file with ", st.st_nlink, " hard links"));
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        kField, ": \"", requested_path, "\" is neither a folder nor a regular file"));
  }
  spec.path = parts.empty() ? real_dir : absl::StrCat(real_dir, "/", absl::StrJoin(parts, "/"));
  return spec;
}

}  // namespace blkfleet::agent
