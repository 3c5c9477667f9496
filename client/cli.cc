// SPDX-License-Identifier: Apache-2.0
#include "client/cli.h"

#include <fstream>
#include <iterator>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "blkfleet/server/v1/server.grpc.pb.h"
#include "client/format.h"
#include "client/pki.h"
#include "common/tls.h"

namespace blkfleet::cli {
namespace {

namespace v1 = ::blkfleet::server::v1;

constexpr int kFail = 1;
constexpr auto kCallTimeout = std::chrono::seconds(30);
constexpr int kMaxMessageBytes = 64 * 1024 * 1024;

std::string CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::CANCELLED: return "cancelled";
    case grpc::StatusCode::INVALID_ARGUMENT: return "invalid argument";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "deadline exceeded";
    case grpc::StatusCode::NOT_FOUND: return "not found";
    case grpc::StatusCode::ALREADY_EXISTS: return "already exists";
    case grpc::StatusCode::PERMISSION_DENIED: return "permission denied";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "resource exhausted";
    case grpc::StatusCode::FAILED_PRECONDITION: return "failed precondition";
    case grpc::StatusCode::ABORTED: return "aborted";
    case grpc::StatusCode::UNIMPLEMENTED: return "not implemented";
    case grpc::StatusCode::UNAVAILABLE: return "unavailable";
    case grpc::StatusCode::DATA_LOSS: return "data loss";
    default: return "error";
  }
}

// Thrown from stub() when the TLS files cannot be used; Run prints it.
struct ConnectError {
  std::string message;
};

class Cli {
 public:
  explicit Cli(CliIo io) : io_(io) {}

  int Run(const std::vector<std::string>& args);

 private:
  v1::Server::Stub& stub() {
    if (!stub_) {
      grpc::ChannelArguments ca;
      ca.SetMaxReceiveMessageSize(kMaxMessageBytes);
      stub_ = v1::Server::NewStub(grpc::CreateCustomChannel(server_, Credentials(), ca));
    }
    return *stub_;
  }
  // Mutual TLS with the operator's certificate, or plaintext with --insecure.
  std::shared_ptr<grpc::ChannelCredentials> Credentials() {
    if (insecure_) return grpc::InsecureChannelCredentials();
    if (tls_.ca.empty() && tls_.cert.empty() && tls_.key.empty()) {
      throw ConnectError{
          "give --tls-ca, --tls-cert and --tls-key (or $BLKFLEET_TLS_CA, $BLKFLEET_TLS_CERT, "
          "$BLKFLEET_TLS_KEY): an operator certificate from `blkfleet pki issue --kind "
          "operator`; or --insecure for a server serving plaintext"};
    }
    absl::StatusOr<tls::TlsMaterial> m = tls::LoadTlsMaterial(tls_);
    if (!m.ok()) throw ConnectError{std::string(m.status().message())};
    return tls::MutualTlsChannelCredentials(*m);
  }
  void Deadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  }
  int RpcError(const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      io_.err << "blkfleet: cannot reach server " << server_ << ": " << s.error_message() << "\n";
    } else {
      io_.err << "blkfleet: " << CodeName(s.error_code()) << ": " << s.error_message() << "\n";
    }
    return kFail;
  }
  void Print(const google::protobuf::Message& m) { io_.out << ToJson(m) << "\n"; }

  int HostAdd();
  int HostList();
  int HostShow();
  int BackupRun();
  int BackupList();
  int Restore();
  int BackupVerify();
  int CollectGarbage();
  int PolicyApply();
  int PolicyList(bool document);
  int BackupProtect(bool on);
  int JobList();
  int JobShow();
  int JobCancel();
  int BackupShow();
  int Prune();
  // Prints the started job, or follows it to its end with --wait; `last`
  // (optional) receives its final state.
  int Started(const v1::Job& job, bool wait, v1::Job* last_out = nullptr);

  CliIo io_;
  std::string server_;
  bool json_ = false;
  bool insecure_ = false;
  tls::TlsFiles tls_;
  std::unique_ptr<v1::Server::Stub> stub_;

  // Arguments of the subcommands.
  std::string name_, agent_, backup_id_, to_, job_id_, host_filter_;
  std::vector<std::string> devices_;
  std::string device_;
  std::string target_host_, target_device_;
  bool full_ = false, wait_ = false, overwrite_ = false, dry_run_ = false;
  uint32_t chunk_size_ = 0;
};

