// SPDX-License-Identifier: Apache-2.0
#include "server/server_service.h"

#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/blocking_counter.h"
#include "common/status_util.h"
#include "server/gc_job.h"
#include "server/host_kernels.h"
#include "server/server_metrics.h"
#include "server/restore_job.h"
#include "server/verify_job.h"
#include "server/validation.h"

namespace blkfleet::server {
namespace {

namespace av1 = ::blkfleet::agent::v1;

#define RETURN_IF_BAD(expr)                             \
  do {                                                  \
    absl::Status s_ = (expr);                           \
    if (!s_.ok()) return ToGrpcStatus(s_);              \
  } while (0)

// Prune and garbage collection exclude each other: a prune's backup leaves
// the catalog and then the repository, and no sweep runs between the two.
constexpr char kMaintenanceKey[] = "maintenance";
constexpr char kMaintenanceBusy[] = "a prune or garbage collection is already running";

// blkfleet-server always runs a scheduler; a service built without one (a
// test harness) answers the policy calls with this.
grpc::Status NoScheduler() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "this server runs without a scheduler: no policies");
}

}  // namespace

ServerService::ServerService(catalog::Catalog* catalog, repo::Repository* repo,
                             AgentConnector* agents, JobManager* jobs, Clock* clock,
                             BackupOptions backup_options, absl::Duration gc_grace)
    : catalog_(catalog),
      repo_(repo),
      agents_(agents),
      jobs_(jobs),
      clock_(clock),
      backup_options_(backup_options),
      gc_grace_(gc_grace) {}

void ServerService::AskAgents(std::vector<v1::Host*> hosts) {
  struct Call {
    grpc::ClientContext ctx;
    av1::GetAgentInfoRequest req;
    av1::AgentInfo resp;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  absl::BlockingCounter done(static_cast<int>(hosts.size()));
  for (v1::Host* h : hosts) {
    auto call = std::make_unique<Call>();
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(700));
    Call* c = call.get();
    agents_->Stub(h->agent_address())
        ->async()
        ->GetAgentInfo(&c->ctx, &c->req, &c->resp, [c, &done](grpc::Status s) {
          c->status = s;
          done.DecrementCount();
        });
    calls.push_back(std::move(call));
  }
  done.Wait();
  std::vector<catalog::HostKernelReport> reports;
  const absl::Time now = clock_->Now();
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (!calls[i]->status.ok()) continue;
    const av1::AgentInfo& info = calls[i]->resp;
    hosts[i]->set_agent_version(info.agent_version());
    hosts[i]->set_backend(info.backend());
    if (!info.kernel().running_release().empty()) {
      *hosts[i]->mutable_kernel() = info.kernel();
      SetTimestamp(now, hosts[i]->mutable_kernel_report_time());
      reports.push_back({hosts[i]->name(), info.kernel(), absl::ToUnixMicros(now)});
    }
  }
  // The answer stands without the catalog; the stored report is the one the
  // metrics and the next unreachable-agent answer show.
  if (absl::Status st = RecordHostKernels(catalog_, std::move(reports)); !st.ok()) {
    std::cerr << "blkfleet-server: cannot keep kernel reports: " << st << "\n";
  }
}

grpc::Status ServerService::CreateHost(grpc::ServerContext*, const v1::CreateHostRequest* req,
                                       v1::Host* resp) {
  const v1::Host& in = req->host();
  RETURN_IF_BAD(ValidateHostName(in.name(), "host.name"));
  RETURN_IF_BAD(ValidateAgentAddress(in.agent_address(), "host.agent_address"));
  std::set<std::string> seen;
  for (const auto& d : in.default_devices()) {
    if (d.empty()) {
      return ToGrpcStatus(absl::InvalidArgumentError("host.default_devices holds an empty name"));
    }
    if (!seen.insert(d).second) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("host.default_devices lists ", d, " twice")));
    }
  }
  v1::Host h;
  h.set_name(in.name());
  h.set_agent_address(in.agent_address());
  *h.mutable_default_devices() = in.default_devices();
  SetTimestamp(clock_->Now(), h.mutable_create_time());
  RETURN_IF_BAD(catalog_->CreateHost(h));
  *resp = h;
  // The first kernel report; an agent not up yet reports at the next contact.
  AskAgents({resp});
  return grpc::Status::OK;
}

