#include "server/restore_job.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/durable_file.h"
#include "common/status_util.h"
#include "common/unique_fd.h"
#include "common/uuid.h"
#include "server/repository/direct_io.h"

namespace blkfleet::server {
namespace {

bool AllZero(const std::string& s) {
  if (s.empty()) return true;
  if (s[0] != 0) return false;
  return std::memcmp(s.data(), s.data() + 1, s.size() - 1) == 0;
}

}  // namespace

absl::Status RunRestoreToFile(repo::Repository* repo, const RestoreFileRequest& req,
                              JobContext& ctx) {
  const v1::BackupDevice& dev = req.backup.devices(req.device_ordinal);
  ctx.SetPhase("reading index");
  auto sha = DigestFromBytes(dev.index_sha256());
  if (!sha) return absl::DataLossError("catalog holds a malformed index digest");
  BLKFLEET_ASSIGN_OR_RETURN(repo::DeviceIndex index,
                            repo->ReadIndex(req.backup.id(), req.device_ordinal, *sha));
  const uint64_t n = index.digests.size();
  ctx.SetTotals(index.device_size_bytes, n);

  std::filesystem::path target(req.file_path);
  const std::string dir = target.parent_path().string();
  const std::string tmp =
      absl::StrCat(dir, "/.", target.filename().string(), ".blkfleet-", Uuid::Random().ToString());
  // Chunk offsets are multiples of the chunk size: aligned for O_DIRECT
  // when the chunk size is.
  bool direct = false;
  UniqueFd fd = repo::OpenForWrite(tmp, O_CREAT | O_EXCL, 0600,
                                   index.chunk_size_bytes % repo::kDirectIoAlign == 0, &direct);
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("create ", tmp));
  bool keep_tmp = false;
  struct RemoveTmp {
    const std::string& path;
    bool& keep;
    ~RemoveTmp() {
      if (!keep) ::unlink(path.c_str());
    }
  } remove_tmp{tmp, keep_tmp};
  if (::ftruncate(fd.get(), static_cast<off_t>(index.device_size_bytes)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("size ", tmp));
  }

  ctx.SetPhase(absl::StrCat("restoring ", dev.device()));
  // Workers take chunk indexes in order, so reads run a few chunks ahead of
  // each other and the writes land roughly sequentially.
  std::atomic<uint64_t> next{0};
  absl::Mutex err_mu;
  absl::Status first_error;
  std::atomic<bool> failed{false};
  auto work = [&] {
    ZstdCodec codec;
    std::string plain;
    while (!failed.load() && !ctx.cancelled()) {
      uint64_t i = next.fetch_add(1);
      if (i >= n) return;
      const uint64_t offset = i * index.chunk_size_bytes;
      const uint64_t len =
          std::min<uint64_t>(index.chunk_size_bytes, index.device_size_bytes - offset);
      absl::Status s = repo->chunks().Get(index.digests[i], &codec, &plain);
      if (s.ok() && plain.size() != len) {
        s = absl::DataLossError(absl::StrCat("chunk ", i, " (", DigestToHex(index.digests[i]),
                                             ") holds ", plain.size(), " bytes, expected ", len));
      }
      // The file is sparse after ftruncate: zero chunks need no write.
      if (s.ok() && !AllZero(plain)) {
        const std::string_view part(plain);
        s = repo::WriteAt(fd.get(), direct, std::span<const std::string_view>(&part, 1), offset,
                          tmp);
      }
      if (!s.ok()) {
        absl::MutexLock l(&err_mu);
        if (first_error.ok()) {
          first_error = absl::Status(s.code(), absl::StrCat("chunk ", i, " of ", dev.device(),
                                                            ": ", std::string(s.message())));
        }
        failed = true;
        return;
      }
      ctx.AddDone(len, 1);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, req.reader_threads); ++t) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  if (!first_error.ok()) {
    return absl::Status(first_error.code(), absl::StrCat("restore of backup ", req.backup.id(),
                                                         " failed: ",
                                                         std::string(first_error.message())));
  }
  if (ctx.cancelled()) return absl::CancelledError("cancelled by request");

  ctx.SetPhase("sync");
  // Direct writes of a short last chunk were padded past the device's end.
  if (direct && ::ftruncate(fd.get(), static_cast<off_t>(index.device_size_bytes)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("size ", tmp));
  }
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, absl::StrCat("fsync ", tmp));
  if (::close(fd.Release()) != 0) return ErrnoStatus(errno, absl::StrCat("close ", tmp));
  int rc = req.overwrite ? ::rename(tmp.c_str(), req.file_path.c_str())
                         : ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, req.file_path.c_str(),
                                       RENAME_NOREPLACE);
  if (rc != 0) {
    if (errno == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat(req.file_path, " appeared during the restore; overwrite not set"));
    }
    return ErrnoStatus(errno, absl::StrCat("rename to ", req.file_path));
  }
  keep_tmp = true;
  BLKFLEET_RETURN_IF_ERROR(FsyncDirectory(dir.empty() ? "/" : dir));
  ctx.SetBackupId(req.backup.id());
  return absl::OkStatus();
}

}  // namespace blkfleet::server
