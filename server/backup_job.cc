// SPDX-License-Identifier: Apache-2.0
#include "server/server_metrics.h"
#include "server/backup_job.h"
#include "server/crash_point.h"

#include <algorithm>
#include <atomic>
#include <iostream>
#include <optional>
#include <thread>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/cbt_delta.h"
#include "common/status_util.h"
#include "common/uuid.h"
#include "server/chunk_intake.h"
#include "server/host_kernels.h"

namespace blkfleet::server {
namespace {

namespace av1 = ::blkfleet::agent::v1;
using DigestSet = std::unordered_set<Sha256Digest, Sha256DigestHash>;

void SetDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
}

absl::Status AgentError(const grpc::Status& s, const std::string& what) {
  absl::Status a = FromGrpcStatus(s);
  return absl::Status(a.code(), absl::StrCat(what, ": ", std::string(a.message())));
}

CbtPoint PointOf(const type::v1::CbtState& s) {
  CbtPoint p;
  if (auto g = Uuid::FromBytes(s.generation_id())) p.generation = *g;
  p.change_number = s.change_number();
  p.block_size_bytes = s.block_size_bytes();
  p.block_count = s.block_count();
  return p;
}

// Keeps a snapshot's lease alive from a background thread while the job runs.
class LeaseKeeper {
 public:
  LeaseKeeper(std::shared_ptr<av1::Agent::StubInterface> stub, std::string snapshot_id,
              const BackupOptions& opt)
      : stub_(std::move(stub)), id_(std::move(snapshot_id)), opt_(opt) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~LeaseKeeper() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  // Why the lease is lost, or OK.
  absl::Status lost() {
    absl::MutexLock l(&mu_);
    return lost_;
  }

 private:
  void Loop() {
    absl::Time expires = absl::Now() + absl::Milliseconds(opt_.lease_ms);
    while (true) {
      {
        absl::MutexLock l(&mu_);
        auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
        if (mu_.AwaitWithTimeout(absl::Condition(&stopped), opt_.lease_renew_interval)) return;
      }
      grpc::ClientContext ctx;
      SetDeadline(&ctx, std::min(opt_.rpc_timeout, opt_.lease_renew_interval));
      av1::RenewSnapshotLeaseRequest req;
      req.set_id(id_);
      req.set_lease_ms(opt_.lease_ms);
      av1::Snapshot resp;
      absl::Time sent = absl::Now();
      grpc::Status s = stub_->RenewSnapshotLease(&ctx, req, &resp);
      absl::MutexLock l(&mu_);
      if (s.ok()) {
        expires = sent + absl::Milliseconds(opt_.lease_ms);
      } else if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        lost_ = absl::AbortedError(
            absl::StrCat("snapshot ", id_, " is gone (lease expired or agent restarted)"));
        return;
      } else if (absl::Now() > expires) {
        lost_ = absl::AbortedError(absl::StrCat("lease of snapshot ", id_,
                                                " could not be renewed: ", s.error_message()));
        return;
      }
    }
  }

  std::shared_ptr<av1::Agent::StubInterface> stub_;
  const std::string id_;
  const BackupOptions opt_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status lost_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// One device of the backup: what to read and what was read.
struct DeviceWork {
  std::string device;
  av1::SnapshotDevice snap;
  uint32_t chunk_size = 0;
  uint64_t chunk_count = 0;
  std::optional<catalog::DeviceBackupRef> base;
  std::vector<Sha256Digest> base_digests;
  bool full = true;
  std::string full_reason;
  std::vector<ChunkSpan> spans;
  uint64_t chunks_to_read = 0;
  uint64_t bytes_to_read = 0;
  // Results.
  repo::DeviceIndex index;
  uint64_t chunks_read = 0;
  uint64_t chunks_new = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_received = 0;
};

class BackupRun {
 public:
  BackupRun(const BackupDeps& deps, const BackupRequest& req, JobContext& ctx)
      : deps_(deps),
        req_(req),
        ctx_(ctx),
        stub_(deps.agents->Stub(req.host.agent_address())),
        pins_(ChunkPins::Hold(deps.pins)) {}

  absl::Status Execute();
  // After a failed Execute: whether the failure lost the snapshot itself (the
  // agent restarted or is unreachable), so that a new snapshot may succeed.
  bool snapshot_lost() const { return snapshot_lost_; }