grpc::Status ServerService::ListHosts(grpc::ServerContext*, const v1::ListHostsRequest* req,
                                      v1::ListHostsResponse* resp) {
  auto page = ParsePage(req->page_size(), req->page_token());
  RETURN_IF_BAD(page.status());
  auto hosts = catalog_->ListHosts(*page);
  RETURN_IF_BAD(hosts.status());
  std::vector<v1::Host*> ptrs;
  for (auto& h : *hosts) {
    *resp->add_hosts() = std::move(h);
  }
  for (auto& h : *resp->mutable_hosts()) ptrs.push_back(&h);
  AskAgents(ptrs);
  resp->set_next_page_token(NextPageToken(*page, hosts->size()));
  return grpc::Status::OK;
}

grpc::Status ServerService::GetHost(grpc::ServerContext*, const v1::GetHostRequest* req,
                                    v1::Host* resp) {
  RETURN_IF_BAD(ValidateHostName(req->name(), "name"));
  auto h = catalog_->GetHost(req->name());
  RETURN_IF_BAD(h.status());
  *resp = *h;
  AskAgents({resp});
  return grpc::Status::OK;
}

grpc::Status ServerService::DeleteHost(grpc::ServerContext*, const v1::DeleteHostRequest* req,
                                       v1::DeleteHostResponse*) {
  RETURN_IF_BAD(ValidateHostName(req->name(), "name"));
  RETURN_IF_BAD(catalog_->GetHost(req->name()).status());
  if (jobs_->HostBusy(req->name())) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        absl::StrCat("a job of host ", req->name(), " is running")));
  }
  RETURN_IF_BAD(catalog_->DeleteHost(req->name()));
  metrics::ClearHostKernel(req->name());
  return grpc::Status::OK;
}

absl::StatusOr<v1::Job> ServerService::StartBackup(const v1::RunBackupRequest& r) {
  const v1::RunBackupRequest* req = &r;
  BLKFLEET_RETURN_IF_ERROR(ValidateHostName(req->host(), "host"));
  const uint32_t cs = req->chunk_size_bytes();
  if (cs != 0 && (cs < kMinChunkSize || cs > kMaxChunkSize || (cs & (cs - 1)) != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_size_bytes ", cs, " must be a power of two from 64 KiB to 64 MiB"));
  }
  auto host = catalog_->GetHost(req->host());
  BLKFLEET_RETURN_IF_ERROR(host.status());
  BackupRequest br;
  br.host = *host;
  br.chunk_size_bytes = cs;
  br.force_full = req->force_full();
  std::set<std::string> seen;
  const auto& devices = req->devices_size() > 0 ? req->devices() : host->default_devices();
  for (const auto& d : devices) {
    if (d.empty()) return absl::InvalidArgumentError("devices holds an empty name");
    if (!seen.insert(d).second) {
      return absl::InvalidArgumentError(absl::StrCat("devices lists ", d, " twice"));
    }
    br.devices.push_back(d);
  }
  if (br.devices.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "devices: none given and host ", req->host(), " has no default devices"));
  }
  v1::Job job;
  job.set_kind(v1::JOB_KIND_BACKUP);
  job.set_host(req->host());
  BackupDeps deps{catalog_, repo_, agents_, clock_, backup_options_, &pins_};
  return jobs_->Start(job, absl::StrCat("backup:", req->host()),
                      absl::StrCat("a backup of host ", req->host(), " is already running"),
                      [deps, br](JobContext& ctx) { return server::RunBackup(deps, br, ctx); });
}

