// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_BACKUP_JOB_H_
#define BLKFLEET_SERVER_BACKUP_JOB_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/agent_client.h"
#include "server/catalog/catalog.h"
#include "server/chunk_pins.h"
#include "server/job_manager.h"
#include "server/repository/repository.h"

namespace blkfleet::server {

struct BackupOptions {
  // Snapshot lease asked of the agent, and how often the job renews it.
  uint64_t lease_ms = 120000;
  absl::Duration lease_renew_interval = absl::Seconds(30);
  // Resumes of a broken image stream without any chunk arriving in between,
  // per device, before the job gives up.
  int max_stream_retries = 5;
  // First pause before a resume; doubles up to 5 s.
  absl::Duration retry_backoff = absl::Milliseconds(200);
  // Verification and storage threads, and chunks queued for them.
  int intake_threads = 2;
  int intake_queue = 6;
  // Attempts of the whole backup, each with a new snapshot, when an attempt
  // lost its snapshot (agent restarted or unreachable); the pause before the
  // second doubles up to 30 s.
  int max_snapshot_attempts = 3;
  absl::Duration snapshot_retry_backoff = absl::Seconds(2);
  // Deadline of unary calls to the agent.
  absl::Duration rpc_timeout = absl::Seconds(30);
};

struct BackupDeps {
  catalog::Catalog* catalog;
  repo::Repository* repo;
  AgentConnector* agents;
  Clock* clock;
  BackupOptions options;
  // Chunks the job relies on before its commit, kept from garbage collection
  // (null: no collector runs beside the job).
  ChunkPins* pins = nullptr;
};

// What to back up: resolved and validated by the caller.
struct BackupRequest {
  v1::Host host;
  std::vector<std::string> devices;
  uint32_t chunk_size_bytes = 0;  // for a device's first backup; 0: 4 MiB
  bool force_full = false;
};

// The default chunk size and its bounds (powers of two).
constexpr uint32_t kDefaultChunkSize = 4u << 20;
constexpr uint32_t kMinChunkSize = 64u << 10;
constexpr uint32_t kMaxChunkSize = 64u << 20;

// The body of a backup job (docs/server.md, "The backup job"): snapshot with
// a renewed lease, per device plan (full or CBT incremental against the
// newest backup), stream and verify, commit (indexes, manifest, one catalog
// transaction), destroy the snapshot. Nothing is visible unless the commit
// transaction succeeded.
absl::Status RunBackup(const BackupDeps& deps, const BackupRequest& request, JobContext& ctx);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_BACKUP_JOB_H_
