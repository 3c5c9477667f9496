// SPDX-License-Identifier: Apache-2.0
#include "server/repository/direct_io.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"

namespace blkfleet::repo {
namespace {

// One staging buffer per thread, grown to the largest write seen.
class StagingBuffer {
 public:
  ~StagingBuffer() { free(data_); }
  uint8_t* Reserve(size_t n) {
    if (n > size_) {
      free(data_);
      data_ = nullptr;
      size_ = 0;
      void* p = nullptr;
      if (posix_memalign(&p, kDirectIoAlign, n) != 0) return nullptr;
      data_ = static_cast<uint8_t*>(p);
      size_ = n;
    }
    return data_;
  }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

absl::Status PwriteAll(int fd, const uint8_t* data, size_t n, uint64_t offset,
                       const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::pwrite(fd, data + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("write ", path));
    }
    if (w == 0) return absl::InternalError(absl::StrCat("write ", path, ": no progress"));
    done += static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

UniqueFd OpenForWrite(const std::string& path, int flags, mode_t mode, bool try_direct,
                      bool* direct) {
  *direct = false;
  if (!try_direct) return UniqueFd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | flags, mode));
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_DIRECT | flags, mode);
  if (fd >= 0) {
    *direct = true;
    return UniqueFd(fd);
  }
  if (errno != EINVAL) return UniqueFd();
  // The filesystem (tmpfs, some FUSE) has no O_DIRECT. The failed open may
  // already have created the file, so the retry drops O_EXCL: callers use
  // unique temporary names.
  *direct = false;
  return UniqueFd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | (flags & ~O_EXCL), mode));
}

absl::Status WriteAt(int fd, bool direct, std::span<const std::string_view> parts,
                     uint64_t offset, const std::string& path) {
  size_t total = 0;
  for (auto p : parts) total += p.size();
  if (!direct) {
    for (auto p : parts) {
      absl::Status s =
          PwriteAll(fd, reinterpret_cast<const uint8_t*>(p.data()), p.size(), offset, path);
      if (!s.ok()) return s;
      offset += p.size();
    }
    return absl::OkStatus();
  }
  thread_local StagingBuffer staging;
  const size_t padded = (total + kDirectIoAlign - 1) / kDirectIoAlign * kDirectIoAlign;
  uint8_t* buf = staging.Reserve(padded);
  if (buf == nullptr) return absl::ResourceExhaustedError("cannot allocate an O_DIRECT buffer");
  size_t at = 0;
  for (auto p : parts) {
    std::memcpy(buf + at, p.data(), p.size());
    at += p.size();
  }
  std::memset(buf + total, 0, padded - total);
  return PwriteAll(fd, buf, padded, offset, path);
}

}  // namespace blkfleet::repo