grpc::Status ServerService::RunBackup(grpc::ServerContext*, const v1::RunBackupRequest* req,
                                      v1::Job* resp) {
  auto started = StartBackup(*req);
  RETURN_IF_BAD(started.status());
  *resp = *started;
  return grpc::Status::OK;
}

grpc::Status ServerService::ListBackups(grpc::ServerContext*, const v1::ListBackupsRequest* req,
                                        v1::ListBackupsResponse* resp) {
  if (!req->host().empty()) RETURN_IF_BAD(ValidateHostName(req->host(), "host"));
  auto page = ParsePage(req->page_size(), req->page_token());
  RETURN_IF_BAD(page.status());
  auto backups = catalog_->ListBackups(req->host(), *page);
  RETURN_IF_BAD(backups.status());
  for (auto& b : *backups) *resp->add_backups() = std::move(b);
  resp->set_next_page_token(NextPageToken(*page, backups->size()));
  return grpc::Status::OK;
}

grpc::Status ServerService::GetBackup(grpc::ServerContext*, const v1::GetBackupRequest* req,
                                      v1::Backup* resp) {
  RETURN_IF_BAD(ValidateId(req->id(), "id"));
  auto b = catalog_->GetBackup(req->id());
  RETURN_IF_BAD(b.status());
  *resp = *b;
  return grpc::Status::OK;
}

grpc::Status ServerService::ProtectBackup(grpc::ServerContext*,
                                          const v1::ProtectBackupRequest* req, v1::Backup* resp) {
  RETURN_IF_BAD(ValidateId(req->id(), "id"));
  auto b = catalog_->SetBackupProtected(req->id(), req->protected_());
  RETURN_IF_BAD(b.status());
  *resp = *b;
  return grpc::Status::OK;
}

grpc::Status ServerService::Restore(grpc::ServerContext*, const v1::RestoreRequest* req,
                                    v1::Job* resp) {
  RETURN_IF_BAD(ValidateId(req->backup_id(), "backup_id"));
  if (req->has_host_device()) return RestoreToHostDevice(*req, resp);
  if (req->file_path().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("a target is required: file_path"));
  }
  const std::string& path = req->file_path();
  std::filesystem::path p(path);
  if (!p.is_absolute() || path.back() == '/' || p.filename() == "." || p.filename() == "..") {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("file_path '", path, "' must be an absolute path of a file")));
  }
  struct stat st;
  const std::string dir = p.parent_path().string();
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("file_path: directory ", dir, " does not exist")));
  }
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("file_path ", path, " exists and is not a regular file")));
    }
    if (!req->overwrite()) {
      return ToGrpcStatus(absl::AlreadyExistsError(
          absl::StrCat(path, " exists; set overwrite to replace it")));
    }
  }
  auto use = uses_.Acquire(req->backup_id(), absl::StrCat("a restore to ", path));
  RETURN_IF_BAD(use.status());
  auto backup = catalog_->GetBackup(req->backup_id());
  RETURN_IF_BAD(backup.status());
  int ordinal = -1;
  std::vector<std::string> names;
  for (int i = 0; i < backup->devices_size(); ++i) {
    names.push_back(backup->devices(i).device());
    if (backup->devices(i).device() == req->device()) ordinal = i;
  }
  if (req->device().empty()) {
    if (backup->devices_size() != 1) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("device is required: backup ", backup->id(), " holds ",
                       absl::StrJoin(names, ", "))));
    }
    ordinal = 0;
  } else if (ordinal < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("device ", req->device(), " is not in backup ", backup->id(), " (it holds ",
                     absl::StrJoin(names, ", "), ")")));
  }
  RestoreFileRequest rr;
  rr.backup = *backup;
  rr.device_ordinal = ordinal;
  rr.file_path = path;
  rr.overwrite = req->overwrite();
  v1::Job job;
  job.set_kind(v1::JOB_KIND_RESTORE);
  job.set_host(backup->host());
  repo::Repository* repo = repo_;
  auto started = jobs_->Start(job, absl::StrCat("restore:", path),
                              absl::StrCat("a restore to ", path, " is already running"),
                              [repo, rr, use = *use](JobContext& ctx) {
                                absl::Status s = RunRestoreToFile(repo, rr, ctx);
                                use->Release();
                                return s;
                              });
  RETURN_IF_BAD(started.status());
  *resp = *started;
  return grpc::Status::OK;
}

