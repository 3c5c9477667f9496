// SPDX-License-Identifier: Apache-2.0
#include "tests/integration/fleet.h"

#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "common/sha256.h"
#include "common/status_util.h"
#include "tests/tools/pseudo_random.h"

namespace blkfleet::testing {

std::string Binaries::Agent() { return BLKFLEET_AGENT_BIN; }
std::string Binaries::Server() { return BLKFLEET_SERVER_BIN; }
std::string Binaries::Cli() { return BLKFLEET_CLI_BIN; }

namespace {

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(80 << 20);
  args.SetMaxSendMessageSize(80 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// The daemons write either "port" or "host:port" to their --port-file.
std::string Normalise(const std::string& addr) {
  return absl::StrContains(addr, ':') ? addr : absl::StrCat("127.0.0.1:", addr);
}

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  const char* base = getenv("TMPDIR");
  std::string tmpl = absl::StrCat(base ? base : "/tmp", "/", prefix, ".XXXXXX");
  char* d = mkdtemp(tmpl.data());
  return d ? std::string(d) : std::string();
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::unique_ptr<grpc::ClientContext> Ctx(int seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

absl::Status SimAgent::Start(const std::string& listen) {
  std::filesystem::create_directories(dir + "/sim");
  std::filesystem::create_directories(dir + "/oracle");
  std::filesystem::create_directories(dir + "/diff");
  std::string port_file = dir + "/agent.port";
  std::filesystem::remove(port_file);
  std::vector<std::string> argv = {Binaries::Agent(),
                                   "--listen", listen,
                                   "--port-file", port_file,
                                   "--backend", "sim",
                                   "--sim-dir", dir + "/sim",
                                   "--sim-oracle-dir", dir + "/oracle",
                                   "--diff-storage-dir", dir + "/diff",
                                   "--hostname", name,
                                   "--insecure"};
  for (const std::string& d : devices) {
    argv.push_back("--sim-device");
    argv.push_back(d);
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  const std::string metrics_port_file = dir + "/agent.metrics-port";
  std::filesystem::remove(metrics_port_file);
  if (metrics) {
    for (const char* a : {"--metrics-listen", "127.0.0.1:0", "--metrics-port-file"}) {
      argv.push_back(a);
    }
    argv.push_back(metrics_port_file);
  }
  BLKFLEET_RETURN_IF_ERROR(process.Start(argv, dir + "/agent.log"));
  auto addr = process.WaitForAddress(port_file, absl::Seconds(30));
  if (!addr.ok()) return addr.status();
  address = Normalise(*addr);
  if (metrics) {
    auto maddr = process.WaitForAddress(metrics_port_file, absl::Seconds(30));
    if (!maddr.ok()) return maddr.status();
    metrics_address = Normalise(*maddr);
  }
  auto channel = Channel(address);
  agent = agent::v1::Agent::NewStub(channel);
  workload = agent::simtest::v1::SimWorkload::NewStub(channel);
  return absl::OkStatus();
}

std::string SimAgent::OracleImage(const std::string& snapshot_id,
                                  const std::string& device) const {
  return absl::StrCat(dir, "/oracle/", snapshot_id, "-", device, ".img");
}

absl::Status ServerProcess::Start() {
  std::filesystem::create_directories(dir + "/data");
  std::string port_file = dir + "/server.port";
  std::filesystem::remove(port_file);
  std::vector<std::string> argv = {Binaries::Server(), "--listen", "127.0.0.1:0", "--port-file",
                                   port_file, "--data-dir", dir + "/data", "--insecure"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  const std::string metrics_port_file = dir + "/server.metrics-port";
  std::filesystem::remove(metrics_port_file);
  if (metrics) {
    for (const char* a : {"--metrics-listen", "127.0.0.1:0", "--metrics-port-file"}) {
      argv.push_back(a);
    }
    argv.push_back(metrics_port_file);
  }
  BLKFLEET_RETURN_IF_ERROR(process.Start(argv, dir + "/server.log"));
  auto addr = process.WaitForAddress(port_file, absl::Seconds(30));
  if (!addr.ok()) return addr.status();
  address = Normalise(*addr);
  if (metrics) {
    auto maddr = process.WaitForAddress(metrics_port_file, absl::Seconds(30));
    if (!maddr.ok()) return maddr.status();
    metrics_address = Normalise(*maddr);
  }
  stub = server::v1::Server::NewStub(Channel(address));
  return absl::OkStatus();
}

absl::StatusOr<server::v1::Job> WaitJob(server::v1::Server::Stub& s, const std::string& id,
                                        int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    server::v1::GetJobRequest req;
    req.set_id(id);
    server::v1::Job job;
    grpc::Status st = s.GetJob(Ctx(10).get(), req, &job);
    if (!st.ok()) return FromGrpcStatus(st);
    switch (job.state()) {
      case server::v1::JOB_STATE_SUCCEEDED:
      case server::v1::JOB_STATE_FAILED:
      case server::v1::JOB_STATE_CANCELLED:
        return job;
      default:
        break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("job ", id, " did not end in ", timeout_s, " s"));
}

absl::Status ApplyPolicies(server::v1::Server::Stub& s, const std::string& yaml) {
  server::v1::ApplyPoliciesRequest req;
  req.set_document(yaml);
  server::v1::ApplyPoliciesResponse resp;
  grpc::Status st = s.ApplyPolicies(Ctx().get(), req, &resp);
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        "ApplyPolicies: " + st.error_message());
  }
  return absl::OkStatus();
}

absl::StatusOr<server::v1::Job> RunBackupAndWait(server::v1::Server::Stub& s,
                                                 const std::string& host,
                                                 const std::vector<std::string>& devices,
                                                 int timeout_s) {
  server::v1::RunBackupRequest req;
  req.set_host(host);
  for (const std::string& d : devices) req.add_devices(d);
  server::v1::Job job;
  grpc::Status st = s.RunBackup(Ctx(30).get(), req, &job);
  if (!st.ok()) return FromGrpcStatus(st);
  return WaitJob(s, job.id(), timeout_s);
}

absl::StatusOr<server::v1::Job> RestoreAndWait(server::v1::Server::Stub& s,
                                               const std::string& backup_id,
                                               const std::string& device, const std::string& path,
                                               int timeout_s) {
  server::v1::RestoreRequest req;
  req.set_backup_id(backup_id);
  req.set_device(device);
  req.set_file_path(path);
  server::v1::Job job;
  grpc::Status st = s.Restore(Ctx(30).get(), req, &job);
  if (!st.ok()) return FromGrpcStatus(st);
  return WaitJob(s, job.id(), timeout_s);
}

absl::Status FillDevice(agent::simtest::v1::SimWorkload::Stub& w, const std::string& device,
                        uint64_t size, uint64_t seed) {
  constexpr uint64_t kPiece = 4ull << 20;
  std::mt19937_64 rng(seed);
  std::string buf;
  for (uint64_t off = 0; off < size; off += kPiece) {
    uint64_t n = std::min(kPiece, size - off);
    buf.resize(n);
    FillPseudoRandom(rng, &buf);
    agent::simtest::v1::WriteRequest req;
    req.set_device(device);
    req.set_offset_bytes(off);
    req.set_data(buf);
    agent::simtest::v1::WriteResponse resp;
    grpc::Status st = w.Write(Ctx(60).get(), req, &resp);
    if (!st.ok()) return FromGrpcStatus(st);
  }
  return absl::OkStatus();
}

std::string FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "missing:" + path;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), buf.size());
    EVP_DigestUpdate(ctx, buf.data(), in.gcount());
  }
  Sha256Digest d;
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, d.data(), &len);
  EVP_MD_CTX_free(ctx);
  return DigestToHex(d);
}

