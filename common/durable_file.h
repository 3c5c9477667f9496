// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_DURABLE_FILE_H_
#define BLKFLEET_COMMON_DURABLE_FILE_H_

// Crash-safe whole-file writes: a reader sees either no file or the complete
// file, never a torn one, and after a successful return the file survives a
// power loss.

#include <string>
#include <string_view>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace blkfleet {

// Writes the concatenation of `parts` to `path`: a temporary file beside it
// (name starting with ".tmp-"), fsync, rename over `path`, fsync of the
// directory. On failure the temporary file is removed and `path` is
// untouched.
absl::Status WriteFileDurably(const std::string& path, std::span<const std::string_view> parts);
inline absl::Status WriteFileDurably(const std::string& path, std::string_view data) {
  return WriteFileDurably(path, std::span<const std::string_view>(&data, 1));
}

// Reads a whole file. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// fsync of a directory, making renames and creations inside it durable.
absl::Status FsyncDirectory(const std::string& dir);

// Creates `dir` and its missing parents.
absl::Status MakeDirectories(const std::string& dir);

// An absl::Status for a failed system call: the code follows errno
// (ENOENT -> NOT_FOUND, EEXIST -> ALREADY_EXISTS, ENOSPC -> RESOURCE_EXHAUSTED,
// ...) and the message is "<what>: <strerror>".
absl::Status ErrnoStatus(int err, std::string_view what);

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_DURABLE_FILE_H_
