// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_UNIT_SERVER_FAKE_AGENT_H_
#define BLKFLEET_TESTS_UNIT_SERVER_FAKE_AGENT_H_

// An in-process implementation of the Agent gRPC service for the server's
// unit tests (the fake sits at the network boundary: the server talks to it
// over a real loopback gRPC channel). Devices are byte strings with a CBT map
// following the blksnap rules: a write marks its blocks with the current
// change number; taking a snapshot freezes the map and the data, reports the
// current change number, and advances it.

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blkfleet/agent/v1/agent.grpc.pb.h"
#include "common/uuid.h"

namespace blkfleet::testing {

namespace av1 = ::blkfleet::agent::v1;

class FakeAgent final : public av1::Agent::Service {
 public:
  FakeAgent();
  ~FakeAgent() override;

  // Starts serving on 127.0.0.1:<free port>.
  void Start();
  std::string address() const { return address_; }

  // Workload.
  void AddDevice(const std::string& name, std::string data, uint32_t cbt_block_size);
  void Write(const std::string& name, uint64_t offset, const std::string& bytes);
  std::string Data(const std::string& name);
  // Starts a new CBT generation (as a reboot or a change-number wrap would).
  void NewGeneration(const std::string& name);

  // Fault injection for StreamImage: the next `times` calls fail with
  // UNAVAILABLE after sending `after_chunks` chunks.
  void BreakStreams(int times, int after_chunks);
  // Sends the next data chunk with one byte flipped (digest of the original).
  void CorruptNextChunk();
  // Drops every snapshot at once (as an agent restart would).
  void DropSnapshots();
  // Pause before each chunk sent.
  void SetChunkDelay(absl::Duration d);

  // Observations.
  std::vector<uint64_t> stream_resume_points();
  int live_snapshots();
  int lease_renewals();
  int snapshots_created();
  uint64_t chunks_sent_with_data();

  grpc::Status CreateSnapshot(grpc::ServerContext*, const av1::CreateSnapshotRequest*,
                              av1::Snapshot*) override;
  grpc::Status RenewSnapshotLease(grpc::ServerContext*, const av1::RenewSnapshotLeaseRequest*,
                                  av1::Snapshot*) override;
  grpc::Status DestroySnapshot(grpc::ServerContext*, const av1::DestroySnapshotRequest*,
                               av1::DestroySnapshotResponse*) override;
  grpc::Status ReadCbtMap(grpc::ServerContext*, const av1::ReadCbtMapRequest*,
                          grpc::ServerWriter<av1::ReadCbtMapResponse>*) override;
  grpc::Status StreamImage(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<av1::StreamImageResponse, av1::StreamImageRequest>*) override;
  grpc::Status GetAgentInfo(grpc::ServerContext*, const av1::GetAgentInfoRequest*,
                            av1::AgentInfo*) override;

 private:
  struct Device {
    std::string data;
    Uuid generation;
    uint32_t change_number = 1;
    uint32_t block_size = 4096;
    std::vector<uint8_t> map;
  };
  struct SnapDevice {
    std::string data;
    std::vector<uint8_t> map;
    type::v1::CbtState cbt;
  };
  struct Snap {
    std::map<std::string, SnapDevice> devices;
    absl::Time lease_expires;
  };
  // Drops snapshots whose lease ran out.
  void Expire() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  std::map<std::string, Device> devices_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Snap> snaps_ ABSL_GUARDED_BY(mu_);
  int break_times_ ABSL_GUARDED_BY(mu_) = 0;
  int break_after_ ABSL_GUARDED_BY(mu_) = 0;
  bool corrupt_next_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration chunk_delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::vector<uint64_t> resume_points_ ABSL_GUARDED_BY(mu_);
  int renewals_ ABSL_GUARDED_BY(mu_) = 0;
  int created_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t data_chunks_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace blkfleet::testing

#endif  // BLKFLEET_TESTS_UNIT_SERVER_FAKE_AGENT_H_
