// SPDX-License-Identifier: Apache-2.0
#include "agent/agent_service.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"
#include "agent/agent_metrics.h"
#include "agent/diff_storage_policy.h"
#include "agent/kernel_probe.h"
#include "common/status_util.h"
#include "common/zstd_codec.h"

namespace blkfleet::agent {
namespace {

constexpr uint64_t kMinLeaseMs = 1'000;
constexpr uint64_t kMaxLeaseMs = 86'400'000;
constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxRequestIdBytes = 128;
constexpr uint32_t kCbtPieceBlocks = 1 << 20;

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1'000'000'000);
  ts.set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
  return ts;
}

absl::StatusOr<Uuid> ParseId(const std::string& field, const std::string& text) {
  std::optional<Uuid> id = Uuid::Parse(text);
  if (!id || text.size() != 36) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", text.substr(0, 64), "\" is not a 36-character snapshot id"));
  }
  return *id;
}

absl::Status CheckLease(const std::string& field, uint64_t lease_ms) {
  if (lease_ms < kMinLeaseMs || lease_ms > kMaxLeaseMs) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", lease_ms, " is outside ", kMinLeaseMs, " .. ", kMaxLeaseMs));
  }
  return absl::OkStatus();
}

blkfleet::type::v1::CbtState ToCbtState(const CbtInfo& info) {
  blkfleet::type::v1::CbtState s;
  s.set_generation_id(info.generation_id.ToBytes());
  s.set_change_number(info.change_number);
  s.set_block_size_bytes(info.block_size_bytes);
  s.set_block_count(info.block_count);
  return s;
}

}  // namespace

AgentService::AgentService(Backend* backend, AgentServiceOptions options)
    : backend_(backend),
      options_(std::move(options)),
      start_time_(options_.clock->Now()),
      pool_(options_.stream_threads) {
  backend_->SetEventHandler([this](const BackendEvent& e) { OnBackendEvent(e); });
  if (auto ids = backend_->ListSnapshots(); ids.ok()) {
    for (const Uuid& id : *ids) (void)backend_->DestroySnapshot(id);
  }
  if (options_.lease_check_interval > absl::ZeroDuration()) {
    lease_thread_ = std::thread([this] {
      while (!stop_.WaitForNotificationWithTimeout(options_.lease_check_interval)) {
        ExpireLeases();
      }
    });
  }
}

AgentService::~AgentService() {
  Shutdown();
  backend_->SetEventHandler(nullptr);
}

void AgentService::Shutdown() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (lease_thread_.joinable()) lease_thread_.join();
  events_.Shutdown();
}

void AgentService::OnBackendEvent(const BackendEvent& e) {
  v1::SnapshotEvent ev;
  ev.set_snapshot_id(e.snapshot_id.ToString());
  ev.set_kind(e.kind == BackendEvent::Kind::kNoSpace ? v1::SNAPSHOT_EVENT_KIND_NO_SPACE
                                                     : v1::SNAPSHOT_EVENT_KIND_CORRUPTED);
  *ev.mutable_time() = ToTimestamp(e.time);
  ev.set_device(e.device);
  ev.set_error_code(e.error_code);
  ev.set_requested_bytes(e.requested_bytes);
  ev.set_message(e.message);
  metrics::SnapshotEvent(e.kind == BackendEvent::Kind::kNoSpace);
  events_.Publish(ev);
}

absl::StatusOr<AgentService::Record> AgentService::FindRecord(const Uuid& id) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) {
    return absl::NotFoundError(absl::StrCat("no snapshot ", id.ToString()));
  }
  return it->second;
}

absl::StatusOr<v1::Snapshot> AgentService::ToProto(const Record& record) {
  BLKFLEET_ASSIGN_OR_RETURN(SnapshotStatus status, backend_->GetSnapshotStatus(record.id));
  v1::Snapshot s;
  s.set_id(record.id.ToString());
  for (const v1::SnapshotDevice& d : record.devices) *s.add_devices() = d;
  s.set_state(status.corrupted ? v1::SNAPSHOT_STATE_CORRUPTED : v1::SNAPSHOT_STATE_ACTIVE);
  s.set_error(status.error);
  *s.mutable_create_time() = ToTimestamp(record.create_time);
  *s.mutable_lease_expire_time() = ToTimestamp(record.lease_expire);
  s.set_diff_storage_limit_bytes(status.diff_storage_limit_bytes);
  s.set_diff_storage_used_bytes(status.diff_storage_used_bytes);
  return s;
}

