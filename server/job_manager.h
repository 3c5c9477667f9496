// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_JOB_MANAGER_H_
#define BLKFLEET_SERVER_JOB_MANAGER_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "blkfleet/server/v1/server.pb.h"
#include "common/clock.h"
#include "server/catalog/catalog.h"

namespace blkfleet::server {

namespace v1 = ::blkfleet::server::v1;

// The handle a running job uses to report progress and to learn that it was
// cancelled. Thread-safe.
class JobContext {
 public:
  virtual ~JobContext() = default;
  virtual const std::string& id() const = 0;
  virtual bool cancelled() const = 0;
  // Runs `hook` when the job is cancelled (now, if it already is); replaces
  // the previous hook. A hook typically cancels an RPC in flight.
  virtual void SetCancelHook(std::function<void()> hook) = 0;
  virtual void SetPhase(const std::string& phase) = 0;
  virtual void SetTotals(uint64_t bytes, uint64_t chunks) = 0;
  virtual void AddDone(uint64_t bytes, uint64_t chunks) = 0;
  virtual void AddAttempt() = 0;
  virtual void SetBackupId(const std::string& id) = 0;
  // One line on the outcome, kept when the job ends (ok or not).
  virtual void SetSummary(const std::string& summary) = 0;
  // A prune job's decisions, kept when the job ends. Ignored by contexts
  // that keep no job record.
  virtual void SetPruneResult(const v1::PruneResult& /*result*/) {}
};

// Runs long work (backup, restore) as jobs: each on its own thread, its state
// kept in memory while it runs (for GetJob/WatchJob) and written to the
// catalog at every state change and every few seconds of progress.
class JobManager {
 public:
  using Body = std::function<absl::Status(JobContext&)>;

  JobManager(catalog::Catalog* catalog, Clock* clock);
  // Cancels the running jobs and waits for them.
  ~JobManager();

  // Stores `job` (kind, host) as PENDING and starts `body` on a new thread.
  // `exclusive_key` (when not empty) may be held by one running job only:
  // FAILED_PRECONDITION with `busy_message` while another holds it.
  absl::StatusOr<v1::Job> Start(v1::Job job, const std::string& exclusive_key,
                                const std::string& busy_message, Body body);

  absl::StatusOr<v1::Job> Get(const std::string& id);
  // The in-memory state of job `id` while it runs; nullopt otherwise.
  std::optional<v1::Job> GetLive(const std::string& id);
  // Calls `on_state` with the job's state now and after every change, at most
  // every `min_interval`, until the job ended (after its final state) or
  // `on_state` returns false.
  absl::Status Watch(const std::string& id, absl::Duration min_interval,
                     const std::function<bool(const v1::Job&)>& on_state);
  // FAILED_PRECONDITION when the job already ended; NOT_FOUND when unknown.
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // Whether a job of `host` is running.
  bool HostBusy(const std::string& host);
  // Waits until job `id` ended (tests, shutdown).
  absl::StatusOr<v1::Job> Wait(const std::string& id);

 private:
  class Live;

  void Run(std::shared_ptr<Live> live, Body body, const std::function<void()>& before_end);
  std::shared_ptr<Live> FindLive(const std::string& id);
  void ReapFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  catalog::Catalog* const catalog_;
  Clock* const clock_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Live>> live_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> exclusive_ ABSL_GUARDED_BY(mu_);  // key -> job id
  std::map<std::string, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> finished_ ABSL_GUARDED_BY(mu_);
};

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_JOB_MANAGER_H_