void FleetTest::StartFleet(const std::vector<std::string>& devices) {
  dir_ = MakeTempDir("blkfleet-it");
  ASSERT_FALSE(dir_.empty());
  agent_.name = "h1";
  agent_.dir = dir_ + "/h1";
  agent_.devices = devices;
  ASSERT_TRUE(agent_.Start().ok()) << agent_.process.LogTail();
  server_.dir = dir_ + "/server";
  ASSERT_TRUE(server_.Start().ok()) << server_.process.LogTail();
}

void FleetTest::RegisterHost(const std::vector<std::string>& default_devices) {
  server::v1::DeleteHostRequest del;
  del.set_name("h1");
  server::v1::DeleteHostResponse dr;
  grpc::Status st = server_.stub->DeleteHost(Ctx().get(), del, &dr);
  ASSERT_TRUE(st.ok() || st.error_code() == grpc::StatusCode::NOT_FOUND) << st.error_message();
  server::v1::CreateHostRequest req;
  req.mutable_host()->set_name("h1");
  req.mutable_host()->set_agent_address(agent_.address);
  for (const std::string& d : default_devices) req.mutable_host()->add_default_devices(d);
  server::v1::Host host;
  st = server_.stub->CreateHost(Ctx().get(), req, &host);
  ASSERT_TRUE(st.ok()) << st.error_message();
}

void FleetTest::TearDown() {
  if (HasFailure()) {
    std::cerr << "--- agent log ---\n" << agent_.process.LogTail() << "\n--- server log ---\n"
              << server_.process.LogTail() << "\n";
  }
  // Close our channels first: the daemons give connected clients a grace
  // period on shutdown.
  server_.stub.reset();
  agent_.agent.reset();
  agent_.workload.reset();
  server_.process.Kill(SIGTERM);
  agent_.process.Kill(SIGTERM);
  if (!dir_.empty()) RemoveTree(dir_);
}

// GET http://ADDRESS/metrics; the body, or an error.
absl::StatusOr<std::string> Scrape(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError("bad address " + address);
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return absl::UnavailableError("connect " + address);
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return absl::UnavailableError("write");
  }
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (resp.rfind("HTTP/1.1 200", 0) != 0 && resp.rfind("HTTP/1.0 200", 0) != 0) {
    return absl::UnavailableError("not 200: " + resp.substr(0, 200));
  }
  const size_t body = resp.find("\r\n\r\n");
  if (body == std::string::npos) return absl::DataLossError("no body");
  return resp.substr(body + 4);
}

// Sample lines "name{labels} value" -> value, keyed by "name{labels}" as
// printed.
std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    double v = 0;
    if (sp == absl::string_view::npos || !absl::SimpleAtod(line.substr(sp + 1), &v)) continue;
    out[std::string(line.substr(0, sp))] = v;
  }
  return out;
}

}  // namespace blkfleet::testing
