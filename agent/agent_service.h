// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_AGENT_SERVICE_H_
#define BLKFLEET_AGENT_AGENT_SERVICE_H_

// The blkfleet.agent.v1.Agent gRPC service over a Backend (docs/agent.md).
//
// Synchronous gRPC API: every call runs on a thread of the gRPC server, and
// a blocking Write() on a stream is gRPC's flow control (the writer waits
// while the peer's window is full), so a slow server throttles StreamImage
// instead of growing the agent's memory.

#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/agent_metrics.h"
#include "agent/backend.h"
#include "agent/event_hub.h"
#include "agent/snapshot_hook.h"
#include "agent/thread_pool.h"
#include "blkfleet/agent/v1/agent.grpc.pb.h"
#include "common/clock.h"

namespace blkfleet::agent {

struct AgentServiceOptions {
  std::string hostname;
  std::string agent_version;
  // The difference storage folder (--diff-storage-dir): used when a
  // CreateSnapshot leaves diff_storage_path empty, and the only tree a
  // request may name storage in (agent/diff_storage_policy.h).
  std::string default_diff_storage_path;
  uint64_t default_diff_storage_limit_bytes = 1ull << 30;
  // Largest diff_storage_limit_bytes a request may ask for; 0: the default.
  uint64_t max_diff_storage_limit_bytes = 0;
  // Block devices a request may name as its difference storage
  // (--diff-storage-device); empty: none.
  std::vector<std::string> diff_storage_devices;
  Clock* clock = Clock::Real();
  // How often a background thread destroys snapshots whose lease ran out;
  // zero: no thread (tests call ExpireLeases()).
  absl::Duration lease_check_interval = absl::Milliseconds(250);
  // Threads reading, hashing and compressing chunks for StreamImage.
  int stream_threads = 2;
  // Plain bytes of chunks in flight per StreamImage call (at least one
  // chunk): the memory bound of a stream is about twice this.
  uint64_t stream_window_bytes = 32ull << 20;
  // Program run after each take with the snapshot id and one DEVICE=IMAGE
  // argument per device (agent/snapshot_hook.h); empty: none. Destroying the
  // snapshot waits for it, at most `snapshot_hook_timeout`.
  std::string snapshot_hook;
  absl::Duration snapshot_hook_timeout = absl::Minutes(10);
  // Devices CreateSnapshot may include; empty: every device the backend
  // lists. Others are PERMISSION_DENIED.
  std::vector<std::string> snapshot_devices;
  // Devices WriteImage may write onto (restore); empty: none, every restore
  // is PERMISSION_DENIED. Restoring overwrites a whole device, so nothing
  // is allowed unless the operator lists it.
  std::vector<std::string> restore_devices;
  // The kernel report of GetAgentInfo (agent/kernel_probe.h): the folder of
  // the installed kernels' modules (/lib/modules); empty: installed kernels
  // are not looked for (the sim backend's default).
  std::string modules_dir;
  // Release of the running kernel; empty: uname (tests set it).
  std::string running_release;
};

class AgentService final : public v1::Agent::Service {
 public:
  // Largest gRPC message either way: a 64 MiB chunk, sent raw when it does
  // not compress, plus its framing.
  static constexpr int kMaxMessageBytes = (64 << 20) + (1 << 20);

  // `backend` must outlive the service. Snapshots the backend already holds
  // at start (left by an earlier agent run) have no lease holder and are
  // destroyed.
  AgentService(Backend* backend, AgentServiceOptions options);
  ~AgentService() override;

  // Destroys every snapshot whose lease ran out (publishing LEASE_EXPIRED);
  // returns how many.
  int ExpireLeases();
  // Ends event streams and the lease thread; call before grpc::Server::Shutdown.
  void Shutdown();
  // Snapshots held and their difference storage, for the metrics scrape.
  metrics::SnapshotUsage Usage();

