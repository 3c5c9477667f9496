// SPDX-License-Identifier: Apache-2.0
// blkfleet-agent: serves blkfleet.agent.v1.Agent over a snapshot backend.

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "agent/agent_service.h"
#include "agent/block_use.h"
#include "common/durable_file.h"
#include "common/metrics.h"
#include "common/metrics_grpc.h"
#include "common/tls.h"
#include "agent/flags.h"
#include "agent/kernel_backend.h"
#include "agent/sim_backend.h"
#include "agent/sim_workload_service.h"

namespace blkfleet::agent {
namespace {

struct Flags {
  std::string listen = "127.0.0.1:7401";
  std::string port_file;
  std::string metrics_listen;  // empty: no /metrics endpoint
  std::string metrics_port_file;
  std::string backend = "sim";
  std::string sim_dir;
  std::vector<std::string> sim_devices;
  std::vector<std::string> devices;
  std::string sim_oracle_dir;
  std::string diff_storage_dir;
  std::string diff_storage_limit = "1GiB";
  std::string diff_storage_max_limit;  // empty: --diff-storage-limit
  std::vector<std::string> diff_storage_devices;
  std::string hostname;
  bool insecure = false;
  tls::TlsFiles tls_files;
  std::vector<std::string> allowed_servers;
  int stream_threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  std::string snapshot_hook;
  int snapshot_hook_timeout_s = 600;
  std::vector<std::string> snapshot_devices;
  std::vector<std::string> restore_devices;
  std::string modules_dir;  // empty: /lib/modules for kernel, none for sim
  std::string control_path = "/dev/blksnap-control";
};

constexpr char kDefaultKernelDiffDir[] = "/var/lib/blkfleet-agent/diff";

int Fail(const std::string& message) {
  std::fprintf(stderr, "blkfleet-agent: %s\n", message.c_str());
  return 2;
}

std::string SystemHostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// Writes the port to `path` through a temporary file, so a reader polling
// for the file never sees it half written.
bool WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int Run(const Flags& flags) {
  // Mutual TLS unless --insecure: only the servers named in
  // --allowed-server may call (docs/security.md).
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  const bool any_tls = !flags.tls_files.ca.empty() || !flags.tls_files.cert.empty() ||
                       !flags.tls_files.key.empty() || !flags.allowed_servers.empty();
  if (flags.insecure) {
    if (any_tls) return Fail("--insecure and --tls-*/--allowed-server exclude each other");
  } else {
    if (!any_tls) {
      return Fail(
          "give --tls-ca, --tls-cert, --tls-key and --allowed-server (mutual TLS; see "
          "docs/security.md), or --insecure to serve plaintext gRPC (local experiments only: "
          "anyone who can reach the port controls the snapshots)");
    }
    absl::StatusOr<tls::TlsMaterial> material = tls::LoadTlsMaterial(flags.tls_files);
    if (!material.ok()) return Fail(std::string(material.status().message()));
    if (material->identity.kind != tls::Kind::kAgent) {
      return Fail(absl::StrCat("--tls-cert ", flags.tls_files.cert, " is the certificate of ",
                               material->identity.Describe(),
                               ": the agent needs one issued with --kind agent"));
    }
    if (flags.allowed_servers.empty()) {
      return Fail("--allowed-server is required with TLS: the name(s) of the server "
                  "certificates that may call this agent");
    }
    creds = tls::MutualTlsServerCredentials(
        *material, std::make_shared<tls::AllowedServersProcessor>(flags.allowed_servers));
  }
  if (flags.backend != "sim" && flags.backend != "kernel") {
    return Fail(absl::StrCat("--backend ", flags.backend, ": give sim or kernel"));
  }
  absl::StatusOr<uint64_t> limit = ParseByteSize(flags.diff_storage_limit);
  if (!limit.ok() || *limit == 0) {
    return Fail(absl::StrCat("--diff-storage-limit ", flags.diff_storage_limit,
                             ": give a positive size, e.g. 1GiB"));
  }
  uint64_t max_limit = *limit;
  if (!flags.diff_storage_max_limit.empty()) {
    absl::StatusOr<uint64_t> m = ParseByteSize(flags.diff_storage_max_limit);
    if (!m.ok() || *m < *limit) {
      return Fail(absl::StrCat("--diff-storage-max-limit ", flags.diff_storage_max_limit,
                               ": give a size of at least --diff-storage-limit (",
                               flags.diff_storage_limit, ")"));
    }
    max_limit = *m;
  }
  if (flags.stream_threads < 1 || flags.stream_threads > 64) {
    return Fail("--stream-threads: give 1 .. 64");
  }

  std::unique_ptr<Backend> backend;
  SimBackend* sim = nullptr;  // set with --backend sim: its workload service
  std::string diff_dir = flags.diff_storage_dir;
  if (flags.backend == "sim") {
    if (flags.sim_dir.empty()) return Fail("--backend sim needs --sim-dir");
    if (!flags.devices.empty()) return Fail("--device is for --backend kernel");
    SimOptions sim_options;
    sim_options.dir = flags.sim_dir;
    sim_options.oracle_dir = flags.sim_oracle_dir;
    for (const std::string& text : flags.sim_devices) {
      absl::StatusOr<SimDeviceSpec> spec = ParseSimDevice(text);
      if (!spec.ok()) return Fail(std::string(spec.status().message()));
      sim_options.devices.push_back(*spec);
    }
    absl::StatusOr<std::unique_ptr<SimBackend>> opened = SimBackend::Open(sim_options);
    if (!opened.ok()) return Fail(std::string(opened.status().message()));
    sim = opened->get();
    backend = std::move(opened).value();
    if (diff_dir.empty()) diff_dir = flags.sim_dir + "/diff";
  } else {
    if (!flags.sim_dir.empty() || !flags.sim_devices.empty() || !flags.sim_oracle_dir.empty()) {
      return Fail("--sim-* options are for --backend sim");
    }
    if (flags.devices.empty()) {
      return Fail("--backend kernel needs --device (the block devices to expose, repeatable)");
    }
    KernelBackendOptions kernel_options;
    kernel_options.devices = flags.devices;
    kernel_options.control_path = flags.control_path;
    kernel_options.modules_dir = flags.modules_dir.empty() ? "/lib/modules" : flags.modules_dir;
    // A host whose kernel has no module still runs its agent: it tells the
    // server why (GetAgentInfo) and refuses snapshots with that cause.
    kernel_options.start_without_module = true;
    absl::StatusOr<std::unique_ptr<KernelBackend>> opened = KernelBackend::Open(kernel_options);
    if (!opened.ok()) return Fail(std::string(opened.status().message()));
    backend = std::move(opened).value();
    if (absl::Status usable = backend->Usable(); !usable.ok()) {
      std::fprintf(stderr,
                   "blkfleet-agent: snapshots refused until restarted with the module: %s\n",
                   std::string(usable.message()).c_str());
    }
    if (diff_dir.empty()) diff_dir = kDefaultKernelDiffDir;
  }
  // The default difference storage folder is made here, so that the first
  // CreateSnapshot does not fail on a missing folder.
  if (absl::Status made = MakeDirectories(diff_dir); !made.ok()) {
    return Fail(absl::StrCat("--diff-storage-dir ", diff_dir, ": ", made.message()));
  }
  if (!flags.diff_storage_devices.empty() && flags.backend != "kernel") {
    return Fail("--diff-storage-device is for --backend kernel");
  }
  // A listed storage device is handed to the module whole: it must not be a
  // device to snapshot or to restore onto.
  for (const std::string& d : flags.diff_storage_devices) {
    struct stat st;
    if (::stat(d.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) {
      return Fail(absl::StrCat("--diff-storage-device ", d, ": not a block device"));
    }
    auto same = [&](const std::string& other) {
      struct stat os;
      return ::stat(other.c_str(), &os) == 0 && S_ISBLK(os.st_mode) &&
             (os.st_rdev == st.st_rdev || WholeDiskOf(st.st_rdev) == os.st_rdev ||
              WholeDiskOf(os.st_rdev) == st.st_rdev);
    };
    for (const std::string& o : flags.devices) {
      if (same(o)) return Fail(absl::StrCat("--diff-storage-device ", d, ": overlaps --device ", o));
    }
    for (const std::string& o : flags.restore_devices) {
      if (same(o)) {
        return Fail(absl::StrCat("--diff-storage-device ", d, ": overlaps --restore-device ", o));
      }
    }
  }
  if (flags.backend == "kernel") {
    // Copy-on-write into storage on the snapshotted device would write
    // under the snapshot it preserves (and the module refuses it late).
    struct stat ds;
    if (::stat(diff_dir.c_str(), &ds) == 0) {
      for (const std::string& d : flags.devices) {
        struct stat bs;
        if (::stat(d.c_str(), &bs) != 0) continue;  // reported by the backend
        if (ds.st_dev == bs.st_rdev || WholeDiskOf(ds.st_dev) == bs.st_rdev) {
          return Fail(absl::StrCat("--diff-storage-dir ", diff_dir, ": lies on ", d,
                                   ", a device to snapshot; give a folder on another device"));
        }
      }
    }
  }

  AgentServiceOptions options;
  options.hostname = flags.hostname.empty() ? SystemHostname() : flags.hostname;
  options.agent_version = BLKFLEET_VERSION;
  options.default_diff_storage_path = diff_dir;
  options.default_diff_storage_limit_bytes = *limit;
  options.max_diff_storage_limit_bytes = max_limit;
  options.diff_storage_devices = flags.diff_storage_devices;
  options.stream_threads = flags.stream_threads;
  options.modules_dir = !flags.modules_dir.empty()     ? flags.modules_dir
                        : flags.backend == "kernel" ? "/lib/modules"
                                                    : "";
  if (!flags.snapshot_hook.empty() && ::access(flags.snapshot_hook.c_str(), X_OK) != 0) {
    return Fail("--snapshot-hook: " + flags.snapshot_hook + " is not an executable file");
  }
  if (flags.snapshot_hook_timeout_s <= 0) {
    return Fail("--snapshot-hook-timeout: must be at least 1 second");
  }
  // The allowlists name devices the backend knows (sim) or block devices
  // (kernel); a typo is an error here rather than a refused restore later.
  absl::StatusOr<std::vector<DeviceInfo>> exposed = backend->ListDevices();
  if (!exposed.ok()) return Fail(std::string(exposed.status().message()));
  auto is_exposed = [&](const std::string& name) {
    return std::any_of(exposed->begin(), exposed->end(),
                       [&](const DeviceInfo& d) { return d.name == name; });
  };
  for (const std::string& d : flags.snapshot_devices) {
    if (!is_exposed(d)) {
      return Fail(absl::StrCat("--snapshot-device ", d, ": not a device of this agent (give one of ",
                               flags.backend == "sim" ? "--sim-device" : "--device", ")"));
    }
  }
  for (const std::string& d : flags.restore_devices) {
    if (flags.backend == "sim") {
      if (!is_exposed(d)) {
        return Fail(absl::StrCat("--restore-device ", d, ": not a --sim-device of this agent"));
      }
    } else {
      struct stat st;
      if (::stat(d.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) {
        return Fail(absl::StrCat("--restore-device ", d, ": not a block device"));
      }
    }
  }
  options.snapshot_devices = flags.snapshot_devices;
  options.restore_devices = flags.restore_devices;
  options.snapshot_hook = flags.snapshot_hook;
  options.snapshot_hook_timeout = absl::Seconds(flags.snapshot_hook_timeout_s);
  AgentService service(backend.get(), options);
  std::unique_ptr<SimWorkloadService> workload;
  if (sim != nullptr) workload = std::make_unique<SimWorkloadService>(sim);

  metrics::Init();
  // The endpoint stops before `service` goes: its scrape reads the service.
  struct StopMetrics {
    ~StopMetrics() { blkfleet::metrics::StopServing(); }
  } stop_metrics;
  if (!flags.metrics_listen.empty()) {
    blkfleet::metrics::OnScrape([&service] { metrics::SetSnapshotUsage(service.Usage()); });
    absl::StatusOr<int> metrics_port =
        blkfleet::metrics::StartServing(flags.metrics_listen, "--metrics-listen");
    if (!metrics_port.ok()) return Fail(std::string(metrics_port.status().message()));
    std::printf("metrics on http://%s:%d/metrics\n",
                flags.metrics_listen.substr(0, flags.metrics_listen.rfind(':')).c_str(),
                *metrics_port);
    std::fflush(stdout);
    if (!flags.metrics_port_file.empty() && !WritePortFile(flags.metrics_port_file, *metrics_port)) {
      return Fail(absl::StrCat("cannot write --metrics-port-file ", flags.metrics_port_file));
    }
  } else if (!flags.metrics_port_file.empty()) {
    return Fail("--metrics-port-file needs --metrics-listen");
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.experimental().SetInterceptorCreators(
      blkfleet::metrics::RpcMetricsInterceptors("blkfleet_agent"));
  int port = 0;
  builder.AddListeningPort(flags.listen, creds, &port);
  builder.RegisterService(&service);
  if (workload != nullptr) builder.RegisterService(workload.get());
  // A whole chunk travels in one message: up to 64 MiB plus framing, and a
  // batch of known digests may be large too. Raised on purpose from gRPC's
  // 4 MiB receive default (docs/agent.md).
  builder.SetMaxReceiveMessageSize(AgentService::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(AgentService::kMaxMessageBytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::StrCat("cannot listen on ", flags.listen));
  }
  // Health by service name, as load balancers and grpc_health_probe ask it.
  server->GetHealthCheckService()->SetServingStatus(
      blkfleet::agent::v1::Agent::service_full_name(), true);
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  std::printf("listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  if (!flags.port_file.empty() && !WritePortFile(flags.port_file, port)) {
    server->Shutdown();
    return Fail(absl::StrCat("cannot write --port-file ", flags.port_file));
  }

  // SIGINT/SIGTERM were blocked in main before any thread started.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "blkfleet-agent: signal %d, shutting down\n", sig);
  service.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  return 0;
}

}  // namespace
}  // namespace blkfleet::agent

int main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  blkfleet::agent::Flags flags;
  CLI::App app{
      "blkfleet-agent: coherent snapshots, change block tracking and image streaming "
      "for blkfleet backups"};
  app.add_option("--listen", flags.listen, "host:port to serve gRPC on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--port-file", flags.port_file, "write the bound port to this file");
  app.add_option("--metrics-listen", flags.metrics_listen,
                 "host:port to serve Prometheus metrics on at /metrics, e.g. 127.0.0.1:9401 "
                 "(port 0: any free port; default: off)");
  app.add_option("--metrics-port-file", flags.metrics_port_file,
                 "write the bound metrics port to this file");
  app.add_option("--backend", flags.backend, "snapshot backend: sim or kernel (the blksnap module)")
      ->capture_default_str();
  app.add_option("--device", flags.devices,
                 "kernel: a block device the agent exposes, e.g. /dev/vdb (repeatable; "
                 "nothing else can be snapshot)");
  app.add_option("--sim-dir", flags.sim_dir, "sim: folder of the simulated device files");
  app.add_option("--sim-device", flags.sim_devices,
                 "sim: NAME=SIZE, e.g. vda=64MiB (repeatable); made zeroed if missing, "
                 "kept if present");
  app.add_option("--sim-oracle-dir", flags.sim_oracle_dir,
                 "sim: write each device's content at every take here (tests)");
  app.add_option("--diff-storage-dir", flags.diff_storage_dir,
                 "difference storage folder of snapshots: the default, and the only tree a "
                 "CreateSnapshot may name storage in, symlinks and '..' refused (made if "
                 "missing; default: <sim-dir>/diff for sim, /var/lib/blkfleet-agent/diff for "
                 "kernel)");
  app.add_option("--diff-storage-device", flags.diff_storage_devices,
                 "kernel: a block device a CreateSnapshot may name as its difference storage "
                 "(repeatable; default: none); not a --device or --restore-device");
  app.add_option("--diff-storage-limit", flags.diff_storage_limit,
                 "default difference storage limit")
      ->capture_default_str();
  app.add_option("--diff-storage-max-limit", flags.diff_storage_max_limit,
                 "largest difference storage limit a CreateSnapshot may ask for (default: "
                 "--diff-storage-limit)");
  app.add_option("--hostname", flags.hostname, "host name to report (default: the system's)");
  app.add_option("--stream-threads", flags.stream_threads,
                 "threads reading, hashing and compressing image chunks")
      ->capture_default_str();
  app.add_option("--snapshot-hook", flags.snapshot_hook,
                 "program run after each take with the snapshot id and DEVICE=IMAGE arguments "
                 "(e.g. an independent checksum of the images); destroy waits for it");
  app.add_option("--snapshot-hook-timeout", flags.snapshot_hook_timeout_s,
                 "seconds a snapshot hook may run before it is killed")
      ->capture_default_str();
  app.add_option("--snapshot-device", flags.snapshot_devices,
                 "a device snapshots may include (repeatable; default: every device of the "
                 "agent, --device or --sim-device)");
  app.add_option("--restore-device", flags.restore_devices,
                 "a device restores (WriteImage) may overwrite (repeatable; default: none, "
                 "every restore is refused)");
  app.add_option("--modules-dir", flags.modules_dir,
                 "folder of the installed kernels' modules, reported by GetAgentInfo with a "
                 "blksnap module or not for each (default: /lib/modules for --backend kernel; "
                 "none for sim)");
  app.add_option("--control-device", flags.control_path,
                 "kernel: the blksnap module's control device")
      ->capture_default_str();
  app.add_flag("--insecure", flags.insecure,
               "serve plaintext gRPC, no authentication (local experiments only)");
  app.add_option("--tls-ca", flags.tls_files.ca, "CA certificate (PEM) the server must chain to");
  app.add_option("--tls-cert", flags.tls_files.cert,
                 "this agent's certificate (PEM, `blkfleet pki issue --kind agent`)");
  app.add_option("--tls-key", flags.tls_files.key, "this agent's private key (PEM)");
  app.add_option("--allowed-server", flags.allowed_servers,
                 "name of a server certificate allowed to call this agent (repeatable)");
  CLI11_PARSE(app, argc, argv);
  return blkfleet::agent::Run(flags);
}
