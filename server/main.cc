// SPDX-License-Identifier: Apache-2.0
// blkfleet-server: the central backup server (docs/server.md).
#include <grpcpp/grpcpp.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/durable_file.h"
#include "common/metrics.h"
#include "common/metrics_grpc.h"
#include "common/tls.h"
#include "server/agent_client.h"
#include "server/authz.h"
#include "server/catalog/sqlite_catalog.h"
#include "server/job_manager.h"
#include "server/prune_job.h"
#include "server/server_metrics.h"
#include "server/repository/repository.h"
#include "server/scheduler.h"
#include "server/server_service.h"
#include "server/snapshot_release.h"

namespace {

// The largest request the operator API takes. This listener serves only
// blkfleet.server.v1.Server (plus health and reflection): image data flows
// over the server's own client channels to agents (agent_client.cc, 65 MiB).
// The largest operator request is an ApplyPolicies document, a few KiB in
// practice; 4 MiB (gRPC's default) leaves room for thousands of policies and
// bounds what a caller can make the server hold per call.
constexpr int kOperatorApiMaxReceiveBytes = 4 << 20;

// Linking grpc++_reflection registers its builder plugin for every server
// (a static initializer); without --grpc-reflection this option takes it
// out again, so reflection is served only when asked for.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                    return p->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};

int Fail(const std::string& msg) {
  std::cerr << "blkfleet-server: " << msg << "\n";
  return 1;
}

// Takes the data directory for this process (an advisory lock on
// <data_dir>/lock, held until exit): two servers on one catalog and
// repository would each take the other's backups for leftovers.
absl::Status LockDataDir(const std::string& data_dir) {
  const std::string path = data_dir + "/lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return blkfleet::ErrnoStatus(errno, absl::StrCat("open ", path));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) return blkfleet::ErrnoStatus(err, absl::StrCat("lock ", path));
    return absl::FailedPreconditionError(absl::StrCat(
        "the data directory ", data_dir, " is in use by another blkfleet-server",
        n > 0 ? absl::StrCat(" (pid ", absl::StripAsciiWhitespace(pid), ")") : ""));
  }
  const std::string me = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) < 0) {
    // The pid is a courtesy for the message above; the lock is what counts.
  }
  return absl::OkStatus();  // fd stays open: the lock lives as long as the process
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blkfleet-server: catalog, repository and jobs of blkfleet backups"};
  std::string listen = "127.0.0.1:7480";
  std::string data_dir;
  std::string port_file;
  bool insecure = false;
  blkfleet::tls::TlsFiles tls_files;
  std::string gc_grace_text = "24h";
  std::string policy_file;
  std::string metrics_listen;  // empty: no /metrics endpoint
  std::string metrics_port_file;
  std::string repo_key_file;
  std::string init_repo_key;
  bool grpc_reflection = false;
  app.add_option("--listen", listen, "address:port to serve on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--data-dir", data_dir,
                 "directory of the catalog (catalog.db) and repository (repo/); required "
                 "unless --init-repo-key");
  app.add_option("--repo-key-file", repo_key_file,
                 "key of an encrypted repository (64 hex digits, mode 0600 or 0400; "
                 "docs/security.md). A new repository created with it is encrypted");
  app.add_option("--init-repo-key", init_repo_key,
                 "write a new random repository key to this file (mode 0400, never "
                 "overwritten) and exit");
  app.add_option("--port-file", port_file, "write the bound port to this file");
  app.add_option("--metrics-listen", metrics_listen,
                 "host:port to serve Prometheus metrics on at /metrics, e.g. 127.0.0.1:9480 "
                 "(port 0: any free port; default: off)");
  app.add_option("--metrics-port-file", metrics_port_file,
                 "write the bound metrics port to this file");
  app.add_flag("--insecure", insecure,
               "plaintext gRPC to clients and agents, no authentication (local experiments only)");
  app.add_option("--tls-ca", tls_files.ca, "CA certificate (PEM) clients and agents must chain to");
  app.add_option("--tls-cert", tls_files.cert,
                 "this server's certificate (PEM, `blkfleet pki issue --kind server`)");
  app.add_option("--tls-key", tls_files.key, "this server's private key (PEM)");
  app.add_option("--gc-grace", gc_grace_text,
                 "garbage collection keeps unreferenced chunk files younger than this "
                 "(e.g. 24h, 90m, 30s)")
      ->capture_default_str();
  app.add_option("--policy-file", policy_file,
                 "apply this policy document (YAML, docs/policies.md) at start; a bad "
                 "document stops the server");
  app.add_flag("--grpc-reflection", grpc_reflection,
               "serve gRPC server reflection (grpc.reflection.v1alpha), e.g. for grpcurl; "
               "callers need the read-only role");
  CLI11_PARSE(app, argc, argv);
  if (!init_repo_key.empty()) {
    if (absl::Status s = blkfleet::repo::GenerateRepoKeyFile(init_repo_key); !s.ok()) {
      return Fail(absl::StrCat("--init-repo-key: ", s.message()));
    }
    std::cout << "wrote a new repository key to " << init_repo_key
              << " (keep a copy apart from the repository: without it the backups are lost)\n";
    return 0;
  }
  if (data_dir.empty()) return Fail("--data-dir is required");
  std::optional<blkfleet::repo::RepoKey> repo_key;
  if (!repo_key_file.empty()) {
    auto k = blkfleet::repo::LoadRepoKeyFile(repo_key_file, "--repo-key-file");
    if (!k.ok()) return Fail(std::string(k.status().message()));
    repo_key = std::move(*k);
  }
  absl::Duration gc_grace;
  if (!absl::ParseDuration(gc_grace_text, &gc_grace) || gc_grace < absl::ZeroDuration()) {
    return Fail(absl::StrCat("--gc-grace '", gc_grace_text,
                             "' is not a duration of zero or more (e.g. 24h, 90m, 30s)"));
  }

  // Chunks travel in buffers of up to 64 MiB. Keep buffers of that size in
  // the heap instead of a fresh mmap per message (page faults and zeroing on
  // every chunk), and do not hand freed heap back to the kernel at once.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);

  // Mutual TLS unless --insecure (docs/security.md); file problems are
  // reported here, before anything is opened.
  std::shared_ptr<grpc::ServerCredentials> server_creds = grpc::InsecureServerCredentials();
  std::shared_ptr<grpc::ChannelCredentials> agent_creds = grpc::InsecureChannelCredentials();
  if (insecure) {
    if (!tls_files.ca.empty() || !tls_files.cert.empty() || !tls_files.key.empty()) {
      return Fail("--insecure and --tls-* exclude each other");
    }
  } else {
    if (tls_files.ca.empty() && tls_files.cert.empty() && tls_files.key.empty()) {
      return Fail("give --tls-ca, --tls-cert and --tls-key (mutual TLS; see docs/security.md), "
                  "or --insecure to serve plaintext gRPC (local experiments only)");
    }
    auto tls = blkfleet::tls::LoadTlsMaterial(tls_files);
    if (!tls.ok()) return Fail(std::string(tls.status().message()));
    if (tls->identity.kind != blkfleet::tls::Kind::kServer) {
      return Fail(absl::StrCat("--tls-cert ", tls_files.cert, " is the certificate of ",
                               tls->identity.Describe(),
                               ": the server needs one issued with --kind server"));
    }
    server_creds = blkfleet::tls::MutualTlsServerCredentials(
        *tls, std::make_shared<blkfleet::server::ServerAuthzProcessor>());
    agent_creds = blkfleet::tls::MutualTlsChannelCredentials(*tls);
  }
  if (absl::Status s = blkfleet::MakeDirectories(data_dir); !s.ok()) return Fail(s.ToString());
  if (absl::Status s = LockDataDir(data_dir); !s.ok()) return Fail(std::string(s.message()));
  auto repo = blkfleet::repo::Repository::Open(data_dir + "/repo",
                                               repo_key ? &*repo_key : nullptr);
  if (!repo.ok()) return Fail(absl::StrCat("repository: ", repo.status().ToString()));
  auto catalog = blkfleet::catalog::SqliteCatalog::Open(data_dir + "/catalog.db");
  if (!catalog.ok()) return Fail(absl::StrCat("catalog: ", catalog.status().ToString()));
  auto failed = (*catalog)->FailUnfinishedJobs("the server stopped while the job ran");
  if (!failed.ok()) return Fail(failed.status().ToString());
  // Snapshots those jobs held: released once the agent connector exists.
  auto held = (*catalog)->ListHeldSnapshots();
  if (!held.ok()) return Fail(absl::StrCat("held snapshots: ", held.status().ToString()));
  // A prune that stopped after deleting a backup from the catalog: its files go now.
  auto finished = blkfleet::server::FinishBackupRemovals(catalog->get(), repo->get());
  if (!finished.ok()) return Fail(absl::StrCat("pending backup removals: ", finished.status().ToString()));
  if (*finished > 0) {
    std::cerr << "blkfleet-server: removed the files of " << *finished
              << " pruned backups (an interrupted prune)\n";
  }
  // A backup job killed between writing its files and the catalog commit: no
  // job runs yet, so every backup directory the catalog does not know goes.
  auto orphans = blkfleet::server::RemoveOrphanBackups(catalog->get(), repo->get(),
                                                       absl::InfiniteFuture(), false);
  if (!orphans.ok()) return Fail(absl::StrCat("failed backups' files: ", orphans.status().ToString()));
  if (!orphans->empty()) {
    std::cerr << "blkfleet-server: removed the files of " << orphans->size()
              << " backups that never committed (ids " << absl::StrJoin(*orphans, ", ") << ")\n";
  }
  blkfleet::server::metrics::Init();
  if (absl::Status s = blkfleet::server::metrics::Restore(catalog->get()); !s.ok()) {
    return Fail(absl::StrCat("metrics from the catalog: ", s.ToString()));
  }
  // The endpoint stops before the catalog and repository go: its scrape
  // reads the repository.
  struct StopMetrics {
    ~StopMetrics() { blkfleet::metrics::StopServing(); }
  } stop_metrics;
  if (!metrics_listen.empty()) {
    blkfleet::server::metrics::WatchRepository(repo->get(), absl::Minutes(1));
    auto metrics_port = blkfleet::metrics::StartServing(metrics_listen, "--metrics-listen");
    if (!metrics_port.ok()) return Fail(std::string(metrics_port.status().message()));
    std::cout << "metrics on http://" << metrics_listen.substr(0, metrics_listen.rfind(':')) << ":"
              << *metrics_port << "/metrics" << std::endl;
    if (!metrics_port_file.empty()) {
      if (absl::Status s = blkfleet::WriteFileDurably(metrics_port_file,
                                                      absl::StrCat(*metrics_port, "\n"));
          !s.ok()) {
        return Fail(s.ToString());
      }
    }
  } else if (!metrics_port_file.empty()) {
    return Fail("--metrics-port-file needs --metrics-listen");
  }

  // Signals are taken by sigwait below; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  blkfleet::server::AgentConnector agents(agent_creds);
  blkfleet::server::SnapshotReleaser releaser(catalog->get(), &agents, std::move(*held));
  auto jobs = std::make_unique<blkfleet::server::JobManager>(catalog->get(),
                                                             blkfleet::Clock::Real());
  blkfleet::server::BackupOptions options;
  blkfleet::server::ServerService service(catalog->get(), repo->get(), &agents, jobs.get(),
                                          blkfleet::Clock::Real(), options, gc_grace);
  blkfleet::server::ServerService* svc = &service;
  blkfleet::server::JobManager* job_manager = jobs.get();
  auto scheduler = std::make_unique<blkfleet::server::Scheduler>(
      catalog->get(), blkfleet::Clock::Real(),
      [svc](const std::string& host, const std::vector<std::string>& devices) {
        blkfleet::server::v1::RunBackupRequest req;
        req.set_host(host);
        for (const auto& d : devices) req.add_devices(d);
        return svc->StartBackup(req);
      },
      [job_manager](const std::string& id) { return job_manager->Get(id); });
  if (absl::Status s = scheduler->LoadStored(); !s.ok()) return Fail(s.ToString());
  if (!policy_file.empty()) {
    std::ifstream in(policy_file);
    if (!in) return Fail(absl::StrCat("--policy-file ", policy_file, ": cannot open"));
    std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto applied = scheduler->Apply(doc, /*dry_run=*/false);
    if (!applied.ok()) {
      return Fail(absl::StrCat("--policy-file ", policy_file, ": ", applied.status().message()));
    }
  }
  service.SetScheduler(scheduler.get());
  scheduler->Start();
  // The refusal family exists from the start (rules and dashboards name
  // it; increase() needs the zero before the first refusal).
  blkfleet::server::RefusedCounter("unknown", "UNAUTHENTICATED", "none");
  grpc::EnableDefaultHealthCheckService(true);
  if (grpc_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!grpc_reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  builder.experimental().SetInterceptorCreators(
      blkfleet::metrics::RpcMetricsInterceptors("blkfleet_server"));
  int port = 0;
  builder.AddListeningPort(listen, server_creds, &port);
  builder.SetMaxReceiveMessageSize(kOperatorApiMaxReceiveBytes);
  // Replies (lists of backups, jobs) may be larger than requests.
  builder.SetMaxSendMessageSize(blkfleet::server::kMaxMessageBytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail(absl::StrCat("cannot listen on ", listen));
  // Health by service name, as load balancers and grpc_health_probe ask it.
  server->GetHealthCheckService()->SetServingStatus(
      blkfleet::server::v1::Server::service_full_name(), true);
  std::string host = listen.substr(0, listen.rfind(':'));
  std::cout << "listening on " << host << ":" << port << std::endl;
  if (!port_file.empty()) {
    if (absl::Status s = blkfleet::WriteFileDurably(port_file, absl::StrCat(port, "\n")); !s.ok()) {
      server->Shutdown();
      return Fail(s.ToString());
    }
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  std::cerr << "blkfleet-server: signal " << sig << ", shutting down\n";
  // Running jobs are cancelled (nothing partial is committed), then the
  // service stops.
  scheduler->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  jobs.reset();
  return 0;
}