 private:
  absl::Status Body();
  // Asks the agent whether the job's snapshot still exists.
  bool SnapshotGone();
  // Asks the agent for its kernel report and keeps it (Host.kernel, the
  // module metrics); a failure here is not the backup's.
  void RefreshKernelReport();
  absl::Status CreateSnapshot();
  void DestroySnapshot();
  absl::Status Plan(DeviceWork& w);
  absl::Status ReadCbtMap(const DeviceWork& w, std::string* map);
  absl::Status Stream(DeviceWork& w);
  // One StreamImage call from `resume_from`; advances *resume_from past every
  // chunk received.
  absl::Status StreamOnce(DeviceWork& w, std::vector<uint8_t>& wanted, DigestSet& known,
                          ChunkIntake& intake, uint64_t* resume_from, uint64_t* remaining);
  absl::Status Commit(std::vector<DeviceWork>& work);
  absl::Status CheckAlive();
  std::string Where() const { return absl::StrCat("host ", req_.host.name()); }

  const BackupDeps& deps_;
  const BackupRequest& req_;
  JobContext& ctx_;
  std::shared_ptr<av1::Agent::StubInterface> stub_;
  ChunkPins::Holder pins_;
  av1::Snapshot snapshot_;
  std::unique_ptr<LeaseKeeper> lease_;
  absl::Time start_time_;
  bool snapshot_lost_ = false;
  absl::Mutex call_mu_;
  grpc::ClientContext* call_ ABSL_GUARDED_BY(call_mu_) = nullptr;
};

absl::Status BackupRun::CheckAlive() {
  if (ctx_.cancelled()) return absl::CancelledError("cancelled by request");
  if (lease_) BLKFLEET_RETURN_IF_ERROR(lease_->lost());
  return absl::OkStatus();
}

void BackupRun::RefreshKernelReport() {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::min(deps_.options.rpc_timeout, absl::Seconds(5)));
  av1::GetAgentInfoRequest req;
  av1::AgentInfo info;
  if (!stub_->GetAgentInfo(&ctx, req, &info).ok()) return;
  absl::Status st = RecordHostKernels(
      deps_.catalog,
      {{req_.host.name(), info.kernel(), absl::ToUnixMicros(deps_.clock->Now())}});
  if (!st.ok()) std::cerr << "blkfleet-server: kernel report of " << Where() << ": " << st << "\n";
}

absl::Status BackupRun::CreateSnapshot() {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deps_.options.rpc_timeout);
  av1::CreateSnapshotRequest req;
  for (const auto& d : req_.devices) req.add_devices(d);
  req.set_lease_ms(deps_.options.lease_ms);
  req.set_request_id(Uuid::Random().ToString());
  grpc::Status s = stub_->CreateSnapshot(&ctx, req, &snapshot_);
  if (!s.ok()) return AgentError(s, absl::StrCat("create snapshot on ", Where()));
  if (snapshot_.state() != av1::SNAPSHOT_STATE_ACTIVE) {
    return absl::AbortedError(absl::StrCat("snapshot ", snapshot_.id(), " on ", Where(),
                                           " is not active: ", snapshot_.error()));
  }
  return absl::OkStatus();
}

void BackupRun::DestroySnapshot() {
  lease_.reset();
  if (snapshot_.id().empty()) return;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deps_.options.rpc_timeout);
  av1::DestroySnapshotRequest req;
  req.set_id(snapshot_.id());
  req.set_allow_missing(true);
  av1::DestroySnapshotResponse resp;
  grpc::Status s = stub_->DestroySnapshot(&ctx, req, &resp);
  if (!s.ok()) {
    // Still recorded as held: the next server start or the lease ends it;
    // the backup itself is not affected.
    std::cerr << "job " << ctx_.id() << ": destroy snapshot " << snapshot_.id() << " on "
              << Where() << ": " << s.error_message() << "\n";
    return;
  }
  if (absl::Status f = deps_.catalog->ForgetHeldSnapshot(snapshot_.id()); !f.ok()) {
    std::cerr << "job " << ctx_.id() << ": forget held snapshot " << snapshot_.id() << ": " << f
              << "\n";
  }
}

