// SPDX-License-Identifier: Apache-2.0
// blkfleet-simload: writes to the simulated devices of a sim-backed agent
// through its SimWorkload service. Used by deploy/demo.sh and the benchmarks.
//
//   blkfleet-simload --agent ADDR --device D fill [--seed S]
//   blkfleet-simload --agent ADDR --device D random --count N --size B [--seed S]
//   blkfleet-simload --agent ADDR --device D loop --seconds T [--size B] [--seed S]
//   blkfleet-simload --agent ADDR --device D digest
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "agent/sim_workload.grpc.pb.h"
#include "common/sha256.h"
#include "tests/tools/pseudo_random.h"

namespace {

namespace simtest = blkfleet::agent::simtest::v1;

int Fail(const std::string& what, const grpc::Status& s) {
  std::fprintf(stderr, "blkfleet-simload: %s: %s (code %d)\n", what.c_str(),
               s.error_message().c_str(), static_cast<int>(s.error_code()));
  return 1;
}

std::unique_ptr<grpc::ClientContext> Ctx(int seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

// Fills the whole device with pseudo-random (incompressible) data from
// `seed`, in 4 MiB writes. The device size is found by reading past the end.
int Fill(simtest::SimWorkload::Stub& stub, const std::string& device, uint64_t seed,
         uint64_t size) {
  constexpr uint64_t kPiece = 4ull << 20;
  std::mt19937_64 rng(seed);
  std::string buf(kPiece, '\0');
  for (uint64_t off = 0; off < size; off += kPiece) {
    uint64_t n = std::min(kPiece, size - off);
    buf.resize(n);
    blkfleet::testing::FillPseudoRandom(rng, &buf);
    simtest::WriteRequest req;
    req.set_device(device);
    req.set_offset_bytes(off);
    req.set_data(buf);
    simtest::WriteResponse resp;
    grpc::Status s = stub.Write(Ctx(60).get(), req, &resp);
    if (!s.ok()) return Fail("write at " + std::to_string(off), s);
  }
  std::printf("filled %s: %llu bytes\n", device.c_str(), static_cast<unsigned long long>(size));
  return 0;
}

int Random(simtest::SimWorkload::Stub& stub, const std::string& device, uint32_t count,
           uint32_t size, uint64_t seed, bool quiet) {
  simtest::RandomWritesRequest req;
  req.set_device(device);
  req.set_count(count);
  req.set_size_bytes(size);
  req.set_seed(seed);
  simtest::RandomWritesResponse resp;
  grpc::Status s = stub.RandomWrites(Ctx(120).get(), req, &resp);
  if (!s.ok()) return Fail("random writes", s);
  if (!quiet) {
    for (const auto& r : resp.ranges()) {
      std::printf("%llu %llu\n", static_cast<unsigned long long>(r.offset_bytes()),
                  static_cast<unsigned long long>(r.length_bytes()));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blkfleet-simload: workload for sim-backed agents"};
  std::string agent, device;
  uint64_t seed = 1;
  app.add_option("--agent", agent, "agent address host:port")->required();
  app.add_option("--device", device, "simulated device name")->required();
  app.add_option("--seed", seed, "seed of the pseudo-random data");
  app.require_subcommand(1);

  uint64_t fill_size = 0;
  auto* fill = app.add_subcommand("fill", "write pseudo-random data over the device");
  fill->add_option("--size", fill_size, "device size in bytes")->required();

  uint32_t count = 1, size = 4096;
  auto* random = app.add_subcommand("random", "one batch of random writes; prints the ranges");
  random->add_option("--count", count, "number of writes");
  random->add_option("--size", size, "bytes per write");

  double seconds = 10;
  double rate = 50;
  uint32_t loop_size = 65536;
  auto* loop = app.add_subcommand("loop", "random writes at --rate per second until --seconds pass");
  loop->add_option("--seconds", seconds, "duration");
  loop->add_option("--size", loop_size, "bytes per write");
  loop->add_option("--rate", rate, "writes per second (0: as fast as possible)");

  auto* digest = app.add_subcommand("digest", "print the SHA-256 of the whole device");
  CLI11_PARSE(app, argc, argv);

  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(80 << 20);
  args.SetMaxReceiveMessageSize(80 << 20);
  auto channel = grpc::CreateCustomChannel(agent, grpc::InsecureChannelCredentials(), args);
  auto stub = simtest::SimWorkload::NewStub(channel);

  if (*fill) return Fill(*stub, device, seed, fill_size);
  if (*random) return Random(*stub, device, count, size, seed, false);
  if (*loop) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    uint64_t writes = 0;
    while (Clock::now() < end) {
      if (int rc = Random(*stub, device, 1, loop_size, seed + writes, true); rc != 0) return rc;
      ++writes;
      if (rate > 0) std::this_thread::sleep_until(start + std::chrono::duration<double>(writes / rate));
    }
    std::printf("loop %s: %llu writes of %u bytes\n", device.c_str(),
                static_cast<unsigned long long>(writes), loop_size);
    return 0;
  }
  if (*digest) {
    simtest::DeviceDigestRequest req;
    req.set_device(device);
    simtest::DeviceDigestResponse resp;
    grpc::Status s = stub->DeviceDigest(Ctx(300).get(), req, &resp);
    if (!s.ok()) return Fail("digest", s);
    auto d = blkfleet::DigestFromBytes(resp.sha256());
    if (!d) return Fail("digest", grpc::Status(grpc::StatusCode::DATA_LOSS, "bad digest size"));
    std::printf("%s\n", blkfleet::DigestToHex(*d).c_str());
    return 0;
  }
  return 2;
}
