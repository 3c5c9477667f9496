// SPDX-License-Identifier: Apache-2.0
#include "tests/tools/repo_builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/status_util.h"
#include "common/durable_file.h"
#include "common/unique_fd.h"
#include "common/zstd_codec.h"

namespace blkfleet::testing {

namespace v1 = blkfleet::server::v1;

absl::StatusOr<v1::Backup> WriteBackupFromImage(repo::Repository* repo,
                                                const std::string& image_path,
                                                const BackupSpec& spec) {
  UniqueFd fd(::open(image_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", image_path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", image_path));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint32_t cs = spec.chunk_size_bytes;
  repo::DeviceIndex index;
  index.device_size_bytes = size;
  index.chunk_size_bytes = cs;
  index.create_time_unix_micros = absl::ToUnixMicros(absl::Now());
  index.digest_algorithm =
      repo->encrypted() ? repo::kIndexDigestHmacSha256 : repo::kIndexDigestSha256;
  const ChunkIdFn& id = repo->chunks().id_fn();
  ZstdCodec codec;
  std::string buf, frame;
  for (uint64_t off = 0; off < size; off += cs) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(cs, size - off));
    // A chunk wholly inside a hole is zeros without reading it.
    const off_t data = ::lseek(fd.get(), static_cast<off_t>(off), SEEK_DATA);
    buf.assign(len, '\0');
    if (data >= 0 && static_cast<uint64_t>(data) < off + len) {
      if (::pread(fd.get(), buf.data(), len, static_cast<off_t>(off)) !=
          static_cast<ssize_t>(len)) {
        return ErrnoStatus(errno, absl::StrCat("read ", image_path, " at ", off));
      }
    }
    const Sha256Digest d = id(buf);
    BLKFLEET_RETURN_IF_ERROR(
        codec.Compress({reinterpret_cast<const uint8_t*>(buf.data()), buf.size()}, 1, &frame));
    BLKFLEET_RETURN_IF_ERROR(
        repo->chunks().Put(d, len, repo::StoredEncoding::kZstd, frame).status());
    index.digests.push_back(d);
  }
  BLKFLEET_RETURN_IF_ERROR(repo->chunks().SyncDirectories());
  BLKFLEET_ASSIGN_OR_RETURN(Sha256Digest sha, repo->WriteIndex(spec.backup_id, 0, index));
  v1::Backup b;
  b.set_id(spec.backup_id);
  b.set_host(spec.host);
  v1::BackupDevice* dev = b.add_devices();
  dev->set_device(spec.device);
  dev->set_size_bytes(size);
  dev->set_chunk_size_bytes(cs);
  dev->set_kind(v1::BACKUP_KIND_FULL);
  dev->set_chunks_total(index.digests.size());
  dev->set_index_sha256(DigestToBytes(sha));
  BLKFLEET_RETURN_IF_ERROR(repo->WriteManifest(b).status());
  return b;
}

}  // namespace blkfleet::testing