grpc::Status AgentService::GetAgentInfo(grpc::ServerContext*, const v1::GetAgentInfoRequest*,
                                        v1::AgentInfo* resp) {
  resp->set_hostname(options_.hostname);
  resp->set_agent_version(options_.agent_version);
  resp->set_backend(backend_->name());
  resp->set_module_version(backend_->module_version());
  *resp->mutable_start_time() = ToTimestamp(start_time_);
  FillKernelReport(resp->mutable_kernel());
  return grpc::Status::OK;
}

void AgentService::FillKernelReport(blkfleet::type::v1::KernelReport* out) const {
  const std::string running =
      options_.running_release.empty() ? RunningKernelRelease() : options_.running_release;
  out->set_running_release(running);
  const absl::Status usable = backend_->Usable();
  out->set_module_loaded(usable.ok());
  out->set_module_error(std::string(usable.message()));
  out->set_module_version(backend_->module_version());
  out->set_intercept_mode(backend_->intercept_mode());
  out->set_modules_dir(options_.modules_dir);
  if (options_.modules_dir.empty()) return;
  for (const InstalledKernelInfo& k : ListInstalledKernels(options_.modules_dir, running)) {
    blkfleet::type::v1::InstalledKernel* ik = out->add_installed_kernels();
    ik->set_release(k.release);
    ik->set_module_present(!k.module_path.empty());
    ik->set_module_path(k.module_path);
    ik->set_running(k.running);
    ik->set_default_boot(k.default_boot);
  }
}

