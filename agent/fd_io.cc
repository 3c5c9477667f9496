#include "agent/fd_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace blkfleet::agent {

absl::Status ErrnoError(int err, absl::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, ": ", std::strerror(err)));
}

absl::Status PreadFull(int fd, uint8_t* buf, size_t len, uint64_t offset, absl::string_view what) {
  while (len > 0) {
    ssize_t n = ::pread(fd, buf, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, absl::StrCat("read of ", what));
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
      return ErrnoError(errno, absl::StrCat("write of ", what));
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
        return ErrnoError(errno, absl::StrCat("copy to ", what));
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

absl::Status MakeDirectory(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0) return absl::OkStatus();
  struct stat st;
  if (errno == EEXIST && ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::OkStatus();
  }
  return ErrnoError(errno == 0 ? ENOTDIR : errno, dir);
}

}  // namespace blkfleet::agent
