// SPDX-License-Identifier: Apache-2.0
// blkfleet-agent-stream-bench: measures a full-image StreamImage from a
// running agent the way the server consumes it (every chunk decoded and its
// SHA-256 checked), in a separate process, and reports the throughput as a
// ratio of this machine's single-core SHA-256 speed measured in the same run.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "agent/agent_service.h"
#include "agent/sim_workload.grpc.pb.h"
#include "blkfleet/agent/v1/agent.grpc.pb.h"
#include "common/sha256.h"
#include "common/zstd_codec.h"

namespace blkfleet::agent {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Single-core SHA-256 speed in bytes per second, over 4 MiB buffers.
double Sha256Speed() {
  std::string buf(4 << 20, 'x');
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131 + (i >> 13));
  const auto start = Clock::now();
  uint64_t bytes = 0;
  while (Seconds(start) < 1.0) {
    Sha256(buf);
    bytes += buf.size();
  }
  return static_cast<double>(bytes) / Seconds(start);
}

// User + system CPU seconds a process has used so far.
double CpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(f);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string PeakRss(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return line.substr(6);
  }
  return "?";
}

// Fills the device with data of the given kind through SimWorkload: random
// (incompressible), or mixed (a third random, a third text, a third zeros,
// in 4 MiB stripes).
bool Fill(simtest::v1::SimWorkload::Stub& w, const std::string& device, uint64_t size,
          const std::string& kind) {
  std::mt19937_64 rng(42);
  std::string data(4 << 20, '\0');
  for (uint64_t off = 0, stripe = 0; off < size; off += data.size(), ++stripe) {
    const uint64_t n = std::min<uint64_t>(data.size(), size - off);
    const int mode = kind == "random" ? 0 : static_cast<int>(stripe % 3);
    if (mode == 2) continue;  // zeros: the sim's fresh device already is
    if (mode == 0) {
      for (size_t i = 0; i < n; i += 8) {
        const uint64_t v = rng();
        __builtin_memcpy(data.data() + i, &v, std::min<size_t>(8, n - i));
      }
    } else {
      // Text: random words of a small vocabulary, like logs or source code.
      static const char* const kWords[] = {"block ",
                                           "chunk ",
                                           "snapshot ",
                                           "device ",
                                           "backup ",
                                           "restore ",
                                           "the ",
                                           "of ",
                                           "write ",
                                           "read ",
                                           "server ",
                                           "agent ",
                                           "index ",
                                           "digest ",
                                           "error=0 ",
                                           "\n",
                                           "2026-11-25T09:38:08Z ",
                                           "INFO ",
                                           "WARN ",
                                           "copy-on-write ",
                                           "for ",
                                           "in ",
                                           "=",
                                           "42 "};
      size_t i = 0;
      while (i < n) {
        const char* w = kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
        for (; *w != '\0' && i < n; ++w) data[i++] = *w;
      }
    }
    simtest::v1::WriteRequest req;
    req.set_device(device);
    req.set_offset_bytes(off);
    req.set_data(data.substr(0, n));
    simtest::v1::WriteResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = w.Write(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "fill: %s\n", st.error_message().c_str());
      return false;
    }
  }
  return true;
}