absl::Status BackupRun::ReadCbtMap(const DeviceWork& w, std::string* map) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deps_.options.rpc_timeout);
  av1::ReadCbtMapRequest req;
  req.set_snapshot_id(snapshot_.id());
  req.set_device(w.device);
  auto reader = stub_->ReadCbtMap(&ctx, req);
  const uint32_t blocks = w.snap.cbt().block_count();
  map->assign(blocks, '\0');
  uint64_t filled = 0;
  av1::ReadCbtMapResponse resp;
  bool first = true;
  while (reader->Read(&resp)) {
    if (first && resp.has_cbt()) {
      if (resp.cbt().generation_id() != w.snap.cbt().generation_id() ||
          resp.cbt().change_number() != w.snap.cbt().change_number() ||
          resp.cbt().block_count() != blocks) {
        return absl::FailedPreconditionError(
            absl::StrCat("CBT map of ", w.device, " does not belong to the snapshot's CBT state"));
      }
    }
    first = false;
    const uint64_t at = resp.first_block();
    if (at + resp.map().size() > blocks) {
      return absl::OutOfRangeError(absl::StrCat("CBT map of ", w.device, ": piece beyond block ",
                                                blocks));
    }
    std::copy(resp.map().begin(), resp.map().end(), map->begin() + static_cast<ptrdiff_t>(at));
    filled += resp.map().size();
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return AgentError(s, absl::StrCat("read CBT map of ", w.device, " on ", Where()));
  if (filled != blocks) {
    return absl::DataLossError(absl::StrCat("CBT map of ", w.device, ": received ", filled,
                                            " of ", blocks, " blocks"));
  }
  return absl::OkStatus();
}

absl::Status BackupRun::Plan(DeviceWork& w) {
  const std::string& dev = w.device;
  auto it = std::find_if(snapshot_.devices().begin(), snapshot_.devices().end(),
                         [&](const av1::SnapshotDevice& d) { return d.device() == dev; });
  if (it == snapshot_.devices().end()) {
    return absl::InternalError(absl::StrCat("snapshot ", snapshot_.id(), " lacks device ", dev));
  }
  w.snap = *it;
  BLKFLEET_ASSIGN_OR_RETURN(w.base, deps_.catalog->LatestDeviceBackup(req_.host.name(), dev));
  std::optional<CbtDeviceView> base_view;
  if (w.base.has_value()) {
    auto sha = DigestFromBytes(w.base->device.index_sha256());
    if (!sha) return absl::DataLossError(absl::StrCat("backup ", w.base->backup_id, ": bad index digest"));
    BLKFLEET_ASSIGN_OR_RETURN(repo::DeviceIndex base_index,
                              deps_.repo->ReadIndex(w.base->backup_id, w.base->ordinal, *sha));
    base_view = base_index.View();
    w.base_digests = std::move(base_index.digests);
    // The base's chunks are reused without being sent again: keep them from
    // a collector even if the base backup is deleted meanwhile.
    pins_.PinAll(w.base_digests);
    w.chunk_size = base_index.chunk_size_bytes;  // a device keeps its chunk size
  } else {
    w.chunk_size = req_.chunk_size_bytes != 0 ? req_.chunk_size_bytes : kDefaultChunkSize;
  }
  const uint64_t size = w.snap.size_bytes();
  CbtDeviceView now{size, w.chunk_size, PointOf(w.snap.cbt())};
  w.chunk_count = ChunkCount(size, w.chunk_size);
  std::optional<std::string> reason =
      req_.force_full ? std::optional<std::string>("full backup requested")
                      : FullReadReason(base_view, now);
  w.full = reason.has_value();
  if (w.full) {
    w.full_reason = *reason;
    if (w.chunk_count > 0) w.spans = {ChunkSpan{0, w.chunk_count}};
  } else {
    ctx_.SetPhase(absl::StrCat("reading CBT map of ", dev));
    std::string map;
    BLKFLEET_RETURN_IF_ERROR(ReadCbtMap(w, &map));
    BLKFLEET_ASSIGN_OR_RETURN(
        w.spans, ChangedChunks({reinterpret_cast<const uint8_t*>(map.data()), map.size()}, now,
                               base_view->cbt.change_number));
  }
  w.chunks_to_read = CountChunks(w.spans);
  for (const auto& s : w.spans) {
    uint64_t end = std::min<uint64_t>((s.first + s.count) * w.chunk_size, size);
    w.bytes_to_read += end - s.first * w.chunk_size;
  }
  // The new index starts as the base (unchanged chunks keep their digests).
  w.index.device_size_bytes = size;
  w.index.chunk_size_bytes = w.chunk_size;
  w.index.cbt = now.cbt;
  if (!w.full || (base_view && base_view->device_size_bytes == size &&
                  base_view->chunk_size_bytes == w.chunk_size)) {
    w.index.digests = w.base_digests;
  }
  w.index.digests.resize(w.chunk_count);
  return absl::OkStatus();
}