grpc::Status ServerService::VerifyBackup(grpc::ServerContext*, const v1::VerifyBackupRequest* req,
                                         v1::Job* resp) {
  RETURN_IF_BAD(ValidateId(req->backup_id(), "backup_id"));
  auto use = uses_.Acquire(req->backup_id(), "a verify");
  RETURN_IF_BAD(use.status());
  auto backup = catalog_->GetBackup(req->backup_id());
  RETURN_IF_BAD(backup.status());
  v1::Job job;
  job.set_kind(v1::JOB_KIND_VERIFY);
  job.set_host(backup->host());
  job.set_backup_id(backup->id());
  catalog::Catalog* catalog = catalog_;
  repo::Repository* repo = repo_;
  const std::string id = backup->id();
  auto started = jobs_->Start(job, absl::StrCat("verify:", id),
                              absl::StrCat("backup ", id, " is already being verified"),
                              [catalog, repo, id, use = *use](JobContext& ctx) {
                                absl::Status s = RunVerify(catalog, repo, id, VerifyOptions{}, ctx);
                                use->Release();
                                return s;
                              });
  RETURN_IF_BAD(started.status());
  *resp = *started;
  return grpc::Status::OK;
}

void ServerService::SetScheduler(Scheduler* scheduler) {
  scheduler_ = scheduler;
  if (!scheduler) return;
  scheduler->SetAfterBackup([this](const Policy& policy, const std::string& host) {
    v1::PruneRequest req;
    req.set_host(host);
    auto started = StartPrune(req);
    if (!started.ok()) {
      std::cerr << "blkfleet-server: prune after the backup of " << host << " (policy "
                << policy.name << ") not started: " << started.status().message() << "\n";
    }
  });
}

absl::StatusOr<v1::Job> ServerService::StartPrune(const v1::PruneRequest& req) {
  if (!req.host().empty()) {
    BLKFLEET_RETURN_IF_ERROR(ValidateHostName(req.host(), "host"));
    BLKFLEET_RETURN_IF_ERROR(catalog_->GetHost(req.host()).status());
  }
  if (!scheduler_) {
    return absl::FailedPreconditionError("no policies: prune applies their retention rules");
  }
  v1::Job job;
  job.set_kind(v1::JOB_KIND_PRUNE);
  job.set_host(req.host());
  PruneOptions opt;
  opt.host = req.host();
  opt.dry_run = req.dry_run();
  catalog::Catalog* catalog = catalog_;
  repo::Repository* repo = repo_;
  BackupUses* uses = &uses_;
  Scheduler* scheduler = scheduler_;
  // The policies are read on the job's thread: the scheduler starts prunes
  // while it holds its own lock.
  return jobs_->Start(job, kMaintenanceKey, kMaintenanceBusy,
                      [catalog, repo, uses, scheduler, opt](JobContext& ctx) {
                        std::optional<PolicySet> set = scheduler->Policies();
                        if (!set) {
                          return absl::FailedPreconditionError(
                              "no policies applied: prune applies their retention rules");
                        }
                        return RunPrune(catalog, repo, uses, *set, opt, ctx);
                      });
}

grpc::Status ServerService::Prune(grpc::ServerContext*, const v1::PruneRequest* req,
                                  v1::Job* resp) {
  if (!req->host().empty()) RETURN_IF_BAD(ValidateHostName(req->host(), "host"));
  std::optional<PolicySet> set = scheduler_ ? scheduler_->Policies() : std::nullopt;
  if (!set) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "no policies applied: prune applies their retention rules (blkfleet policy apply)"));
  }
  if (!req->host().empty()) {
    RETURN_IF_BAD(catalog_->GetHost(req->host()).status());
    bool covered = false;
    for (const auto& p : set->policies) {
      covered = covered || set->host_groups.at(p.host_group).Contains(req->host());
    }
    if (!covered) {
      return ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
          "host: ", req->host(), " is in no policy's host group, so no retention rule applies")));
    }
  }
  auto started = StartPrune(*req);
  RETURN_IF_BAD(started.status());
  *resp = *started;
  return grpc::Status::OK;
}