grpc::Status AgentService::ListDevices(grpc::ServerContext*, const v1::ListDevicesRequest*,
                                       v1::ListDevicesResponse* resp) {
  absl::StatusOr<std::vector<DeviceInfo>> devices = backend_->ListDevices();
  if (!devices.ok()) {
    return ToGrpcStatus(
        absl::InternalError(absl::StrCat("cannot list devices: ", devices.status().message())));
  }
  for (const DeviceInfo& d : *devices) {
    v1::Device* out = resp->add_devices();
    out->set_name(d.name);
    out->set_size_bytes(d.size_bytes);
    out->set_sector_size_bytes(d.sector_size_bytes);
    out->set_tracked(d.tracked);
    if (d.snapshot_id) out->set_snapshot_id(d.snapshot_id->ToString());
    if (d.tracked) {
      // Detached in between: report it untracked rather than fail the list.
      absl::StatusOr<CbtInfo> cbt = backend_->GetCbtInfo(d.name);
      if (cbt.ok()) {
        *out->mutable_cbt() = ToCbtState(*cbt);
      } else {
        out->set_tracked(false);
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status AgentService::CreateSnapshot(grpc::ServerContext*,
                                          const v1::CreateSnapshotRequest* req,
                                          v1::Snapshot* resp) {
  // Without a usable module nothing else matters: say why first.
  if (absl::Status usable = backend_->Usable(); !usable.ok()) return ToGrpcStatus(usable);
  absl::MutexLock lock(&lifecycle_mu_);
  ExpireLeasesLocked();
  absl::StatusOr<v1::Snapshot> s = CreateLocked(*req);
  if (!s.ok()) return ToGrpcStatus(s.status());
  *resp = *std::move(s);
  return grpc::Status::OK;
}

absl::StatusOr<v1::Snapshot> AgentService::CreateLocked(const v1::CreateSnapshotRequest& req) {
  // Validation first: a bad request changes nothing.
  if (req.devices().empty()) return absl::InvalidArgumentError("devices: none given");
  std::set<std::string> seen;
  for (int i = 0; i < req.devices_size(); ++i) {
    const std::string& d = req.devices(i);
    if (d.empty()) return absl::InvalidArgumentError(absl::StrCat("devices[", i, "]: empty"));
    if (!seen.insert(d).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices[", i, "]: \"", d, "\" is listed twice"));
    }
  }
  for (int i = 0; i < req.devices_size(); ++i) {
    const std::string& d = req.devices(i);
    if (!options_.snapshot_devices.empty() &&
        std::find(options_.snapshot_devices.begin(), options_.snapshot_devices.end(), d) ==
            options_.snapshot_devices.end()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "devices[", i, "]: \"", d, "\" is not in the agent's snapshot allowlist (",
          absl::StrJoin(options_.snapshot_devices, ", "), ")"));
    }
    if (restoring_.contains(d)) {
      return absl::FailedPreconditionError(
          absl::StrCat("devices[", i, "]: \"", d, "\" is being restored onto (WriteImage)"));
    }
  }
  BLKFLEET_RETURN_IF_ERROR(CheckLease("lease_ms", req.lease_ms()));
  if (req.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: longer than ", kMaxRequestIdBytes, " bytes"));
  }
  // Confined to the agent's configuration before anything is made
  // (agent/diff_storage_policy.h): a refusal creates and truncates nothing.
  DiffStorageConfig storage_config;
  storage_config.dir = options_.default_diff_storage_path;
  storage_config.devices = options_.diff_storage_devices;
  storage_config.default_limit_bytes = options_.default_diff_storage_limit_bytes;
  storage_config.max_limit_bytes = options_.max_diff_storage_limit_bytes;
  BLKFLEET_ASSIGN_OR_RETURN(
      DiffStorageSpec storage,
      ResolveDiffStorage(storage_config, req.diff_storage_path(), req.diff_storage_limit_bytes()));
  const std::string fingerprint =
      absl::StrCat(absl::StrJoin(req.devices(), "\n"), "\n", req.diff_storage_path(), "\n",
                   req.diff_storage_limit_bytes(), "\n", req.lease_ms());

  if (!req.request_id().empty()) {
    std::optional<Record> earlier;
    {
      absl::MutexLock lock(&mu_);
      if (auto it = by_request_id_.find(req.request_id()); it != by_request_id_.end()) {
        earlier = records_.at(it->second);
      }
    }
    if (earlier) {
      if (earlier->request_fingerprint != fingerprint) {
        return absl::AlreadyExistsError(
            absl::StrCat("request_id: \"", req.request_id(), "\" was used for snapshot ",
                         earlier->id.ToString(), " with other arguments"));
      }
      return ToProto(*earlier);
    }
  }

  BLKFLEET_ASSIGN_OR_RETURN(std::vector<DeviceInfo> devices, backend_->ListDevices());
  std::map<std::string, DeviceInfo> by_name;
  for (DeviceInfo& d : devices) by_name.emplace(d.name, std::move(d));
  for (const std::string& name : req.devices()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::NotFoundError(absl::StrCat("devices: no device \"", name, "\""));
    }
    if (it->second.snapshot_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "devices: \"", name, "\" is already in snapshot ", it->second.snapshot_id->ToString()));
    }
  }
  absl::StatusOr<Uuid> created = backend_->CreateSnapshot(storage);
  if (!created.ok()) {
    if (absl::IsNotFound(created.status()) || absl::IsInvalidArgument(created.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat("diff_storage_path: ", created.status().message()));
    }
    return created.status();
  }
  const Uuid id = *created;
  auto unwind = [&](absl::Status st) {
    (void)backend_->DestroySnapshot(id);
    return st;
  };
  // Attach only once the storage exists, so that a refused create leaves
  // CBT as it was.
  for (const std::string& name : req.devices()) {
    if (by_name[name].tracked) continue;
    absl::Status st = backend_->Attach(name);
    if (!st.ok() && !absl::IsAlreadyExists(st)) return unwind(st);
  }
  for (const std::string& name : req.devices()) {
    if (absl::Status st = backend_->AddDevice(id, name); !st.ok()) return unwind(st);
  }
  if (absl::Status st = backend_->TakeSnapshot(id); !st.ok()) return unwind(st);

  Record record;
  record.id = id;
  absl::StatusOr<SnapshotStatus> status = backend_->GetSnapshotStatus(id);
  if (!status.ok()) return unwind(status.status());
  for (const SnapshotDeviceStatus& ds : status->devices) {
    absl::StatusOr<CbtInfo> cbt = backend_->GetCbtInfo(ds.device);
    if (!cbt.ok()) return unwind(cbt.status());
    v1::SnapshotDevice d;
    d.set_device(ds.device);
    d.set_image_path(ds.image_name);
    d.set_size_bytes(cbt->capacity_bytes);
    *d.mutable_cbt() = ToCbtState(*cbt);
    record.devices.push_back(std::move(d));
  }
  record.create_time = options_.clock->Now();
  record.lease_expire = record.create_time + absl::Milliseconds(req.lease_ms());
  record.request_id = req.request_id();
  record.request_fingerprint = fingerprint;
  if (!options_.snapshot_hook.empty()) {
    std::vector<std::string> args = {id.ToString()};
    for (const v1::SnapshotDevice& d : record.devices) {
      args.push_back(absl::StrCat(d.device(), "=", d.image_path()));
    }
    absl::StatusOr<HookProcess> hook = HookProcess::Start(options_.snapshot_hook, args);
    if (!hook.ok()) return unwind(absl::FailedPreconditionError(hook.status().message()));
    hooks_.emplace(id, *std::move(hook));
  }
  {
    absl::MutexLock lock(&mu_);
    records_.emplace(id, record);
    if (!record.request_id.empty()) by_request_id_[record.request_id] = id;
  }
  return ToProto(record);
}

