// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_FD_IO_H_
#define BLKFLEET_AGENT_FD_IO_H_

// Whole-buffer positional I/O on file descriptors with Status results
// (errors as common/durable_file.h's ErrnoStatus).

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace blkfleet::agent {

// Reads exactly `len` bytes at `offset` (retrying short reads and EINTR).
// A read past the end of the file is DATA_LOSS.
absl::Status PreadFull(int fd, uint8_t* buf, size_t len, uint64_t offset, absl::string_view what);

// Writes exactly `len` bytes at `offset`.
absl::Status PwriteFull(int fd, const uint8_t* buf, size_t len, uint64_t offset,
                        absl::string_view what);

// Copies the first `len` bytes of `in` to the start of `out` (in-kernel copy
// where the file system allows it).
absl::Status CopyFileRange(int in, int out, uint64_t len, absl::string_view what);

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_FD_IO_H_
