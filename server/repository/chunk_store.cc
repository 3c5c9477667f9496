// SPDX-License-Identifier: Apache-2.0
#include "server/repository/chunk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/durable_file.h"
#include "common/status_util.h"
#include "common/unique_fd.h"
#include "common/uuid.h"
#include "server/repository/byte_order.h"
#include "server/repository/direct_io.h"

namespace blkfleet::repo {
namespace {

constexpr char kMagic[8] = {'B', 'L', 'K', 'F', 'C', 'H', 'N', 'K'};
constexpr uint16_t kFlagZstd = 1;
constexpr uint16_t kFlagEncrypted = 2;
constexpr uint16_t kKnownFlags = kFlagZstd | kFlagEncrypted;
// Header bytes 0..15 (magic, version, flags, plain length) are part of the
// associated data of an encrypted chunk.
constexpr size_t kAadHeaderBytes = 16;

std::string ChunkAad(const uint8_t* header, const Sha256Digest& digest) {
  std::string aad(reinterpret_cast<const char*>(header), kAadHeaderBytes);
  aad.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  return aad;
}

// Version 1 files checksum with zlib's CRC-32; version 2 (written now) with
// CRC-32C, which the CPU computes several times faster. Both stay readable.
uint32_t Checksum(uint16_t version, const void* data, size_t n) {
  if (version == 1) {
    return static_cast<uint32_t>(
        crc32_z(crc32_z(0, nullptr, 0), static_cast<const Bytef*>(data), n));
  }
  return Crc32c(data, n);
}

}  // namespace

ChunkStore::ChunkStore(std::string dir, ChunkIdFn id_fn, std::shared_ptr<const ChunkCipher> cipher)
    : dir_(std::move(dir)), id_fn_(std::move(id_fn)), cipher_(std::move(cipher)) {}

absl::Status ChunkStore::Init() {
  for (int i = 0; i < 256; ++i) {
    absl::Status s = MakeDirectories(absl::StrFormat("%s/%02x", dir_, i));
    if (!s.ok()) return s;
  }
  return FsyncDirectory(dir_);
}

std::string ChunkStore::DirOf(const Sha256Digest& d) const {
  return absl::StrFormat("%s/%02x", dir_, d[0]);
}

std::string ChunkStore::PathOf(const Sha256Digest& d) const {
  return absl::StrCat(DirOf(d), "/", DigestToHex(d));
}

bool ChunkStore::Contains(const Sha256Digest& digest) const {
  struct stat st;
  return ::stat(PathOf(digest).c_str(), &st) == 0;
}

absl::StatusOr<bool> ChunkStore::Put(const Sha256Digest& digest, uint32_t plain_length,
                                     StoredEncoding encoding, std::string_view stored) {
  const std::string path = PathOf(digest);
  if (Contains(digest)) return false;
  uint8_t header[kHeaderSize] = {};
  std::memcpy(header, kMagic, sizeof(kMagic));
  PutLe<uint16_t>(header + 8, kVersion);
  uint16_t flags = encoding == StoredEncoding::kZstd ? kFlagZstd : 0;
  if (cipher_) flags |= kFlagEncrypted;
  PutLe<uint16_t>(header + 10, flags);
  PutLe<uint32_t>(header + 12, plain_length);
  std::string sealed;
  if (cipher_) {
    BLKFLEET_RETURN_IF_ERROR(cipher_->Seal(ChunkAad(header, digest), stored, &sealed));
    stored = sealed;
  }
  PutLe<uint32_t>(header + 16, static_cast<uint32_t>(stored.size()));
  PutLe<uint32_t>(header + 20, Checksum(kVersion, stored.data(), stored.size()));
  PutLe<uint32_t>(header + 24, 0);
  PutLe<uint32_t>(header + 28, Checksum(kVersion, header, 28));

  const std::string dir = DirOf(digest);
  const std::string tmp = absl::StrCat(dir, "/.tmp-", Uuid::Random().ToString());
  bool direct = false;
  UniqueFd fd = OpenForWrite(tmp, O_CREAT | O_EXCL, 0600, /*try_direct=*/true, &direct);
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("create ", tmp));
  const std::string_view parts[2] = {
      std::string_view(reinterpret_cast<const char*>(header), kHeaderSize), stored};
  absl::Status s = WriteAt(fd.get(), direct, parts, 0, tmp);
  // A direct write was padded to the block size: cut the padding off.
  if (s.ok() && direct && ::ftruncate(fd.get(), static_cast<off_t>(kHeaderSize + stored.size())) != 0) {
    s = ErrnoStatus(errno, absl::StrCat("truncate ", tmp));
  }
  if (s.ok() && ::fchmod(fd.get(), 0444) != 0) s = ErrnoStatus(errno, absl::StrCat("chmod ", tmp));
  if (s.ok() && ::fdatasync(fd.get()) != 0) s = ErrnoStatus(errno, absl::StrCat("fsync ", tmp));
  if (s.ok() && ::close(fd.Release()) != 0) s = ErrnoStatus(errno, absl::StrCat("close ", tmp));
  bool written = false;
  if (s.ok()) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
      written = true;
    } else if (errno != EEXIST) {
      s = ErrnoStatus(errno, absl::StrCat("rename to ", path));
    }
  }
  if (!written) ::unlink(tmp.c_str());
  if (!s.ok()) return s;
  if (written) {
    absl::MutexLock l(&mu_);
    dirty_dirs_.insert(dir);
  }
  return written;
}