int Run(const std::string& target, const std::string& device, uint32_t chunk_size,
        const std::string& fill, int zstd_level, bool raw, int agent_pid) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(AgentService::kMaxMessageBytes);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  auto agent = v1::Agent::NewStub(channel);

  v1::ListDevicesResponse devices;
  {
    grpc::ClientContext ctx;
    if (grpc::Status st = agent->ListDevices(&ctx, {}, &devices); !st.ok()) {
      std::fprintf(stderr, "ListDevices: %s\n", st.error_message().c_str());
      return 1;
    }
  }
  uint64_t size = 0;
  for (const auto& d : devices.devices()) {
    if (d.name() == device) size = d.size_bytes();
  }
  if (size == 0) {
    std::fprintf(stderr, "no device %s\n", device.c_str());
    return 1;
  }
  if (fill != "none") {
    auto workload = simtest::v1::SimWorkload::NewStub(channel);
    if (!Fill(*workload, device, size, fill)) return 1;
  }

  v1::CreateSnapshotRequest create;
  create.add_devices(device);
  create.set_lease_ms(600'000);
  v1::Snapshot snap;
  {
    grpc::ClientContext ctx;
    if (grpc::Status st = agent->CreateSnapshot(&ctx, create, &snap); !st.ok()) {
      std::fprintf(stderr, "CreateSnapshot: %s\n", st.error_message().c_str());
      return 1;
    }
  }

  const double sha_speed = Sha256Speed();
  grpc::ClientContext ctx;
  auto stream = agent->StreamImage(&ctx);
  v1::StreamImageRequest req;
  auto* start = req.mutable_start();
  start->set_snapshot_id(snap.id());
  start->set_device(device);
  start->set_chunk_size_bytes(chunk_size);
  start->set_zstd_level(zstd_level);
  start->set_disable_compression(raw);
  stream->Write(req);
  req.set_known_digests_done(true);
  stream->Write(req);
  stream->WritesDone();

  const auto t0 = Clock::now();
  const double agent_cpu0 = agent_pid > 0 ? CpuSeconds(agent_pid) : 0;
  const double self_cpu0 = CpuSeconds(getpid());
  ZstdCodec codec;
  std::string plain;
  uint64_t chunks = 0, bytes = 0, payload = 0, digest_only = 0, bad = 0;
  v1::StreamImageResponse resp;
  while (stream->Read(&resp)) {
    if (!resp.has_chunk()) continue;
    const v1::ImageChunk& c = resp.chunk();
    ++chunks;
    bytes += c.length_bytes();
    payload += c.data().size();
    std::string_view data;
    if (c.encoding() == blkfleet::type::v1::CHUNK_ENCODING_DIGEST_ONLY) {
      ++digest_only;
      continue;
    }
    if (c.encoding() == blkfleet::type::v1::CHUNK_ENCODING_ZSTD) {
      if (!codec.Decompress(c.data(), c.length_bytes(), &plain).ok()) ++bad;
      data = plain;
    } else {
      data = c.data();
    }
    if (DigestToBytes(Sha256(data)) != c.sha256()) ++bad;
  }
  grpc::Status st = stream->Finish();
  const double secs = Seconds(t0);
  const double agent_cpu = agent_pid > 0 ? CpuSeconds(agent_pid) - agent_cpu0 : 0;
  const double self_cpu = CpuSeconds(getpid()) - self_cpu0;

  v1::DestroySnapshotRequest destroy;
  destroy.set_id(snap.id());
  v1::DestroySnapshotResponse dr;
  grpc::ClientContext dctx;
  (void)agent->DestroySnapshot(&dctx, destroy, &dr);

  if (!st.ok()) {
    std::fprintf(stderr, "StreamImage: %s\n", st.error_message().c_str());
    return 1;
  }
  const double rate = static_cast<double>(bytes) / secs;
  std::printf(
      "image %.0f MiB in %.2f s: %.0f MB/s; %lu chunks (%lu digest-only), payload %.0f MiB, "
      "%lu bad\nsha256 single core %.0f MB/s; ratio %.3f\n",
      static_cast<double>(bytes) / (1 << 20), secs, rate / 1e6, static_cast<unsigned long>(chunks),
      static_cast<unsigned long>(digest_only), static_cast<double>(payload) / (1 << 20),
      static_cast<unsigned long>(bad), sha_speed / 1e6, rate / sha_speed);
  std::printf("receiver CPU %.2f s (%.2f ns/byte)\n", self_cpu,
              self_cpu * 1e9 / static_cast<double>(bytes));
  if (agent_pid > 0) {
    std::printf("agent CPU %.2f s (%.2f ns/byte); agent peak RSS:%s\n", agent_cpu,
                agent_cpu * 1e9 / static_cast<double>(bytes), PeakRss(agent_pid).c_str());
  }
  return bad == 0 ? 0 : 1;
}

}  // namespace
}  // namespace blkfleet::agent

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:7401", device = "vda", fill = "mixed";
  uint32_t chunk = 4 << 20;
  int level = 1, pid = 0;
  bool raw = false;
  CLI::App app{"StreamImage throughput of a running sim agent, consumed like the server does"};
  app.add_option("--agent", target, "agent host:port")->capture_default_str();
  app.add_option("--device", device, "device to snapshot and stream")->capture_default_str();
  app.add_option("--chunk-size", chunk, "chunk size in bytes")->capture_default_str();
  app.add_option("--fill", fill, "fill the device first: none, random, mixed")
      ->check(CLI::IsMember({"none", "random", "mixed"}))
      ->capture_default_str();
  app.add_option("--zstd-level", level, "zstd level")->capture_default_str();
  app.add_flag("--raw", raw, "disable compression");
  app.add_option("--agent-pid", pid, "report this process's peak RSS (VmHWM)");
  CLI11_PARSE(app, argc, argv);
  return blkfleet::agent::Run(target, device, chunk, fill, level, raw, pid);
}