grpc::Status ServerService::CollectGarbage(grpc::ServerContext*,
                                           const v1::CollectGarbageRequest* req, v1::Job* resp) {
  v1::Job job;
  job.set_kind(v1::JOB_KIND_GC);
  GcOptions opt;
  opt.grace = gc_grace_;
  opt.dry_run = req->dry_run();
  catalog::Catalog* catalog = catalog_;
  repo::Repository* repo = repo_;
  ChunkPins* pins = &pins_;
  Clock* clock = clock_;
  auto started = jobs_->Start(job, kMaintenanceKey, kMaintenanceBusy,
                              [catalog, repo, pins, clock, opt](JobContext& ctx) {
                                return RunGc(catalog, repo, pins, clock, opt, ctx);
                              });
  RETURN_IF_BAD(started.status());
  *resp = *started;
  return grpc::Status::OK;
}

namespace {

void Summarize(const PolicySet& set, const Policy& p, v1::PolicySummary* out) {
  out->set_name(p.name);
  out->set_host_group(p.host_group);
  out->set_device_set(p.device_set);
  for (const auto& d : set.device_sets.at(p.device_set).devices) out->add_devices(d);
  out->set_schedule(p.schedule.text());
  out->set_time_zone(p.time_zone);
  out->set_prune_after_backup(p.prune_after_backup);
}

}  // namespace

grpc::Status ServerService::ListPolicies(grpc::ServerContext*, const v1::ListPoliciesRequest*,
                                         v1::ListPoliciesResponse* resp) {
  if (!scheduler_) return NoScheduler();
  std::optional<PolicySet> set = scheduler_->Policies();
  if (set) {
    resp->set_document(set->document);
    for (const auto& p : set->policies) {
      v1::PolicySummary* ps = resp->add_policies();
      Summarize(*set, p, ps);
      for (const auto& h : scheduler_->HostsOf(p.name)) ps->add_hosts(h);
    }
  }
  for (const auto& st : scheduler_->Targets()) {
    v1::PolicyTarget* t = resp->add_targets();
    t->set_policy(st.policy);
    t->set_host(st.host);
    auto ts = [](int64_t us, google::protobuf::Timestamp* out) {
      if (us != 0) SetTimestamp(absl::FromUnixMicros(us), out);
    };
    if (st.next_slot_us) ts(st.next_slot_us, t->mutable_next_run_time());
    if (st.last_slot_us) ts(st.last_slot_us, t->mutable_last_slot_time());
    if (st.last_start_us) ts(st.last_start_us, t->mutable_last_start_time());
    if (st.retry_at_us) ts(st.retry_at_us, t->mutable_retry_time());
    t->set_last_lag_ms(st.last_lag_ms);
    t->set_missed_slots(static_cast<uint32_t>(st.missed_slots));
    t->set_job_id(st.job_id);
    t->set_running(st.running);
    t->set_attempt(static_cast<uint32_t>(st.attempt));
    t->set_last_result(st.last_result);
  }
  return grpc::Status::OK;
}

grpc::Status ServerService::ApplyPolicies(grpc::ServerContext*,
                                          const v1::ApplyPoliciesRequest* req,
                                          v1::ApplyPoliciesResponse* resp) {
  if (!scheduler_) return NoScheduler();
  auto set = scheduler_->Apply(req->document(), req->dry_run());
  RETURN_IF_BAD(set.status());
  for (const auto& p : set->policies) Summarize(*set, p, resp->add_policies());
  return grpc::Status::OK;
}