int Cli::HostAdd() {
  v1::CreateHostRequest req;
  req.mutable_host()->set_name(name_);
  req.mutable_host()->set_agent_address(agent_);
  for (const auto& d : devices_) req.mutable_host()->add_default_devices(d);
  v1::Host h;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().CreateHost(&ctx, req, &h);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(h);
  } else {
    io_.out << "host " << h.name() << " added (agent " << h.agent_address() << ")\n";
  }
  return 0;
}

int Cli::HostList() {
  v1::ListHostsResponse all;
  v1::ListHostsRequest req;
  req.set_page_size(1000);
  do {
    v1::ListHostsResponse page;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::Status s = stub().ListHosts(&ctx, req, &page);
    if (!s.ok()) return RpcError(s);
    for (auto& h : *page.mutable_hosts()) *all.add_hosts() = std::move(h);
    req.set_page_token(page.next_page_token());
  } while (!req.page_token().empty());
  if (json_) {
    Print(all);
  } else {
    PrintHosts(all, io_.out);
  }
  return 0;
}

int Cli::HostShow() {
  v1::GetHostRequest req;
  req.set_name(name_);
  v1::Host h;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().GetHost(&ctx, req, &h);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(h);
  } else {
    PrintHost(h, io_.out);
  }
  return 0;
}

int Cli::Started(const v1::Job& job, bool wait, v1::Job* last_out) {
  if (!wait) {
    if (json_) {
      Print(job);
    } else {
      io_.out << "job " << job.id() << " started (" << JobKindName(job.kind());
      if (!job.host().empty()) io_.out << " of host " << job.host();
      io_.out << ")\n";
    }
    return 0;
  }
  grpc::ClientContext ctx;
  v1::WatchJobRequest req;
  req.set_id(job.id());
  auto reader = stub().WatchJob(&ctx, req);
  v1::Job last = job;
  v1::Job j;
  bool drew = false;
  while (reader->Read(&j)) {
    last = j;
    if (io_.progress_tty && !json_) {
      io_.err << "\r\033[K[job " << j.id() << "] " << ProgressLine(j) << std::flush;
      drew = true;
    }
  }
  if (drew) io_.err << "\n";
  grpc::Status s = reader->Finish();
  if (!s.ok()) return RpcError(s);
  if (last_out) *last_out = last;
  if (json_) Print(last);
  switch (last.state()) {
    case v1::JOB_STATE_SUCCEEDED:
      if (!json_) {
        io_.out << "job " << last.id() << " succeeded";
        if (!last.backup_id().empty()) {
          const char* what = last.kind() == v1::JOB_KIND_BACKUP    ? ": backup "
                             : last.kind() == v1::JOB_KIND_VERIFY ? ": verified backup "
                                                                  : ": restored backup ";
          io_.out << what << last.backup_id();
        }
        if (!last.summary().empty()) io_.out << ": " << last.summary();
        io_.out << "\n";
      }
      return 0;
    case v1::JOB_STATE_FAILED:
      io_.err << "blkfleet: job " << last.id() << " failed: " << last.error() << "\n";
      if (!last.summary().empty()) io_.err << "blkfleet: " << last.summary() << "\n";
      return kFail;
    case v1::JOB_STATE_CANCELLED:
      io_.err << "blkfleet: job " << last.id() << " was cancelled"
              << (last.error().empty() ? "" : ": " + last.error()) << "\n";
      return kFail;
    default:
      io_.err << "blkfleet: job " << last.id() << " ended in state " << JobStateName(last.state())
              << "\n";
      return kFail;
  }
}