  grpc::Status GetAgentInfo(grpc::ServerContext* ctx, const v1::GetAgentInfoRequest* req,
                            v1::AgentInfo* resp) override;
  grpc::Status ListDevices(grpc::ServerContext* ctx, const v1::ListDevicesRequest* req,
                           v1::ListDevicesResponse* resp) override;
  grpc::Status CreateSnapshot(grpc::ServerContext* ctx, const v1::CreateSnapshotRequest* req,
                              v1::Snapshot* resp) override;
  grpc::Status GetSnapshot(grpc::ServerContext* ctx, const v1::GetSnapshotRequest* req,
                           v1::Snapshot* resp) override;
  grpc::Status ListSnapshots(grpc::ServerContext* ctx, const v1::ListSnapshotsRequest* req,
                             v1::ListSnapshotsResponse* resp) override;
  grpc::Status RenewSnapshotLease(grpc::ServerContext* ctx,
                                  const v1::RenewSnapshotLeaseRequest* req,
                                  v1::Snapshot* resp) override;
  grpc::Status DestroySnapshot(grpc::ServerContext* ctx, const v1::DestroySnapshotRequest* req,
                               v1::DestroySnapshotResponse* resp) override;
  grpc::Status WatchSnapshotEvents(grpc::ServerContext* ctx,
                                   const v1::WatchSnapshotEventsRequest* req,
                                   grpc::ServerWriter<v1::SnapshotEvent>* writer) override;
  grpc::Status ReadCbtMap(grpc::ServerContext* ctx, const v1::ReadCbtMapRequest* req,
                          grpc::ServerWriter<v1::ReadCbtMapResponse>* writer) override;
  grpc::Status StreamImage(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::StreamImageResponse, v1::StreamImageRequest>* stream) override;
  grpc::Status WriteImage(grpc::ServerContext* ctx,
                          grpc::ServerReader<v1::WriteImageRequest>* reader,
                          v1::WriteImageResponse* resp) override;

 private:
  // The running kernel, the module and the installed kernels, read now.
  void FillKernelReport(blkfleet::type::v1::KernelReport* out) const;
  // What the agent knows of a snapshot beyond the backend's state.
  struct Record {
    Uuid id;
    std::vector<v1::SnapshotDevice> devices;  // with the CBT state of the take
    absl::Time create_time;
    absl::Time lease_expire;
    std::string request_id;
    std::string request_fingerprint;
  };

  absl::StatusOr<v1::Snapshot> CreateLocked(const v1::CreateSnapshotRequest& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lifecycle_mu_);
  // Destroys a snapshot in the backend and drops its record.
  absl::Status DestroyLocked(const Uuid& id, v1::SnapshotEventKind kind, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lifecycle_mu_);
  int ExpireLeasesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lifecycle_mu_);
  // The record of a live snapshot; NOT_FOUND otherwise.
  absl::StatusOr<Record> FindRecord(const Uuid& id);
  absl::StatusOr<v1::Snapshot> ToProto(const Record& record);
  void OnBackendEvent(const BackendEvent& e);
  absl::Status DoWriteImage(grpc::ServerReader<v1::WriteImageRequest>* reader,
                            v1::WriteImageResponse* resp);
  // Checks a WriteImage start message against the allowlist and the
  // snapshots, and marks the device as being restored (CreateSnapshot then
  // refuses it) until the returned guard is released.
  absl::Status ClaimRestoreTarget(const std::string& device);
  void ReleaseRestoreTarget(const std::string& device);
  grpc::Status DoReadCbtMap(grpc::ServerContext* ctx, const v1::ReadCbtMapRequest* req,
                            grpc::ServerWriter<v1::ReadCbtMapResponse>* writer);
  absl::Status DoStreamImage(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::StreamImageResponse, v1::StreamImageRequest>* stream);

  Backend* const backend_;
  const AgentServiceOptions options_;
  const absl::Time start_time_;
  EventHub events_;
  ThreadPool pool_;

  // Serialises snapshot lifecycle changes (create, destroy, expiry), which
  // span several backend calls.
  absl::Mutex lifecycle_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  std::map<Uuid, Record> records_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Uuid> by_request_id_ ABSL_GUARDED_BY(mu_);
  // Running snapshot hooks, by snapshot.
  std::map<Uuid, HookProcess> hooks_ ABSL_GUARDED_BY(lifecycle_mu_);
  // Devices a WriteImage stream is writing onto.
  std::set<std::string> restoring_ ABSL_GUARDED_BY(lifecycle_mu_);

  absl::Notification stop_;
  std::thread lease_thread_;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_AGENT_SERVICE_H_
