// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_SIM_WORKLOAD_SERVICE_H_
#define BLKFLEET_AGENT_SIM_WORKLOAD_SERVICE_H_

#include "agent/sim_backend.h"
#include "agent/sim_workload.grpc.pb.h"

namespace blkfleet::agent {

// blkfleet.agent.simtest.v1.SimWorkload over a SimBackend (test only).
class SimWorkloadService final : public simtest::v1::SimWorkload::Service {
 public:
  // `sim` must outlive the service.
  explicit SimWorkloadService(SimBackend* sim) : sim_(sim) {}

  grpc::Status Write(grpc::ServerContext* ctx, const simtest::v1::WriteRequest* req,
                     simtest::v1::WriteResponse* resp) override;
  grpc::Status RandomWrites(grpc::ServerContext* ctx, const simtest::v1::RandomWritesRequest* req,
                            simtest::v1::RandomWritesResponse* resp) override;
  grpc::Status ReadDevice(grpc::ServerContext* ctx, const simtest::v1::ReadDeviceRequest* req,
                          simtest::v1::ReadDeviceResponse* resp) override;
  grpc::Status DeviceDigest(grpc::ServerContext* ctx, const simtest::v1::DeviceDigestRequest* req,
                            simtest::v1::DeviceDigestResponse* resp) override;

 private:
  SimBackend* const sim_;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_SIM_WORKLOAD_SERVICE_H_
