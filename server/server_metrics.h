// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_SERVER_METRICS_H_
#define BLKFLEET_SERVER_SERVER_METRICS_H_

// The server's metrics (docs/operations.md, "Monitoring"): one function per
// recording point, so that the names and help texts live here only.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "blkfleet/server/v1/server.pb.h"

namespace blkfleet::catalog {
class Catalog;
}
namespace blkfleet::repo {
class Repository;
}

namespace blkfleet::server::metrics {

// Registers every server metric (all series that have no per-host label
// exist at zero from the first scrape on).
void Init();

// A job ended: counted by kind and outcome, its run time observed by kind;
// a failed backup is also counted by host and sets its host's
// blkfleet_backup_last_failure_timestamp_seconds.
void JobEnded(const v1::Job& job, v1::JobState state, double seconds);
// One chunk of a backup arrived: `received_bytes` of payload (0 when only
// its digest came), `plain_bytes` of device data it stands for.
void ChunkIngested(uint64_t received_bytes, uint64_t plain_bytes);
// A backup of `device` of `host` committed at `when`.
void BackupSucceeded(const std::string& host, const std::string& device, absl::Time when);
// Garbage collection removed `chunks` chunk files of `bytes` in total.
void GcRemoved(uint64_t chunks, uint64_t bytes);
// A verify job checked `chunks` distinct chunks and found `damaged` bad;
// `backup_damaged`: it found any damage (bad chunks, index or manifest).
void VerifyChecked(uint64_t chunks, uint64_t damaged, bool backup_damaged);

// For the scheduler: how late the last due backup started after its due
// time, and the longest age a host/device's newest good backup may reach
// under its policy (the "backup too old" alert compares with this).
void SetSchedulerLag(double seconds);
void SetBackupMaxAge(const std::string& host, const std::string& device, double seconds);
// Drops that series when no policy covers the host/device any more.
void ClearBackupMaxAge(const std::string& host, const std::string& device);

// The kernel report of `host` (Host.kernel): blkfleet_host_module_ready
// {host, kernel} is 1 or 0 for each installed kernel with or without a
// blksnap module (series of kernels no longer installed go), and
// blkfleet_host_module_loaded{host} 1 or 0 by whether the agent can make
// snapshots now.
void SetHostKernel(const std::string& host, const blkfleet::type::v1::KernelReport& report);
// Drops the host's series (the host was deleted).
void ClearHostKernel(const std::string& host);

// Sets blkfleet_backup_last_success_timestamp_seconds from the catalog (at
// start), and refreshes the repository gauges (chunk files and bytes, at
// most every `walk_interval` or after a backup or gc ended; its
// filesystem's free and total bytes) before
// every scrape. Restore also sets the hosts' kernel metrics from their
// stored reports. `catalog` and `repo` must outlive the metrics endpoint.
absl::Status Restore(catalog::Catalog* catalog);
void WatchRepository(repo::Repository* repo, absl::Duration walk_interval);

}  // namespace blkfleet::server::metrics

#endif  // BLKFLEET_SERVER_SERVER_METRICS_H_