absl::Status ChunkStore::Get(const Sha256Digest& digest, ZstdCodec* codec,
                             std::string* plain) const {
  const std::string path = PathOf(digest);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("chunk ", DigestToHex(digest), " is missing (", path, ")"));
    return ErrnoStatus(errno, absl::StrCat("open chunk ", path));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", path));
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("chunk ", DigestToHex(digest), " is corrupt (", path,
                                            "): ", why));
  };
  if (static_cast<size_t>(st.st_size) < kHeaderSize) return corrupt("shorter than its header");
  // Reused per thread: restore reads many chunks of one size, and a fresh
  // buffer would be zero-filled every time.
  thread_local std::string buf;
  buf.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("read chunk ", path));
    }
    if (n == 0) return corrupt("file shrank while reading");
    done += static_cast<size_t>(n);
  }
  const uint8_t* h = reinterpret_cast<const uint8_t*>(buf.data());
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) return corrupt("bad magic");
  // The version picks the checksum, so it is read before the header check.
  const uint16_t version = GetLe<uint16_t>(h + 8);
  if (version < kOldestReadableVersion || version > kVersion) {
    return corrupt(absl::StrCat("unknown version ", version));
  }
  if (GetLe<uint32_t>(h + 28) != Checksum(version, h, 28)) return corrupt("header checksum mismatch");
  const uint16_t flags = GetLe<uint16_t>(h + 10);
  if ((flags & ~kKnownFlags) != 0) return corrupt(absl::StrCat("unknown flags ", flags));
  const uint32_t plain_length = GetLe<uint32_t>(h + 12);
  const uint32_t stored_length = GetLe<uint32_t>(h + 16);
  if (buf.size() - kHeaderSize != stored_length) return corrupt("stored length mismatch");
  std::string_view stored(buf.data() + kHeaderSize, stored_length);
  if (GetLe<uint32_t>(h + 20) != Checksum(version, stored.data(), stored.size())) {
    return corrupt("stored bytes checksum mismatch");
  }
  if ((flags & kFlagEncrypted) != 0) {
    if (!cipher_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "chunk ", DigestToHex(digest), " (", path,
          ") is encrypted and the repository was opened without its key"));
    }
    thread_local std::string opened;
    absl::Status s = cipher_->Open(ChunkAad(h, digest), stored, &opened);
    if (!s.ok()) return corrupt(std::string(s.message()));
    stored = opened;
  } else if (cipher_) {
    return corrupt("not encrypted, in an encrypted repository");
  }
  if ((flags & kFlagZstd) != 0) {
    absl::Status s = codec->Decompress(stored, plain_length, plain);
    if (!s.ok()) return corrupt(std::string(s.message()));
  } else {
    if (stored.size() != plain_length) return corrupt("raw chunk length mismatch");
    plain->assign(stored.data(), stored.size());
  }
  if (id_fn_(*plain) != digest) return corrupt("content does not match its digest");
  return absl::OkStatus();
}

absl::Status ChunkStore::ListFiles(
    const std::function<absl::Status(const FileEntry&)>& fn) const {
  for (int i = 0; i < 256; ++i) {
    const std::string dir = absl::StrFormat("%s/%02x", dir_, i);
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
    if (!d) return ErrnoStatus(errno, absl::StrCat("open directory ", dir));
    while (true) {
      errno = 0;
      const dirent* e = ::readdir(d.get());
      if (e == nullptr) {
        if (errno != 0) return ErrnoStatus(errno, absl::StrCat("read directory ", dir));
        break;
      }
      std::string_view name(e->d_name);
      FileEntry entry;
      if (name.rfind(".tmp-", 0) == 0) {
        entry.digest = std::nullopt;
      } else if (auto digest = DigestFromHex(name); digest && (*digest)[0] == i) {
        entry.digest = digest;
      } else {
        continue;
      }
      entry.path = absl::StrCat(dir, "/", e->d_name);
      BLKFLEET_RETURN_IF_ERROR(fn(entry));
    }
  }
  return absl::OkStatus();
}

absl::Status ChunkStore::SyncDirectories() {
  std::set<std::string> dirs;
  {
    absl::MutexLock l(&mu_);
    dirs.swap(dirty_dirs_);
  }
  for (const auto& d : dirs) {
    absl::Status s = FsyncDirectory(d);
    if (!s.ok()) {
      absl::MutexLock l(&mu_);
      dirty_dirs_.insert(dirs.begin(), dirs.end());
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace blkfleet::repo