int Cli::BackupRun() {
  v1::RunBackupRequest req;
  req.set_host(name_);
  for (const auto& d : devices_) req.add_devices(d);
  req.set_force_full(full_);
  req.set_chunk_size_bytes(chunk_size_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().RunBackup(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  return Started(job, wait_);
}

int Cli::BackupList() {
  v1::ListBackupsResponse all;
  v1::ListBackupsRequest req;
  req.set_host(host_filter_);
  req.set_page_size(1000);
  do {
    v1::ListBackupsResponse page;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::Status s = stub().ListBackups(&ctx, req, &page);
    if (!s.ok()) return RpcError(s);
    for (auto& b : *page.mutable_backups()) *all.add_backups() = std::move(b);
    req.set_page_token(page.next_page_token());
  } while (!req.page_token().empty());
  if (json_) {
    Print(all);
  } else {
    PrintBackups(all, io_.out);
  }
  return 0;
}

int Cli::Restore() {
  v1::RestoreRequest req;
  req.set_backup_id(backup_id_);
  req.set_device(device_);
  // A file on the server (--to) or a device of a host (--host and
  // --target-device), never both.
  if (!target_host_.empty() || !target_device_.empty()) {
    if (!to_.empty() || target_host_.empty() || target_device_.empty()) {
      io_.err << "blkfleet: restore: give --to FILE, or --host HOST with --target-device DEV\n";
      return 2;
    }
    req.mutable_host_device()->set_host(target_host_);
    req.mutable_host_device()->set_device(target_device_);
  } else {
    if (to_.empty()) {
      io_.err << "blkfleet: restore: give --to FILE, or --host HOST with --target-device DEV\n";
      return 2;
    }
    req.set_file_path(to_);
  }
  req.set_overwrite(overwrite_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().Restore(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  return Started(job, wait_);
}

int Cli::BackupVerify() {
  v1::VerifyBackupRequest req;
  req.set_backup_id(backup_id_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().VerifyBackup(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  return Started(job, wait_);
}

int Cli::CollectGarbage() {
  v1::CollectGarbageRequest req;
  req.set_dry_run(dry_run_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().CollectGarbage(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  return Started(job, wait_);
}

int Cli::BackupShow() {
  v1::GetBackupRequest req;
  req.set_id(backup_id_);
  v1::Backup b;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().GetBackup(&ctx, req, &b);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(b);
  } else {
    PrintBackup(b, io_.out);
  }
  return 0;
}

int Cli::Prune() {
  v1::PruneRequest req;
  req.set_host(host_filter_);
  req.set_dry_run(dry_run_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().Prune(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  // The decisions are the output: always follow the job to its end.
  v1::Job last;
  const int rc = Started(job, /*wait=*/true, &last);
  if (!json_ && last.has_prune_result()) PrintPruneResult(last.prune_result(), io_.out);
  return rc;
}

int Cli::PolicyApply() {
  std::ifstream in(to_);
  if (!in) {
    io_.err << "blkfleet: cannot open policy file " << to_ << "\n";
    return kFail;
  }
  v1::ApplyPoliciesRequest req;
  req.set_document(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
  req.set_dry_run(dry_run_);
  v1::ApplyPoliciesResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().ApplyPolicies(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(resp);
  } else {
    io_.out << (dry_run_ ? "valid: " : "applied: ") << resp.policies_size() << " policies\n";
    for (const auto& p : resp.policies()) {
      io_.out << "  " << p.name() << ": " << p.host_group() << " / " << p.device_set() << " at '"
              << p.schedule() << "' " << p.time_zone() << "\n";
    }
  }
  return 0;
}

int Cli::PolicyList(bool document) {
  v1::ListPoliciesResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().ListPolicies(&ctx, v1::ListPoliciesRequest(), &resp);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(resp);
    return 0;
  }
  if (document) {
    io_.out << resp.document();
    return 0;
  }
  for (const auto& p : resp.policies()) {
    io_.out << p.name() << ": hosts " << p.hosts_size() << " (" << p.host_group() << "), devices "
            << p.device_set() << ", cron '" << p.schedule() << "' " << p.time_zone() << "\n";
  }
  for (const auto& t : resp.targets()) {
    io_.out << "  " << t.policy() << " " << t.host() << ": next "
            << (t.has_next_run_time() ? absl::FormatTime(absl::FromUnixSeconds(t.next_run_time().seconds()))
                                      : std::string("-"))
            << ", last lag " << t.last_lag_ms() << " ms, attempt " << t.attempt() << ", "
            << (t.last_result().empty() ? std::string("not run yet") : t.last_result()) << "\n";
  }
  return 0;
}

int Cli::BackupProtect(bool on) {
  v1::ProtectBackupRequest req;
  req.set_id(backup_id_);
  req.set_protected_(on);
  v1::Backup b;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().ProtectBackup(&ctx, req, &b);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(b);
  } else {
    io_.out << "backup " << b.id() << (b.protected_() ? ": protected\n" : ": not protected\n");
  }
  return 0;
}

int Cli::JobList() {
  v1::ListJobsRequest req;
  req.set_host(host_filter_);
  req.set_page_size(100);
  v1::ListJobsResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().ListJobs(&ctx, req, &resp);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(resp);
  } else {
    PrintJobs(resp, io_.out);
  }
  return 0;
}

int Cli::JobShow() {
  v1::GetJobRequest req;
  req.set_id(job_id_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().GetJob(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(job);
  } else {
    PrintJob(job, io_.out);
  }
  return 0;
}

int Cli::JobCancel() {
  v1::CancelJobRequest req;
  req.set_id(job_id_);
  v1::Job job;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status s = stub().CancelJob(&ctx, req, &job);
  if (!s.ok()) return RpcError(s);
  if (json_) {
    Print(job);
  } else {
    io_.out << "job " << job.id() << ": cancel requested\n";
  }
  return 0;
}

int Cli::Run(const std::vector<std::string>& args) {
  CLI::App app{"blkfleet: operate blkfleet backups through blkfleet-server", "blkfleet"};
  app.require_subcommand(1);
  const char* env = std::getenv("BLKFLEET_SERVER");
  server_ = env && *env ? env : "127.0.0.1:7480";
  app.add_option("--server", server_, "server address (default: $BLKFLEET_SERVER or 127.0.0.1:7480)");
  app.add_flag("--json", json_, "print machine-readable JSON");
  auto env_or = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  tls_ = {env_or("BLKFLEET_TLS_CA"), env_or("BLKFLEET_TLS_CERT"), env_or("BLKFLEET_TLS_KEY")};
  app.add_flag("--insecure", insecure_, "plaintext gRPC to a server run with --insecure");
  app.add_option("--tls-ca", tls_.ca, "CA certificate (PEM) (default: $BLKFLEET_TLS_CA)");
  app.add_option("--tls-cert", tls_.cert,
                 "operator certificate (PEM) (default: $BLKFLEET_TLS_CERT)");
  app.add_option("--tls-key", tls_.key, "operator private key (PEM) (default: $BLKFLEET_TLS_KEY)");

  int rc = 0;
  pki::AddPkiCommands(app, io_.out, io_.err, &rc);
  auto* host = app.add_subcommand("host", "manage the hosts the server backs up");
  host->require_subcommand(1);
  auto* host_add = host->add_subcommand("add", "register a host and its agent");
  host_add->add_option("NAME", name_, "host name")->required();
  host_add->add_option("--agent", agent_, "host:port of the host's agent")->required();
  host_add->add_option("--device", devices_, "device backed up by default (repeatable)");
  host_add->callback([&] { rc = HostAdd(); });
  host->add_subcommand("list", "list hosts")->callback([&] { rc = HostList(); });
  auto* host_show = host->add_subcommand(
      "show", "a host in full: its agent, kernel, blksnap module and installed kernels");
  host_show->add_option("NAME", name_, "host name")->required();
  host_show->callback([&] { rc = HostShow(); });

  auto* backup = app.add_subcommand("backup", "run and list backups");
  backup->require_subcommand(1);
  auto* run = backup->add_subcommand("run", "back up a host now");
  run->add_option("HOST", name_, "host name")->required();
  run->add_option("--device", devices_, "device to back up (repeatable; default: the host's)");
  run->add_flag("--full", full_, "read every chunk even when an incremental would do");
  run->add_option("--chunk-size", chunk_size_, "chunk size in bytes for a device's first backup");
  run->add_flag("--wait", wait_, "follow the job to its end; exit non-zero unless it succeeds");
  run->callback([&] { rc = BackupRun(); });
  auto* blist = backup->add_subcommand("list", "list backups, newest first");
  blist->add_option("--host", host_filter_, "only backups of this host");
  blist->callback([&] { rc = BackupList(); });

  auto* verify = backup->add_subcommand("verify", "re-read and re-hash every chunk of a backup");
  verify->add_option("BACKUP_ID", backup_id_, "backup id")->required();
  verify->add_flag("--wait", wait_, "follow the job to its end; exit non-zero unless it succeeds");
  verify->callback([&] { rc = BackupVerify(); });

  auto* protect = backup->add_subcommand("protect", "keep a backup from prune");
  protect->add_option("BACKUP_ID", backup_id_, "backup id")->required();
  protect->callback([&] { rc = BackupProtect(true); });
  auto* unprotect = backup->add_subcommand("unprotect", "let prune remove a backup again");
  unprotect->add_option("BACKUP_ID", backup_id_, "backup id")->required();
  unprotect->callback([&] { rc = BackupProtect(false); });

  auto* bshow = backup->add_subcommand("show", "one backup in full: devices, sizes, chunks, times");
  bshow->add_option("ID", backup_id_, "backup id")->required();
  bshow->callback([&] { rc = BackupShow(); });

  auto* prune = app.add_subcommand(
      "prune", "remove the backups no retention rule keeps (docs/policies.md); waits for the job");
  prune->add_option("--host", host_filter_, "only this host (default: every host with a policy)");
  prune->add_flag("--dry-run", dry_run_, "list what would be kept and removed, remove nothing");
  prune->callback([&] { rc = Prune(); });

  auto* policy = app.add_subcommand("policy", "schedules, retention and device sets (docs/policies.md)");
  policy->require_subcommand(1);
  auto* papply = policy->add_subcommand("apply", "validate and apply a policy document (YAML)");
  papply->add_option("FILE", to_, "policy document")->required();
  papply->add_flag("--dry-run", dry_run_, "validate only");
  papply->callback([&] { rc = PolicyApply(); });
  policy->add_subcommand("list", "the applied policies and each target's schedule state")
      ->callback([&] { rc = PolicyList(false); });
  policy->add_subcommand("show", "print the applied policy document")
      ->callback([&] { rc = PolicyList(true); });

  auto* gc = app.add_subcommand(
      "gc", "remove chunk files no backup uses (older than the server's --gc-grace)");
  gc->add_flag("--dry-run", dry_run_, "count what would be removed, remove nothing");
  gc->add_flag("--wait", wait_, "follow the job to its end; exit non-zero unless it succeeds");
  gc->callback([&] { rc = CollectGarbage(); });

  auto* restore = app.add_subcommand(
      "restore", "restore a device of a backup to a file on the server or onto a device of a host");
  restore->add_option("BACKUP_ID", backup_id_, "backup id")->required();
  restore->add_option("--to", to_, "absolute path of the target file on the server");
  restore->add_option("--host", target_host_,
                      "host to restore onto, through its agent (with --target-device)");
  restore->add_option("--target-device", target_device_,
                      "device of --host to overwrite; the agent must allow it (--restore-device)");
  restore->add_option("--device", device_, "device of the backup (needed when it has several)");
  restore->add_flag("--overwrite", overwrite_, "replace an existing target file");
  restore->add_flag("--wait", wait_, "follow the job to its end; exit non-zero unless it succeeds");
  restore->callback([&] { rc = Restore(); });

  auto* job = app.add_subcommand("job", "follow jobs");
  job->require_subcommand(1);
  auto* jlist = job->add_subcommand("list", "list jobs, newest first");
  jlist->add_option("--host", host_filter_, "only jobs of this host");
  jlist->callback([&] { rc = JobList(); });
  auto* jshow = job->add_subcommand("show", "show one job");
  jshow->add_option("ID", job_id_, "job id")->required();
  jshow->callback([&] { rc = JobShow(); });
  auto* jwatch = job->add_subcommand("watch", "follow a job to its end");
  jwatch->add_option("ID", job_id_, "job id")->required();
  jwatch->callback([&] {
    v1::Job j;
    j.set_id(job_id_);
    rc = Started(j, true);
  });
  auto* jcancel = job->add_subcommand("cancel", "ask a running job to stop");
  jcancel->add_option("ID", job_id_, "job id")->required();
  jcancel->callback([&] { rc = JobCancel(); });

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, io_.out, io_.err);
  } catch (const ConnectError& e) {
    io_.err << "blkfleet: " << e.message << "\n";
    return kFail;
  }
  return rc;
}

}  // namespace

int RunCli(const std::vector<std::string>& args, CliIo io) { return Cli(io).Run(args); }

}  // namespace blkfleet::cli