absl::Status AgentService::DestroyLocked(const Uuid& id, v1::SnapshotEventKind kind,
                                         const std::string& message) {
  std::string note = message;
  if (auto hook = hooks_.find(id); hook != hooks_.end()) {
    // The hook reads the snapshot's images: it must be done before they go.
    absl::Status hs = hook->second.Wait(options_.snapshot_hook_timeout);
    hooks_.erase(hook);
    if (!hs.ok()) {
      std::fprintf(stderr, "blkfleet-agent: snapshot %s: %s\n", id.ToString().c_str(),
                   std::string(hs.message()).c_str());
      absl::StrAppend(&note, "; ", hs.message());
    }
  }
  absl::Status st = backend_->DestroySnapshot(id);
  // A snapshot the backend no longer has is gone either way.
  if (!st.ok() && !absl::IsNotFound(st)) return st;
  {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(id);
    if (it != records_.end()) {
      if (!it->second.request_id.empty()) by_request_id_.erase(it->second.request_id);
      records_.erase(it);
    }
  }
  v1::SnapshotEvent ev;
  ev.set_snapshot_id(id.ToString());
  ev.set_kind(kind);
  *ev.mutable_time() = ToTimestamp(options_.clock->Now());
  ev.set_message(note);
  events_.Publish(ev);
  return absl::OkStatus();
}

int AgentService::ExpireLeases() {
  absl::MutexLock lock(&lifecycle_mu_);
  return ExpireLeasesLocked();
}

int AgentService::ExpireLeasesLocked() {
  const absl::Time now = options_.clock->Now();
  std::vector<Uuid> expired;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, r] : records_) {
      if (r.lease_expire <= now) expired.push_back(id);
    }
  }
  int n = 0;
  for (const Uuid& id : expired) {
    if (DestroyLocked(id, v1::SNAPSHOT_EVENT_KIND_LEASE_EXPIRED,
                      "the lease ran out without renewal; the agent destroyed the snapshot")
            .ok()) {
      metrics::LeaseExpired();
      ++n;
    }
  }
  return n;
}

grpc::Status AgentService::GetSnapshot(grpc::ServerContext*, const v1::GetSnapshotRequest* req,
                                       v1::Snapshot* resp) {
  absl::StatusOr<Uuid> id = ParseId("id", req->id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  ExpireLeases();
  absl::StatusOr<Record> record = FindRecord(*id);
  if (!record.ok()) return ToGrpcStatus(record.status());
  absl::StatusOr<v1::Snapshot> s = ToProto(*record);
  if (!s.ok()) return ToGrpcStatus(s.status());
  *resp = *std::move(s);
  return grpc::Status::OK;
}

grpc::Status AgentService::ListSnapshots(grpc::ServerContext*, const v1::ListSnapshotsRequest* req,
                                         v1::ListSnapshotsResponse* resp) {
  if (req->page_size() < 0) {
    return ToGrpcStatus(
        absl::InvalidArgumentError(absl::StrCat("page_size: ", req->page_size(), " is negative")));
  }
  const int limit = req->page_size() == 0 ? kMaxPageSize : std::min(req->page_size(), kMaxPageSize);
  std::optional<Uuid> after;
  if (!req->page_token().empty()) {
    absl::StatusOr<Uuid> token = ParseId("page_token", req->page_token());
    if (!token.ok()) return ToGrpcStatus(token.status());
    after = *token;
  }
  ExpireLeases();
  std::vector<Record> page;
  bool more = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = after ? records_.upper_bound(*after) : records_.begin();
    for (; it != records_.end(); ++it) {
      if (static_cast<int>(page.size()) == limit) {
        more = true;
        break;
      }
      page.push_back(it->second);
    }
  }
  for (const Record& r : page) {
    absl::StatusOr<v1::Snapshot> s = ToProto(r);
    if (s.ok()) *resp->add_snapshots() = *std::move(s);  // destroyed meanwhile: skip
  }
  if (more && !page.empty()) resp->set_next_page_token(page.back().id.ToString());
  return grpc::Status::OK;
}

