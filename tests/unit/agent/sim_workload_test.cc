// SPDX-License-Identifier: Apache-2.0
// Unit tests of the sim-only SimWorkload service over an in-process server.

#include <grpcpp/grpcpp.h>

#include "agent/sim_workload_service.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::agent {
namespace {

namespace simtest = simtest::v1;

class SimWorkloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SimOptions o;
    o.dir = dir_.Sub("devices");
    o.devices = {{"vda", 4 << 20}};
    sim_ = std::move(SimBackend::Open(o)).value();
    service_ = std::make_unique<SimWorkloadService>(sim_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(80 << 20);
    server_ = builder.BuildAndStart();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(80 << 20);
    stub_ = simtest::SimWorkload::NewStub(server_->InProcessChannel(args));
  }
  void TearDown() override { server_->Shutdown(); }

  testing::TempDir dir_;
  std::unique_ptr<SimBackend> sim_;
  std::unique_ptr<SimWorkloadService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<simtest::SimWorkload::Stub> stub_;
};

TEST_F(SimWorkloadTest, WriteReadAndDigest) {
  simtest::WriteRequest w;
  w.set_device("vda");
  w.set_offset_bytes(1000);
  w.set_data("hello");
  simtest::WriteResponse wr;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Write(&ctx, w, &wr).ok());
  }
  simtest::ReadDeviceRequest r;
  r.set_device("vda");
  r.set_offset_bytes(998);
  r.set_length_bytes(9);
  simtest::ReadDeviceResponse rr;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ReadDevice(&ctx, r, &rr).ok());
  }
  EXPECT_EQ(rr.data(), std::string("\0\0hello\0\0", 9));
  std::string whole(4 << 20, '\0');
  whole.replace(1000, 5, "hello");
  simtest::DeviceDigestRequest d;
  d.set_device("vda");
  simtest::DeviceDigestResponse dr;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->DeviceDigest(&ctx, d, &dr).ok());
  EXPECT_EQ(dr.sha256(), DigestToBytes(Sha256(whole)));
}

TEST_F(SimWorkloadTest, RandomWritesAreDeterministicAndReported) {
  auto run = [&](uint64_t seed) {
    simtest::RandomWritesRequest req;
    req.set_device("vda");
    req.set_count(10);
    req.set_size_bytes(8192);
    req.set_seed(seed);
    simtest::RandomWritesResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->RandomWrites(&ctx, req, &resp).ok());
    return resp;
  };
  auto a = run(5);
  ASSERT_EQ(a.ranges_size(), 10);
  for (const auto& r : a.ranges()) {
    EXPECT_EQ(r.offset_bytes() % 512, 0u);
    EXPECT_EQ(r.length_bytes(), 8192u);
    EXPECT_LE(r.offset_bytes() + r.length_bytes(), 4u << 20);
  }
  const Sha256Digest first = *sim_->DeviceDigest("vda");
  EXPECT_NE(first, Sha256(std::string(4 << 20, '\0')));
  auto b = run(5);
  EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
  EXPECT_EQ(*sim_->DeviceDigest("vda"), first) << "the same seed wrote other data";
}

TEST_F(SimWorkloadTest, BadRequestsAreRefused) {
  grpc::ClientContext c1, c2, c3, c4, c5;
  simtest::WriteRequest w;
  w.set_device("vda");
  simtest::WriteResponse wr;
  EXPECT_EQ(stub_->Write(&c1, w, &wr).error_code(), grpc::INVALID_ARGUMENT);  // no data
  w.set_data("x");
  w.set_offset_bytes(4 << 20);
  EXPECT_EQ(stub_->Write(&c2, w, &wr).error_code(), grpc::OUT_OF_RANGE);
  w.set_device("nope");
  w.set_offset_bytes(0);
  EXPECT_EQ(stub_->Write(&c3, w, &wr).error_code(), grpc::NOT_FOUND);
  simtest::RandomWritesRequest rw;
  rw.set_device("vda");
  rw.set_count(1);
  rw.set_size_bytes(8 << 20);
  simtest::RandomWritesResponse rwr;
  EXPECT_EQ(stub_->RandomWrites(&c4, rw, &rwr).error_code(), grpc::INVALID_ARGUMENT);
  simtest::ReadDeviceRequest r;
  r.set_device("vda");
  r.set_length_bytes(65ull << 20);
  simtest::ReadDeviceResponse rr;
  EXPECT_EQ(stub_->ReadDevice(&c5, r, &rr).error_code(), grpc::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace blkfleet::agent