absl::Status BackupRun::StreamOnce(DeviceWork& w, std::vector<uint8_t>& wanted, DigestSet& known,
                                   ChunkIntake& intake, uint64_t* resume_from,
                                   uint64_t* remaining) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Hours(24));
  {
    absl::MutexLock l(&call_mu_);
    call_ = &ctx;
  }
  ctx_.SetCancelHook([this] {
    absl::MutexLock l(&call_mu_);
    if (call_ != nullptr) call_->TryCancel();
  });
  struct Unhook {
    BackupRun* run;
    ~Unhook() {
      run->ctx_.SetCancelHook(nullptr);
      absl::MutexLock l(&run->call_mu_);
      run->call_ = nullptr;
    }
  } unhook{this};

  auto stream = stub_->StreamImage(&ctx);
  av1::StreamImageRequest req;
  auto* start = req.mutable_start();
  start->set_snapshot_id(snapshot_.id());
  start->set_device(w.device);
  start->set_chunk_size_bytes(w.chunk_size);
  const bool every_chunk = w.full && w.spans.size() == 1 && w.spans[0].first == 0 &&
                           w.spans[0].count == w.chunk_count;
  if (!every_chunk) {
    for (const auto& s : w.spans) {
      auto* r = start->add_ranges();
      r->set_first(s.first);
      r->set_count(s.count);
    }
  }
  start->set_resume_from_chunk(*resume_from);
  // Encrypted repository: the agent computes the keyed chunk ids itself so
  // that known_digests dedup still works (docs/security.md).
  start->set_chunk_id_key(deps_.repo->chunks().id_fn().KeyBytes());
  bool ok = stream->Write(req);
  constexpr int kBatch = 8192;
  req.Clear();
  for (const auto& d : known) {
    if (!ok) break;
    req.mutable_known_digests()->add_sha256(DigestToBytes(d));
    if (req.known_digests().sha256_size() == kBatch) {
      ok = stream->Write(req);
      req.Clear();
    }
  }
  if (ok && req.has_known_digests()) ok = stream->Write(req);
  req.Clear();
  req.set_known_digests_done(true);
  if (ok) ok = stream->Write(req);
  if (ok) stream->WritesDone();

  av1::StreamImageResponse resp;
  bool summary = false;
  absl::Status bad;
  while (bad.ok() && stream->Read(&resp)) {
    if (resp.has_summary()) {
      summary = true;
      continue;
    }
    if (!resp.has_chunk()) continue;
    av1::ImageChunk* c = resp.mutable_chunk();
    const uint64_t i = c->index();
    if (i >= w.chunk_count || !wanted[i] || i < *resume_from) {
      bad = absl::DataLossError(absl::StrCat("agent sent chunk ", i, " of ", w.device,
                                             ", which was not requested"));
      break;
    }
    const uint64_t offset = i * w.chunk_size;
    const uint64_t len = std::min<uint64_t>(w.chunk_size, w.snap.size_bytes() - offset);
    auto digest = DigestFromBytes(c->sha256());
    if (!digest || c->offset_bytes() != offset || c->length_bytes() != len) {
      bad = absl::DataLossError(absl::StrCat("agent sent a malformed chunk ", i, " of ", w.device));
      break;
    }
    uint64_t rc_bytes = 0;  // payload received with this chunk
    if (c->encoding() == type::v1::CHUNK_ENCODING_DIGEST_ONLY) {
      if (known.count(*digest) == 0) {
        bad = absl::DataLossError(absl::StrCat("agent sent only the digest of chunk ", i, " of ",
                                               w.device, ", which the server does not hold"));
        break;
      }
    } else {
      rc_bytes = c->data().size();
      w.chunks_new += 1;
      w.bytes_received += c->data().size();
      known.insert(*digest);
      // Before the store looks for the file: a collector either sees the pin
      // or has removed the file already, which the store then writes anew.
      pins_.Pin(*digest);
      ReceivedChunk rc;
      rc.index = i;
      rc.digest = *digest;
      rc.length = static_cast<uint32_t>(len);
      rc.encoding = c->encoding();
      rc.data = std::move(*c->mutable_data());
      bad = intake.Submit(std::move(rc));
      if (!bad.ok()) break;
    }
    w.index.digests[i] = *digest;
    wanted[i] = 0;
    w.chunks_read += 1;
    w.bytes_read += len;
    metrics::ChunkIngested(rc_bytes, len);
    *remaining -= 1;
    *resume_from = i + 1;
    ctx_.AddDone(len, 1);
  }
  if (!bad.ok()) {
    ctx.TryCancel();
    stream->Finish().ok();
    return bad;
  }
  grpc::Status s = stream->Finish();
  if (!s.ok()) return AgentError(s, absl::StrCat("stream ", w.device, " from ", Where()));
  if (!summary || *remaining != 0) {
    return absl::UnavailableError(absl::StrCat("stream of ", w.device, " from ", Where(),
                                               " ended early: ", *remaining,
                                               " requested chunks missing"));
  }
  return absl::OkStatus();
}

