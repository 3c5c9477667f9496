// SPDX-License-Identifier: Apache-2.0
#include "agent/fd_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"

namespace blkfleet::agent {

absl::Status PreadFull(int fd, uint8_t* buf, size_t len, uint64_t offset, absl::string_view what) {
  while (len > 0) {
    ssize_t n = ::pread(fd, buf, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("read of ", what));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat("read of ", what, ": end of file at ", offset));
    }
    buf += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PwriteFull(int fd, const uint8_t* buf, size_t len, uint64_t offset,
                        absl::string_view what) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, buf, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("write of ", what));
    }
    buf += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status CopyFileRange(int in, int out, uint64_t len, absl::string_view what) {
  loff_t in_off = 0;
  loff_t out_off = 0;
  while (static_cast<uint64_t>(in_off) < len) {
    ssize_t n = ::copy_file_range(in, &in_off, out, &out_off,
                                  static_cast<size_t>(len - static_cast<uint64_t>(in_off)), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS) {
        return ErrnoStatus(errno, absl::StrCat("copy to ", what));
      }
      // No in-kernel copy between these files: plain reads and writes.
      std::vector<uint8_t> buf(1 << 20);
      while (static_cast<uint64_t>(in_off) < len) {
        size_t chunk = static_cast<size_t>(
            std::min<uint64_t>(buf.size(), len - static_cast<uint64_t>(in_off)));
        if (absl::Status st = PreadFull(in, buf.data(), chunk, in_off, what); !st.ok()) return st;
        if (absl::Status st = PwriteFull(out, buf.data(), chunk, out_off, what); !st.ok()) {
          return st;
        }
        in_off += static_cast<loff_t>(chunk);
        out_off += static_cast<loff_t>(chunk);
      }
      break;
    }
    if (n == 0) return absl::DataLossError(absl::StrCat("copy to ", what, ": source too short"));
  }
  return absl::OkStatus();
}

}  // namespace blkfleet::agent
