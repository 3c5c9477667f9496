// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_UNIT_AGENT_AGENT_FIXTURE_H_
#define BLKFLEET_TESTS_UNIT_AGENT_AGENT_FIXTURE_H_

// An AgentService over a SimBackend behind an in-process gRPC server, with a
// fake clock, for the service's unit tests.

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/agent_service.h"
#include "agent/sim_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::agent {

constexpr uint64_t kMiB = 1 << 20;

class AgentFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    SimOptions so;
    so.dir = dir_.Sub("devices");
    so.devices = {{"vda", 16 * kMiB}, {"vdb", 8 * kMiB}, {"vdc", 4 * kMiB}, {"vdd", kMiB + 4096}};
    so.oracle_dir = dir_.Sub("oracle");
    so.clock = &clock_;
    auto sim = SimBackend::Open(so);
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = std::move(sim).value();
    AgentServiceOptions o;
    o.hostname = "test-host";
    o.agent_version = "0.0.test";
    o.default_diff_storage_path = dir_.Sub("diff");
    o.default_diff_storage_limit_bytes = 64 * kMiB;
    o.clock = &clock_;
    o.lease_check_interval = absl::ZeroDuration();
    o.stream_window_bytes = window_bytes_;
    o.snapshot_hook = snapshot_hook_;
    o.snapshot_devices = snapshot_devices_;
    o.restore_devices = restore_devices_;
    o.snapshot_hook_timeout = snapshot_hook_timeout_;
    service_ = std::make_unique<AgentService>(sim_.get(), o);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(AgentService::kMaxMessageBytes);
    builder.SetMaxSendMessageSize(AgentService::kMaxMessageBytes);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(AgentService::kMaxMessageBytes);
    channel_ = server_->InProcessChannel(args);
    stub_ = v1::Agent::NewStub(channel_);
  }

  void TearDown() override {
    service_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return ctx;
  }

  grpc::Status Create(std::vector<std::string> devices, v1::Snapshot* out,
                      uint64_t lease_ms = 60'000, uint64_t limit = 0,
                      const std::string& request_id = "") {
    v1::CreateSnapshotRequest req;
    for (auto& d : devices) req.add_devices(d);
    req.set_lease_ms(lease_ms);
    req.set_diff_storage_limit_bytes(limit);
    req.set_request_id(request_id);
    return stub_->CreateSnapshot(Ctx().get(), req, out);
  }

  v1::Snapshot MustCreate(std::vector<std::string> devices, uint64_t lease_ms = 60'000,
                          uint64_t limit = 0) {
    v1::Snapshot s;
    grpc::Status st = Create(std::move(devices), &s, lease_ms, limit);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return s;
  }

  grpc::Status Get(const std::string& id, v1::Snapshot* out = nullptr) {
    v1::GetSnapshotRequest req;
    req.set_id(id);
    v1::Snapshot s;
    grpc::Status st = stub_->GetSnapshot(Ctx().get(), req, &s);
    if (out != nullptr) *out = s;
    return st;
  }

  uint64_t window_bytes_ = 8 * kMiB;
  std::vector<std::string> snapshot_devices_;  // empty: every device
  std::vector<std::string> restore_devices_ = {"vdb", "vdd"};
  std::string snapshot_hook_;
  absl::Duration snapshot_hook_timeout_ = absl::Seconds(30);
  testing::TempDir dir_;
  testing::FakeClock clock_;
  std::unique_ptr<SimBackend> sim_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_TESTS_UNIT_AGENT_AGENT_FIXTURE_H_