grpc::Status AgentService::RenewSnapshotLease(grpc::ServerContext*,
                                              const v1::RenewSnapshotLeaseRequest* req,
                                              v1::Snapshot* resp) {
  absl::StatusOr<Uuid> id = ParseId("id", req->id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  if (absl::Status st = CheckLease("lease_ms", req->lease_ms()); !st.ok()) return ToGrpcStatus(st);
  Record record;
  {
    absl::MutexLock lifecycle(&lifecycle_mu_);
    // An expired lease cannot be renewed, even if the reaper has not run yet.
    ExpireLeasesLocked();
    absl::MutexLock lock(&mu_);
    auto it = records_.find(*id);
    if (it == records_.end()) {
      return ToGrpcStatus(absl::NotFoundError(
          absl::StrCat("no snapshot ", id->ToString(), " (destroyed, or its lease expired)")));
    }
    it->second.lease_expire = options_.clock->Now() + absl::Milliseconds(req->lease_ms());
    record = it->second;
  }
  absl::StatusOr<v1::Snapshot> s = ToProto(record);
  if (!s.ok()) return ToGrpcStatus(s.status());
  *resp = *std::move(s);
  return grpc::Status::OK;
}

grpc::Status AgentService::DestroySnapshot(grpc::ServerContext*,
                                           const v1::DestroySnapshotRequest* req,
                                           v1::DestroySnapshotResponse*) {
  absl::StatusOr<Uuid> id = ParseId("id", req->id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  absl::MutexLock lifecycle(&lifecycle_mu_);
  ExpireLeasesLocked();
  bool known;
  {
    absl::MutexLock lock(&mu_);
    known = records_.contains(*id);
  }
  if (!known) {
    if (req->allow_missing()) return grpc::Status::OK;
    return ToGrpcStatus(absl::NotFoundError(absl::StrCat("no snapshot ", id->ToString())));
  }
  return ToGrpcStatus(
      DestroyLocked(*id, v1::SNAPSHOT_EVENT_KIND_DESTROYED, "destroyed by DestroySnapshot"));
}

grpc::Status AgentService::WatchSnapshotEvents(grpc::ServerContext* ctx,
                                               const v1::WatchSnapshotEventsRequest* req,
                                               grpc::ServerWriter<v1::SnapshotEvent>* writer) {
  std::optional<Uuid> id;
  if (!req->snapshot_id().empty()) {
    absl::StatusOr<Uuid> parsed = ParseId("snapshot_id", req->snapshot_id());
    if (!parsed.ok()) return ToGrpcStatus(parsed.status());
    id = *parsed;
  }
  // Subscribe before the existence check so that no event slips between.
  std::shared_ptr<EventHub::Subscription> sub =
      events_.Subscribe(id ? id->ToString() : std::string());
  struct Unsubscribe {
    EventHub* hub;
    std::shared_ptr<EventHub::Subscription> sub;
    ~Unsubscribe() { hub->Unsubscribe(sub); }
  } unsubscribe{&events_, sub};
  if (id) {
    if (absl::StatusOr<Record> r = FindRecord(*id); !r.ok()) return ToGrpcStatus(r.status());
  }
  // The initial metadata tells the client the watch is in place.
  writer->SendInitialMetadata();
  while (!ctx->IsCancelled()) {
    if (stop_.HasBeenNotified()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the agent is shutting down");
    }
    std::optional<v1::SnapshotEvent> e = sub->Next(absl::Milliseconds(200));
    if (!e) continue;
    if (!writer->Write(*e)) break;
    if (id && (e->kind() == v1::SNAPSHOT_EVENT_KIND_DESTROYED ||
               e->kind() == v1::SNAPSHOT_EVENT_KIND_LEASE_EXPIRED)) {
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
}

grpc::Status AgentService::ReadCbtMap(grpc::ServerContext* ctx, const v1::ReadCbtMapRequest* req,
                                      grpc::ServerWriter<v1::ReadCbtMapResponse>* writer) {
  const absl::Time start = absl::Now();
  grpc::Status st = DoReadCbtMap(ctx, req, writer);
  metrics::CbtMapRead(absl::ToDoubleSeconds(absl::Now() - start));
  return st;
}

metrics::SnapshotUsage AgentService::Usage() {
  std::vector<Uuid> ids;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, r] : records_) ids.push_back(id);
  }
  metrics::SnapshotUsage usage;
  for (const Uuid& id : ids) {
    absl::StatusOr<SnapshotStatus> status = backend_->GetSnapshotStatus(id);
    if (!status.ok()) continue;  // destroyed meanwhile
    ++usage.snapshots;
    usage.diff_storage_used_bytes += status->diff_storage_used_bytes;
    usage.diff_storage_limit_bytes += status->diff_storage_limit_bytes;
  }
  return usage;
}

grpc::Status AgentService::DoReadCbtMap(grpc::ServerContext*, const v1::ReadCbtMapRequest* req,
                                        grpc::ServerWriter<v1::ReadCbtMapResponse>* writer) {
  if (absl::Status usable = backend_->Usable(); !usable.ok()) return ToGrpcStatus(usable);
  absl::StatusOr<Uuid> id = ParseId("snapshot_id", req->snapshot_id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  absl::StatusOr<Record> record = FindRecord(*id);
  if (!record.ok()) return ToGrpcStatus(record.status());
  const v1::SnapshotDevice* dev = nullptr;
  for (const v1::SnapshotDevice& d : record->devices) {
    if (d.device() == req->device()) dev = &d;
  }
  if (dev == nullptr) {
    return ToGrpcStatus(absl::NotFoundError(
        absl::StrCat("device: \"", req->device(), "\" is not in snapshot ", id->ToString())));
  }
  const uint32_t blocks = dev->cbt().block_count();
  if (req->first_block() > blocks || (req->first_block() == blocks && req->block_count() != 0) ||
      req->block_count() > blocks - req->first_block()) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("first_block/block_count: [", req->first_block(), ", +", req->block_count(),
                     ") is outside the map of ", blocks, " blocks")));
  }
  const uint32_t end = req->block_count() == 0 ? blocks : req->first_block() + req->block_count();
  uint32_t pos = req->first_block();
  bool first = true;
  do {
    const uint32_t n = std::min(kCbtPieceBlocks, end - pos);
    v1::ReadCbtMapResponse resp;
    if (first) *resp.mutable_cbt() = dev->cbt();
    first = false;
    resp.set_first_block(pos);
    std::string* map = resp.mutable_map();
    map->resize(n);
    absl::Status st = backend_->ReadCbtMap(
        req->device(), pos, std::span<uint8_t>(reinterpret_cast<uint8_t*>(map->data()), n));
    if (!st.ok()) return ToGrpcStatus(st);
    // The frozen map belongs to this snapshot only while it exists.
    if (absl::StatusOr<Record> again = FindRecord(*id); !again.ok()) {
      return ToGrpcStatus(again.status());
    }
    if (!writer->Write(resp)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
    pos += n;
  } while (pos < end);
  return grpc::Status::OK;
}

