// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_CATALOG_CATALOG_H_
#define BLKFLEET_SERVER_CATALOG_CATALOG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blkfleet/server/v1/server.pb.h"
#include "common/sha256.h"

namespace blkfleet::catalog {

namespace v1 = ::blkfleet::server::v1;

// The most recent backup of one device of one host: the base of the next
// incremental.
struct DeviceBackupRef {
  std::string backup_id;
  int ordinal = 0;  // position of the device in the backup (its index file)
  v1::BackupDevice device;
};

// The scheduler's record of one policy target (policy, host): survives a
// restart so that no run is lost or repeated. Times in microseconds since the
// Unix epoch, 0 when unset.
struct ScheduleState {
  std::string policy;
  std::string host;
  int64_t next_slot_us = 0;   // the next slot to run
  int64_t last_slot_us = 0;   // the slot the last run stood for
  int64_t last_start_us = 0;  // when its job started
  int64_t retry_at_us = 0;    // a failed run's retry is due then
  std::string job_id;         // the job of the current or last run
  bool running = false;       // job_id has not ended yet
  int attempt = 0;            // runs of last_slot so far
  int64_t last_lag_ms = 0;    // last start minus its slot
  int missed_slots = 0;       // slots folded into the last run after downtime
  std::string last_result;    // "succeeded", or why the last run failed
};

// The kernel report a host's agent sent (GetAgentInfo), kept per host.
struct HostKernelReport {
  std::string host;
  blkfleet::type::v1::KernelReport report;
  int64_t report_time_us = 0;  // when it was received
};

// One page of a list: `offset` items skipped, at most `limit` returned.
struct PageRequest {
  int64_t offset = 0;
  int limit = 100;
};

// A snapshot a backup job created on an agent and has not destroyed yet. A
// server killed meanwhile finds it at its next start and releases it
// (server/snapshot_release.h) instead of leaving it to its lease.
struct HeldSnapshot {
  std::string snapshot_id;
  std::string job_id;
  std::string host;
  std::string agent_address;
  int64_t lease_ms = 0;  // the lease the job renews; it ends at most this long after
};

// The server's database: hosts, backups and their devices, jobs. Backups
// exist only once CommitBackup() returned OK; that one transaction is the
// commit point of a backup. Implementations are thread-safe. Records use the
// API messages so that the server answers straight from them.
class Catalog {
 public:
  virtual ~Catalog() = default;

  virtual int SchemaVersion() = 0;

  // ALREADY_EXISTS when a host of that name exists.
  virtual absl::Status CreateHost(const v1::Host& host) = 0;
  // NOT_FOUND when missing.
  virtual absl::StatusOr<v1::Host> GetHost(const std::string& name) = 0;
  // By name.
  virtual absl::StatusOr<std::vector<v1::Host>> ListHosts(const PageRequest& page) = 0;
  // Deleting a host drops its kernel report too.
  virtual absl::Status DeleteHost(const std::string& name) = 0;
  // Stores the kernel reports (replacing each host's previous one) in one
  // transaction; a host that does not exist is skipped. GetHost and
  // ListHosts return them in Host.kernel and Host.kernel_report_time.
  virtual absl::Status PutHostKernels(const std::vector<HostKernelReport>& reports) = 0;

  // Reserves a new backup id (decimal text). A reserved id that is never
  // committed leaves a gap and nothing visible.
  virtual absl::StatusOr<std::string> AllocateBackupId() = 0;
  // Records `backup` (with every device) in one transaction: afterwards the
  // backup is visible, before it nothing of it is.
  virtual absl::Status CommitBackup(const v1::Backup& backup,
                                    const Sha256Digest& manifest_sha256) = 0;
  virtual absl::StatusOr<v1::Backup> GetBackup(const std::string& id) = 0;
  // Newest first; `host` empty: every host.
  virtual absl::StatusOr<std::vector<v1::Backup>> ListBackups(const std::string& host,
                                                              const PageRequest& page) = 0;
  // SHA-256 of the backup's manifest file as recorded at commit. NOT_FOUND
  // when the backup is unknown.
  virtual absl::StatusOr<Sha256Digest> GetManifestSha256(const std::string& id) = 0;
  // Sets or clears the protection of a backup (prune never deletes a
  // protected one). NOT_FOUND when unknown.
  virtual absl::StatusOr<v1::Backup> SetBackupProtected(const std::string& id, bool on) = 0;
  // Removes a backup and its devices in one transaction, which also records
  // the removal of its repository files as pending (ListBackupRemovals): the
  // commit point of a prune. FAILED_PRECONDITION when it is protected;
  // NOT_FOUND when unknown.
  virtual absl::Status DeleteBackup(const std::string& id) = 0;
  // Backups deleted whose files may still be in the repository, by id.
  virtual absl::StatusOr<std::vector<std::string>> ListBackupRemovals() = 0;
  // Once the files of deleted backup `id` are gone.
  virtual absl::Status ForgetBackupRemoval(const std::string& id) = 0;
  // Snapshots held by backup jobs, recorded from their creation on the agent
  // to their destruction (see HeldSnapshot). Recording an id twice replaces
  // the entry; forgetting an unknown id is not an error.
  virtual absl::Status RecordHeldSnapshot(const HeldSnapshot& snapshot) = 0;
  virtual absl::Status ForgetHeldSnapshot(const std::string& snapshot_id) = 0;
  virtual absl::StatusOr<std::vector<HeldSnapshot>> ListHeldSnapshots() = 0;
  // The newest backup of `device` of `host`, or nullopt.
  virtual absl::StatusOr<std::optional<DeviceBackupRef>> LatestDeviceBackup(
      const std::string& host, const std::string& device) = 0;

  // Stores a new job and returns it with its id set.
  virtual absl::StatusOr<v1::Job> CreateJob(const v1::Job& job) = 0;
  // Replaces the stored state of job `job.id()`.
  virtual absl::Status UpdateJob(const v1::Job& job) = 0;
  virtual absl::StatusOr<v1::Job> GetJob(const std::string& id) = 0;
  // Newest first; `host` empty: every host.
  virtual absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::string& host,
                                                        const PageRequest& page) = 0;
  // Marks every PENDING or RUNNING job FAILED with `reason` (at start-up: a
  // job of a previous process cannot be running). Returns how many.
  virtual absl::StatusOr<int> FailUnfinishedJobs(const std::string& reason) = 0;

  // The applied policy document (YAML), replacing the previous one; nullopt
  // from Load when none was ever applied.
  virtual absl::Status SavePolicyDocument(const std::string& document) = 0;
  virtual absl::StatusOr<std::optional<std::string>> LoadPolicyDocument() = 0;
  // Inserts or replaces the state of (state.policy, state.host).
  virtual absl::Status PutScheduleState(const ScheduleState& state) = 0;
  // The same for several targets in one transaction (one disk sync): all are
  // written or none.
  virtual absl::Status PutScheduleStates(const std::vector<ScheduleState>& states) = 0;
  // By policy, then host.
  virtual absl::StatusOr<std::vector<ScheduleState>> ListScheduleStates() = 0;
  virtual absl::Status DeleteScheduleState(const std::string& policy, const std::string& host) = 0;
};

}  // namespace blkfleet::catalog

#endif  // BLKFLEET_SERVER_CATALOG_CATALOG_H_
