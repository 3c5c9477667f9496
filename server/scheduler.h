// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_SCHEDULER_H_
#define BLKFLEET_SERVER_SCHEDULER_H_

#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "blkfleet/server/v1/server.pb.h"
#include "common/clock.h"
#include "server/catalog/catalog.h"
#include "server/policy.h"

namespace blkfleet::server {

namespace v1 = ::blkfleet::server::v1;

struct SchedulerOptions {
  // How often the background thread looks for due runs and ended jobs.
  absl::Duration tick = absl::Seconds(1);
  // Seed of the retry jitter (tests fix it).
  uint64_t seed = std::random_device{}();
};

// The longest a host/device's newest good backup may age under `p` without a
// slot having been missed: the widest gap between two consecutive slots after
// `from` (looking one year ahead, at most 10,000 slots), plus the waits of
// every retry at their longest (backoff and jitter), plus one hour for the
// backup itself. Exported as blkfleet_backup_max_age_seconds.
absl::Duration MaxBackupAge(const Policy& p, absl::Time from);

// Runs the applied policies (docs/policies.md): for every (policy, host of its
// host group) target it starts a backup of the policy's device set when a
// cron slot is due, within the global and per-host concurrency limits, and
// retries a failed run with exponential backoff and jitter. Slots missed
// while the server was down (or while limits held a run back) fold into one
// run. The changes of target states of one pass are written to the catalog in
// one transaction at its end, so a restarted server continues where the last
// one stopped (a run started in a pass the server did not finish shows as not
// started: its job was failed at start-up, so the slot runs again).
//
// All decisions happen in Tick(), driven by the background thread (Start) or
// by tests with a fake clock.
class Scheduler {
 public:
  // Starts a backup job of `devices` of `host`. FAILED_PRECONDITION means
  // "busy now" (another backup of the host runs): the run stays due.
  using StartBackupFn = std::function<absl::StatusOr<v1::Job>(
      const std::string& host, const std::vector<std::string>& devices)>;
  // The current state of a job started by StartBackupFn.
  using GetJobFn = std::function<absl::StatusOr<v1::Job>(const std::string& id)>;
  // Called after a scheduled backup succeeded when its policy has
  // prune_after_backup (starts a prune of the host's device set).
  using AfterBackupFn = std::function<void(const Policy& policy, const std::string& host)>;

  Scheduler(catalog::Catalog* catalog, Clock* clock, StartBackupFn start, GetJobFn get_job,
            SchedulerOptions options = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void SetAfterBackup(AfterBackupFn fn);

  // Applies the document stored in the catalog (at start-up); OK when none.
  absl::Status LoadStored();
  // Validates `document` and, when valid and !dry_run, stores it and makes it
  // the running policy set. INVALID_ARGUMENT naming the field; a bad document
  // changes nothing.
  absl::StatusOr<PolicySet> Apply(const std::string& document, bool dry_run);

  // One pass: ended jobs, new and removed targets, due runs.
  void Tick();

  // Runs Tick() every options.tick on a thread until Stop() / destruction.
  void Start();
  void Stop();

  // The applied set (nullopt: none) and every target's state.
  std::optional<PolicySet> Policies();
  std::vector<catalog::ScheduleState> Targets();
  // Hosts of the applied policy `name`'s group among the catalog's hosts.
  std::vector<std::string> HostsOf(const std::string& policy);

 private:
  using Key = std::pair<std::string, std::string>;  // policy, host

  void TickLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks `st` changed; Flush() writes every changed state in one transaction.
  void Persist(const catalog::ScheduleState& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Flush() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets blkfleet_backup_max_age_seconds of every (host, device) of `wanted`
  // whose limit changed: the smallest of the policies covering it. Only when
  // `hosts` or the applied set changed since the last call.
  void ExportMaxAges(const std::vector<std::string>& hosts, const std::set<Key>& wanted,
                     absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Ended(catalog::ScheduleState& st, const Policy& p, const v1::Job& job, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailedAttempt(catalog::ScheduleState& st, const Policy& p, const std::string& why,
                     absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration Backoff(const RetryPolicy& r, int attempt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<std::string> AllHosts();

  catalog::Catalog* const catalog_;
  Clock* const clock_;
  const StartBackupFn start_;
  const GetJobFn get_job_;
  const SchedulerOptions options_;

  absl::Mutex mu_;
  AfterBackupFn after_backup_ ABSL_GUARDED_BY(mu_);
  std::optional<PolicySet> set_ ABSL_GUARDED_BY(mu_);
  std::map<Key, catalog::ScheduleState> states_ ABSL_GUARDED_BY(mu_);
  std::set<Key> dirty_ ABSL_GUARDED_BY(mu_);
  // Per policy name, computed once per applied set; and the values exported.
  std::map<std::string, absl::Duration> policy_max_age_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, absl::Duration> exported_max_age_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::string> max_age_hosts_ ABSL_GUARDED_BY(mu_);  // hosts at the last export
  bool loaded_states_ ABSL_GUARDED_BY(mu_) = false;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

int64_t ToUnixMicrosOrZero(absl::Time t);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_SCHEDULER_H_