grpc::Status AgentService::StreamImage(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::StreamImageResponse, v1::StreamImageRequest>* stream) {
  if (absl::Status usable = backend_->Usable(); !usable.ok()) return ToGrpcStatus(usable);
  return ToGrpcStatus(DoStreamImage(ctx, stream));
}

grpc::Status AgentService::WriteImage(grpc::ServerContext*,
                                      grpc::ServerReader<v1::WriteImageRequest>* reader,
                                      v1::WriteImageResponse* resp) {
  return ToGrpcStatus(DoWriteImage(reader, resp));
}

absl::Status AgentService::ClaimRestoreTarget(const std::string& device) {
  const auto& allow = options_.restore_devices;
  if (std::find(allow.begin(), allow.end(), device) == allow.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "device: \"", device, "\" is not in the agent's restore allowlist",
        allow.empty() ? " (empty: start the agent with --restore-device to allow restores)"
                      : absl::StrCat(" (", absl::StrJoin(allow, ", "), ")")));
  }
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (restoring_.contains(device)) {
    return absl::FailedPreconditionError(
        absl::StrCat("device: \"", device, "\" is already being restored onto"));
  }
  // A device of the backend held by a snapshot (the backend checks too, for
  // snapshots it knows of only by the kernel's word).
  absl::StatusOr<std::vector<DeviceInfo>> devices = backend_->ListDevices();
  if (!devices.ok()) return devices.status();
  for (const DeviceInfo& d : *devices) {
    if (d.name == device && d.snapshot_id) {
      return absl::FailedPreconditionError(
          absl::StrCat("device: \"", device, "\" is in snapshot ", d.snapshot_id->ToString(),
                       ": destroy it (or let its lease expire) before restoring onto it"));
    }
  }
  restoring_.insert(device);
  return absl::OkStatus();
}