grpc::Status ServerService::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) {
  if (!req->host().empty()) RETURN_IF_BAD(ValidateHostName(req->host(), "host"));
  auto page = ParsePage(req->page_size(), req->page_token());
  RETURN_IF_BAD(page.status());
  auto jobs = catalog_->ListJobs(req->host(), *page);
  RETURN_IF_BAD(jobs.status());
  for (auto& j : *jobs) {
    // Running jobs: the live state is fresher than the catalog's.
    std::optional<v1::Job> live = jobs_->GetLive(j.id());
    *resp->add_jobs() = live ? *live : j;
  }
  resp->set_next_page_token(NextPageToken(*page, jobs->size()));
  return grpc::Status::OK;
}

grpc::Status ServerService::GetJob(grpc::ServerContext*, const v1::GetJobRequest* req,
                                   v1::Job* resp) {
  RETURN_IF_BAD(ValidateId(req->id(), "id"));
  auto j = jobs_->Get(req->id());
  RETURN_IF_BAD(j.status());
  *resp = *j;
  return grpc::Status::OK;
}

grpc::Status ServerService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                     grpc::ServerWriter<v1::Job>* writer) {
  RETURN_IF_BAD(ValidateId(req->id(), "id"));
  RETURN_IF_BAD(jobs_->Watch(req->id(), absl::Milliseconds(250), [&](const v1::Job& job) {
    if (ctx->IsCancelled()) return false;
    return writer->Write(job);
  }));
  return grpc::Status::OK;
}

grpc::Status ServerService::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* req,
                                      v1::Job* resp) {
  RETURN_IF_BAD(ValidateId(req->id(), "id"));
  auto j = jobs_->Cancel(req->id());
  RETURN_IF_BAD(j.status());
  *resp = *j;
  return grpc::Status::OK;
}

grpc::Status ServerService::RestoreToHostDevice(const v1::RestoreRequest& req, v1::Job* resp) {
  const v1::HostDeviceTarget& t = req.host_device();
  RETURN_IF_BAD(ValidateHostName(t.host(), "host_device.host"));
  if (t.device().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("host_device.device: empty"));
  }
  auto host = catalog_->GetHost(t.host());
  RETURN_IF_BAD(host.status());
  auto use = uses_.Acquire(req.backup_id(),
                           absl::StrCat("a restore onto ", t.host(), ":", t.device()));
  RETURN_IF_BAD(use.status());
  auto backup = catalog_->GetBackup(req.backup_id());
  RETURN_IF_BAD(backup.status());
  int ordinal = -1;
  std::vector<std::string> names;
  for (int i = 0; i < backup->devices_size(); ++i) {
    names.push_back(backup->devices(i).device());
    if (backup->devices(i).device() == req.device()) ordinal = i;
  }
  if (req.device().empty() && backup->devices_size() == 1) ordinal = 0;
  if (ordinal < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("device: ", req.device().empty() ? "required" : "'" + req.device() + "' is not",
                     " in backup ", backup->id(), " (it holds ", absl::StrJoin(names, ", "),
                     ")")));
  }
  RestoreHostRequest rr;
  rr.backup = *backup;
  rr.device_ordinal = ordinal;
  rr.host = host->name();
  rr.agent_address = host->agent_address();
  rr.target_device = t.device();
  v1::Job job;
  job.set_kind(v1::JOB_KIND_RESTORE);
  job.set_host(host->name());
  repo::Repository* repo = repo_;
  AgentConnector* agents = agents_;
  const std::string key = absl::StrCat("restore-host:", host->name(), ":", t.device());
  auto started = jobs_->Start(
      job, key, absl::StrCat("a restore onto ", host->name(), ":", t.device(), " is already running"),
      [repo, agents, rr, use = *use](JobContext& ctx) {
        absl::Status s = RunRestoreToHostDevice(repo, agents, rr, ctx);
        use->Release();
        return s;
      });
  RETURN_IF_BAD(started.status());
  *resp = *started;
  return grpc::Status::OK;
}

}  // namespace blkfleet::server