bool Retriable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsUnknown(s) ||
         absl::IsCancelled(s);
}

absl::Status BackupRun::Stream(DeviceWork& w) {
  ctx_.SetPhase(absl::StrCat("reading ", w.device));
  std::vector<uint8_t> wanted(w.chunk_count, 0);
  for (const auto& s : w.spans) std::fill_n(wanted.begin() + s.first, s.count, 1);
  DigestSet known(w.base_digests.begin(), w.base_digests.end());
  ChunkIntake intake(&deps_.repo->chunks(), deps_.options.intake_threads,
                     static_cast<size_t>(deps_.options.intake_queue));
  uint64_t resume_from = 0;
  uint64_t remaining = w.chunks_to_read;
  int fruitless = 0;
  absl::Duration backoff = deps_.options.retry_backoff;
  while (remaining > 0) {
    BLKFLEET_RETURN_IF_ERROR(CheckAlive());
    const uint64_t before = remaining;
    absl::Status s = StreamOnce(w, wanted, known, intake, &resume_from, &remaining);
    if (s.ok()) break;
    BLKFLEET_RETURN_IF_ERROR(CheckAlive());
    if (!Retriable(s)) return s;
    if (remaining < before) {
      fruitless = 0;
      backoff = deps_.options.retry_backoff;
    } else if (++fruitless > deps_.options.max_stream_retries) {
      return absl::UnavailableError(absl::StrCat("giving up on ", w.device, " after ",
                                                 fruitless, " failed resumes: ",
                                                 std::string(s.message())));
    }
    ctx_.AddAttempt();
    std::cerr << "job " << ctx_.id() << ": " << s << "; resuming " << w.device << " at chunk "
              << resume_from << "\n";
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
  BLKFLEET_RETURN_IF_ERROR(intake.Drain());
  return absl::OkStatus();
}

absl::Status BackupRun::Commit(std::vector<DeviceWork>& work) {
  ctx_.SetPhase("commit");
  // Every chunk an index will name must be durable before the index is.
  CrashPoint("backup.before_chunk_sync");
  BLKFLEET_RETURN_IF_ERROR(deps_.repo->chunks().SyncDirectories());
  BLKFLEET_ASSIGN_OR_RETURN(std::string id, deps_.catalog->AllocateBackupId());
  v1::Backup b;
  b.set_id(id);
  b.set_host(req_.host.name());
  b.set_snapshot_id(snapshot_.id());
  SetTimestamp(start_time_, b.mutable_start_time());
  const absl::Time now = deps_.clock->Now();
  for (size_t i = 0; i < work.size(); ++i) {
    DeviceWork& w = work[i];
    w.index.create_time_unix_micros = absl::ToUnixMicros(now);
    BLKFLEET_ASSIGN_OR_RETURN(Sha256Digest sha,
                              deps_.repo->WriteIndex(id, static_cast<int>(i), w.index));
    v1::BackupDevice* d = b.add_devices();
    d->set_device(w.device);
    d->set_size_bytes(w.snap.size_bytes());
    d->set_chunk_size_bytes(w.chunk_size);
    d->set_kind(w.full ? v1::BACKUP_KIND_FULL : v1::BACKUP_KIND_INCREMENTAL);
    *d->mutable_cbt() = w.snap.cbt();
    if (!w.full && w.base) d->set_base_backup_id(w.base->backup_id);
    d->set_chunks_total(w.chunk_count);
    d->set_chunks_read(w.chunks_read);
    d->set_chunks_new(w.chunks_new);
    d->set_bytes_read(w.bytes_read);
    d->set_bytes_received(w.bytes_received);
    d->set_index_sha256(DigestToBytes(sha));
    CrashPoint("backup.after_index");
  }
  SetTimestamp(now, b.mutable_end_time());
  BLKFLEET_ASSIGN_OR_RETURN(Sha256Digest manifest_sha, deps_.repo->WriteManifest(b));
  CrashPoint("backup.before_catalog_commit");
  BLKFLEET_RETURN_IF_ERROR(CheckAlive());
  // The commit point: from here on the backup exists.
  BLKFLEET_RETURN_IF_ERROR(deps_.catalog->CommitBackup(b, manifest_sha));
  ctx_.SetBackupId(id);
  for (const auto& w : work) metrics::BackupSucceeded(req_.host.name(), w.device, now);
  return absl::OkStatus();
}

bool BackupRun::SnapshotGone() {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::min(deps_.options.rpc_timeout, absl::Seconds(10)));
  av1::GetSnapshotRequest req;
  req.set_id(snapshot_.id());
  av1::Snapshot resp;
  grpc::Status s = stub_->GetSnapshot(&ctx, req, &resp);
  return s.error_code() == grpc::StatusCode::NOT_FOUND ||
         s.error_code() == grpc::StatusCode::UNAVAILABLE;
}