void AgentService::ReleaseRestoreTarget(const std::string& device) {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  restoring_.erase(device);
}

absl::Status AgentService::DoWriteImage(grpc::ServerReader<v1::WriteImageRequest>* reader,
                                        v1::WriteImageResponse* resp) {
  v1::WriteImageRequest msg;
  if (!reader->Read(&msg)) return absl::InvalidArgumentError("start: the stream is empty");
  if (!msg.has_start()) return absl::InvalidArgumentError("start: must be the first message");
  const v1::WriteImageStart start = msg.start();
  if (start.device().empty()) return absl::InvalidArgumentError("device: empty");
  if (start.size_bytes() == 0) return absl::InvalidArgumentError("size_bytes: must be > 0");
  const uint32_t cs = start.chunk_size_bytes();
  if (cs < (64u << 10) || cs > (64u << 20) || (cs & (cs - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_size_bytes: ", cs, " is not a power of two in 64 KiB .. 64 MiB"));
  }
  BLKFLEET_RETURN_IF_ERROR(ClaimRestoreTarget(start.device()));
  struct Release {
    AgentService* self;
    const std::string& device;
    ~Release() { self->ReleaseRestoreTarget(device); }
  } release{this, start.device()};
  BLKFLEET_ASSIGN_OR_RETURN(std::unique_ptr<RestoreTarget> target,
                            backend_->OpenRestoreTarget(start.device()));
  if (start.size_bytes() > target->size_bytes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("size_bytes: the image (", start.size_bytes(), " bytes) does not fit on ",
                     start.device(), " (", target->size_bytes(), " bytes)"));
  }
  const uint64_t chunks = (start.size_bytes() + cs - 1) / cs;
  uint64_t next = 0;
  ZstdCodec codec;
  std::string plain;
  while (reader->Read(&msg)) {
    if (!msg.has_chunk()) return absl::InvalidArgumentError("start: sent twice");
    const v1::ImageChunk& c = msg.chunk();
    const std::string where = absl::StrCat("chunk ", c.index());
    if (c.index() != next) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": index out of order (expected ", next, " of ", chunks, ")"));
    }
    const uint64_t offset = c.index() * cs;
    const uint64_t len = std::min<uint64_t>(cs, start.size_bytes() - offset);
    if (c.offset_bytes() != offset || c.length_bytes() != len) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": offset_bytes/length_bytes ",
                                                     c.offset_bytes(), "/", c.length_bytes(),
                                                     ", expected ", offset, "/", len));
    }
    std::optional<Sha256Digest> want = DigestFromBytes(c.sha256());
    if (!want) return absl::InvalidArgumentError(absl::StrCat(where, ": sha256 is not 32 bytes"));
    std::string_view data;
    switch (c.encoding()) {
      case type::v1::CHUNK_ENCODING_RAW:
        data = c.data();
        break;
      case type::v1::CHUNK_ENCODING_ZSTD: {
        absl::Status st = codec.Decompress(c.data(), len, &plain);
        if (!st.ok()) return absl::DataLossError(absl::StrCat(where, ": ", st.message()));
        data = plain;
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": encoding must be RAW or ZSTD (the agent keeps no chunks)"));
    }
    if (data.size() != len) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", data.size(), " bytes of data, expected ", len));
    }
    // Checked before the write: a damaged chunk never reaches the device.
    if (Sha256(data) != *want) {
      return absl::DataLossError(absl::StrCat(where, ": data does not match its sha256 ",
                                              DigestToHex(*want), "; nothing of it written"));
    }
    BLKFLEET_RETURN_IF_ERROR(target->WriteAt(
        offset, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), len)));
    ++next;
    resp->set_bytes_written(resp->bytes_written() + len);
    resp->set_chunks_written(next);
  }
  if (next != chunks) {
    return absl::AbortedError(absl::StrCat("the stream ended after ", next, " of ", chunks,
                                           " chunks: the device holds a partial image"));
  }
  BLKFLEET_RETURN_IF_ERROR(target->Flush());
  return absl::OkStatus();
}

}  // namespace blkfleet::agent
