// SPDX-License-Identifier: Apache-2.0
#include "server/restore_job.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/durable_file.h"
#include "common/zstd_codec.h"
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

absl::Status RunRestoreToHostDevice(repo::Repository* repo, AgentConnector* agents,
                                    const RestoreHostRequest& req, JobContext& ctx) {
  const v1::BackupDevice& dev = req.backup.devices(req.device_ordinal);
  const std::string target = absl::StrCat(req.host, ":", req.target_device);
  ctx.SetPhase("reading index");
  auto sha = DigestFromBytes(dev.index_sha256());
  if (!sha) return absl::DataLossError("catalog holds a malformed index digest");
  BLKFLEET_ASSIGN_OR_RETURN(repo::DeviceIndex index,
                            repo->ReadIndex(req.backup.id(), req.device_ordinal, *sha));
  const uint64_t n = index.digests.size();
  const uint64_t cs = index.chunk_size_bytes;
  ctx.SetTotals(index.device_size_bytes, n);

  // The call context is shared with the cancel hook, which may run on
  // another thread after this function returned.
  auto call = std::make_shared<grpc::ClientContext>();
  ctx.SetCancelHook([call] { call->TryCancel(); });
  struct ClearHook {
    JobContext& ctx;
    ~ClearHook() { ctx.SetCancelHook([] {}); }
  } clear_hook{ctx};
  agent::v1::WriteImageResponse resp;
  std::unique_ptr<grpc::ClientWriterInterface<agent::v1::WriteImageRequest>> stream =
      agents->Stub(req.agent_address)->WriteImage(call.get(), &resp);
  ctx.SetPhase(absl::StrCat("restoring ", dev.device(), " onto ", target));
  {
    agent::v1::WriteImageRequest start;
    start.mutable_start()->set_device(req.target_device);
    start.mutable_start()->set_size_bytes(index.device_size_bytes);
    start.mutable_start()->set_chunk_size_bytes(static_cast<uint32_t>(cs));
    stream->Write(start);  // a refusal shows in Finish
  }

  // Readers fill `ready` with chunks [sent, sent + window); the sender takes
  // them out in index order.
  absl::Mutex mu;
  std::map<uint64_t, agent::v1::WriteImageRequest> ready;  // guarded by mu
  uint64_t sent = 0;  // guarded by mu
  absl::Status read_error;  // guarded by mu
  bool stop = false;  // guarded by mu
  std::atomic<uint64_t> next{0};
  const uint64_t window = static_cast<uint64_t>(std::max(1, req.window_chunks));
  auto reader = [&] {
    ZstdCodec codec;
    std::string plain, packed;
    for (;;) {
      const uint64_t i = next.fetch_add(1);
      if (i >= n) return;
      {
        absl::MutexLock l(&mu);
        auto room = [&] { return stop || i < sent + window; };
        mu.Await(absl::Condition(&room));
        if (stop) return;
      }
      const uint64_t offset = i * cs;
      const uint64_t len = std::min<uint64_t>(cs, index.device_size_bytes - offset);
      absl::Status st = repo->chunks().Get(index.digests[i], &codec, &plain);
      if (st.ok() && plain.size() != len) {
        st = absl::DataLossError(absl::StrCat("holds ", plain.size(), " bytes, expected ", len));
      }
      agent::v1::WriteImageRequest msg;
      if (st.ok()) {
        agent::v1::ImageChunk* c = msg.mutable_chunk();
        c->set_index(i);
        c->set_offset_bytes(offset);
        c->set_length_bytes(static_cast<uint32_t>(len));
        // The agent checks SHA-256 of the plain data; in an encrypted
        // repository the chunk id is an HMAC it cannot compute.
        c->set_sha256(DigestToBytes(repo->chunks().encrypted() ? Sha256(plain)
                                                               : index.digests[i]));
        const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(plain.data()),
                                             plain.size());
        if (codec.Compress(bytes, req.zstd_level, &packed).ok() && packed.size() < plain.size()) {
          c->set_encoding(type::v1::CHUNK_ENCODING_ZSTD);
          c->set_data(std::move(packed));
        } else {
          c->set_encoding(type::v1::CHUNK_ENCODING_RAW);
          c->set_data(std::move(plain));
        }
        plain.clear();
        packed.clear();
      }
      absl::MutexLock l(&mu);
      if (!st.ok()) {
        if (read_error.ok()) {
          read_error = absl::Status(
              st.code(), absl::StrCat("chunk ", i, " (", DigestToHex(index.digests[i]), ") of ",
                                      dev.device(), ": ", std::string(st.message())));
        }
        stop = true;
        return;
      }
      ready.emplace(i, std::move(msg));
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, req.reader_threads); ++t) threads.emplace_back(reader);

  bool stream_broken = false;
  for (uint64_t i = 0; i < n; ++i) {
    agent::v1::WriteImageRequest msg;
    {
      absl::MutexLock l(&mu);
      auto have = [&] { return stop || ready.contains(i); };
      mu.Await(absl::Condition(&have));
      if (stop) break;
      auto it = ready.find(i);
      msg = std::move(it->second);
      ready.erase(it);
    }
    const uint64_t len = msg.chunk().length_bytes();
    if (!stream->Write(msg)) {
      stream_broken = true;
      break;
    }
    {
      absl::MutexLock l(&mu);
      sent = i + 1;
    }
    ctx.AddDone(len, 1);
  }
  absl::Status failed_read;
  {
    absl::MutexLock l(&mu);
    stop = true;
    failed_read = read_error;
  }
  for (auto& t : threads) t.join();
  if (!failed_read.ok() || ctx.cancelled()) {
    // Abort the call: the agent must not flush a partial image as if whole.
    call->TryCancel();
    stream->Finish().IgnoreError();
    if (ctx.cancelled()) {
      return absl::CancelledError(
          absl::StrCat("cancelled by request; ", target, " holds a partial image"));
    }
    return absl::Status(failed_read.code(),
                        absl::StrCat("restore of backup ", req.backup.id(), " onto ", target,
                                     " failed: ", std::string(failed_read.message()), "; ",
                                     req.target_device, " holds a partial image"));
  }
  if (!stream_broken) stream->WritesDone();
  ctx.SetPhase("flush");
  grpc::Status done = stream->Finish();
  if (!done.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(done.error_code()),
                        absl::StrCat("agent of ", req.host, ": WriteImage onto ",
                                     req.target_device, ": ", done.error_message()));
  }
  if (resp.bytes_written() != index.device_size_bytes) {
    return absl::DataLossError(absl::StrCat("agent of ", req.host, " wrote ",
                                            resp.bytes_written(), " of ",
                                            index.device_size_bytes, " bytes"));
  }
  ctx.SetBackupId(req.backup.id());
  ctx.SetSummary(absl::StrCat("restored ", dev.device(), " of backup ", req.backup.id(), " onto ",
                              target, " (", resp.bytes_written(), " bytes)"));
  return absl::OkStatus();
}

}  // namespace blkfleet::server