absl::Status BackupRun::Execute() {
  start_time_ = deps_.clock->Now();
  ctx_.SetPhase("snapshot");
  RefreshKernelReport();
  if (absl::Status s = CreateSnapshot(); !s.ok()) {
    snapshot_lost_ = absl::IsUnavailable(s);  // the agent is restarting or unreachable
    return s;
  }
  lease_ = std::make_unique<LeaseKeeper>(stub_, snapshot_.id(), deps_.options);
  struct Cleanup {
    BackupRun* run;
    ~Cleanup() { run->DestroySnapshot(); }
  } cleanup{this};
  // Recorded until destroyed: a server killed meanwhile releases it at its
  // next start (server/snapshot_release.h). Unrecorded, it is not kept.
  catalog::HeldSnapshot held{snapshot_.id(), ctx_.id(), req_.host.name(),
                             req_.host.agent_address(),
                             static_cast<int64_t>(deps_.options.lease_ms)};
  BLKFLEET_RETURN_IF_ERROR(deps_.catalog->RecordHeldSnapshot(held));
  absl::Status s = Body();
  if (!s.ok() && !absl::IsCancelled(s)) snapshot_lost_ = SnapshotGone();
  return s;
}

absl::Status BackupRun::Body() {
  std::vector<DeviceWork> work(req_.devices.size());
  uint64_t bytes_total = 0, chunks_total = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    BLKFLEET_RETURN_IF_ERROR(CheckAlive());
    work[i].device = req_.devices[i];
    ctx_.SetPhase(absl::StrCat("planning ", work[i].device));
    absl::Status s = Plan(work[i]);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat(work[i].device, ": ", std::string(s.message())));
    }
    bytes_total += work[i].bytes_to_read;
    chunks_total += work[i].chunks_to_read;
  }
  ctx_.SetTotals(bytes_total, chunks_total);
  for (auto& w : work) BLKFLEET_RETURN_IF_ERROR(Stream(w));
  BLKFLEET_RETURN_IF_ERROR(CheckAlive());
  return Commit(work);
}

}  // namespace

absl::Status RunBackup(const BackupDeps& deps, const BackupRequest& request, JobContext& ctx) {
  absl::Status s;
  absl::Duration backoff = deps.options.snapshot_retry_backoff;
  for (int attempt = 1;; ++attempt) {
    // The agent may be back on another address (re-registered host).
    BackupRequest req = request;
    if (attempt > 1) {
      if (auto host = deps.catalog->GetHost(request.host.name()); host.ok()) req.host = *host;
    }
    BackupRun run(deps, req, ctx);
    s = run.Execute();
    if (s.ok() || absl::IsCancelled(s) || !run.snapshot_lost() ||
        attempt >= deps.options.max_snapshot_attempts) {
      break;
    }
    // Chunks stored by the lost attempt stay in the store (gc removes them
    // if nothing ends up using them); a new snapshot starts over.
    std::cerr << "job " << ctx.id() << ": attempt " << attempt << " lost its snapshot (" << s
              << "); new snapshot in " << absl::FormatDuration(backoff) << "\n";
    ctx.AddAttempt();
    ctx.SetPhase(absl::StrCat("retrying after: ", s.message()));
    for (absl::Time until = absl::Now() + backoff; absl::Now() < until && !ctx.cancelled();) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (ctx.cancelled()) return absl::CancelledError("cancelled by request");
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
  if (!s.ok() && !absl::IsCancelled(s)) {
    return absl::Status(s.code(), absl::StrCat("backup of host ", request.host.name(),
                                               " failed: ", std::string(s.message())));
  }
  return s;
}

}  // namespace blkfleet::server
