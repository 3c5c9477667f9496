// SPDX-License-Identifier: Apache-2.0
#include "server/job_manager.h"

#include <atomic>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "server/server_metrics.h"

namespace blkfleet::server {

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts) {
  int64_t us = absl::ToUnixMicros(t);
  ts->set_seconds(us / 1000000);
  ts->set_nanos(static_cast<int32_t>((us % 1000000) * 1000));
}

namespace {

bool Ended(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED ||
         s == v1::JOB_STATE_CANCELLED;
}

constexpr absl::Duration kPersistInterval = absl::Seconds(2);

}  // namespace

class JobManager::Live final : public JobContext {
 public:
  Live(v1::Job job, catalog::Catalog* catalog, Clock* clock)
      : id_(job.id()), catalog_(catalog), clock_(clock), job_(std::move(job)) {}

  const std::string& id() const override { return id_; }
  bool cancelled() const override { return cancel_.load(); }

  void SetCancelHook(std::function<void()> hook) override {
    bool run_now;
    {
      absl::MutexLock l(&mu_);
      hook_ = hook;
      run_now = cancel_.load() && hook_;
    }
    if (run_now) hook();
  }

  void RequestCancel() {
    std::function<void()> hook;
    {
      absl::MutexLock l(&mu_);
      cancel_ = true;
      hook = hook_;
      ++version_;
    }
    if (hook) hook();
  }

  void SetPhase(const std::string& phase) override {
    Mutate([&](v1::Job& j) { j.mutable_progress()->set_phase(phase); }, false);
  }
  void SetTotals(uint64_t bytes, uint64_t chunks) override {
    Mutate([&](v1::Job& j) {
      j.mutable_progress()->set_bytes_total(bytes);
      j.mutable_progress()->set_chunks_total(chunks);
    }, false);
  }
  void AddDone(uint64_t bytes, uint64_t chunks) override {
    Mutate([&](v1::Job& j) {
      auto* p = j.mutable_progress();
      p->set_bytes_done(p->bytes_done() + bytes);
      p->set_chunks_done(p->chunks_done() + chunks);
    }, false);
  }
  void AddAttempt() override {
    Mutate([&](v1::Job& j) { j.set_attempts(j.attempts() + 1); }, false);
  }
  void SetBackupId(const std::string& id) override {
    Mutate([&](v1::Job& j) { j.set_backup_id(id); }, false);
  }
  void SetSummary(const std::string& summary) override {
    Mutate([&](v1::Job& j) { j.set_summary(summary); }, false);
  }
  void SetPruneResult(const v1::PruneResult& result) override {
    Mutate([&](v1::Job& j) { *j.mutable_prune_result() = result; }, false);
  }

  // Sets the state (and times) and writes it to the catalog at once.
  void Transition(v1::JobState state, const std::string& error) {
    Mutate([&](v1::Job& j) {
      j.set_state(state);
      if (!error.empty()) j.set_error(error);
      if (state == v1::JOB_STATE_RUNNING) SetTimestamp(clock_->Now(), j.mutable_start_time());
      if (Ended(state)) SetTimestamp(clock_->Now(), j.mutable_end_time());
    }, true);
  }

  v1::Job Snapshot(uint64_t* version) {
    absl::MutexLock l(&mu_);
    if (version) *version = version_;
    return job_;
  }

  // Waits until the version passes `seen` or `timeout` elapses.
  void WaitChange(uint64_t seen, absl::Duration timeout) {
    auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return version_ > seen; };
    mu_.LockWhenWithTimeout(absl::Condition(&changed), timeout);
    mu_.Unlock();
  }

  void WaitEnded() {
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return Ended(job_.state()); };
    mu_.LockWhen(absl::Condition(&ended));
    mu_.Unlock();
  }

  // Waits until the job ends or `timeout` elapses.
  void WaitEndedFor(absl::Duration timeout) {
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return Ended(job_.state()); };
    mu_.LockWhenWithTimeout(absl::Condition(&ended), timeout);
    mu_.Unlock();
  }

 private:
  template <typename F>
  void Mutate(F f, bool persist_now) {
    v1::Job copy;
    {
      absl::MutexLock l(&mu_);
      f(job_);
      ++version_;
      absl::Time now = clock_->Now();
      if (!persist_now && now - last_persist_ < kPersistInterval) return;
      last_persist_ = now;
      copy = job_;
    }
    absl::MutexLock pl(&persist_mu_);
    absl::Status s = catalog_->UpdateJob(copy);
    if (!s.ok()) std::cerr << "job " << id_ << ": cannot record state: " << s << "\n";
  }

  const std::string id_;
  catalog::Catalog* const catalog_;
  Clock* const clock_;
  std::atomic<bool> cancel_{false};
  absl::Mutex persist_mu_;  // orders catalog writes of this job
  absl::Mutex mu_;
  v1::Job job_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_persist_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::function<void()> hook_ ABSL_GUARDED_BY(mu_);
};

JobManager::JobManager(catalog::Catalog* catalog, Clock* clock)
    : catalog_(catalog), clock_(clock) {}

JobManager::~JobManager() {
  std::map<std::string, std::thread> threads;
  {
    absl::MutexLock l(&mu_);
    for (auto& [id, live] : live_) live->RequestCancel();
    threads.swap(threads_);
  }
  for (auto& [id, t] : threads) t.join();
}

void JobManager::ReapFinished() {
  for (const auto& id : finished_) {
    auto it = threads_.find(id);
    if (it != threads_.end()) {
      it->second.join();
      threads_.erase(it);
    }
  }
  finished_.clear();
}

absl::StatusOr<v1::Job> JobManager::Start(v1::Job job, const std::string& exclusive_key,
                                          const std::string& busy_message, Body body) {
  absl::MutexLock l(&mu_);
  ReapFinished();
  if (!exclusive_key.empty() && exclusive_.count(exclusive_key) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(busy_message, " (job ", exclusive_[exclusive_key], ")"));
  }
  job.set_state(v1::JOB_STATE_PENDING);
  SetTimestamp(clock_->Now(), job.mutable_create_time());
  auto created = catalog_->CreateJob(job);
  if (!created.ok()) return created.status();
  auto live = std::make_shared<Live>(*created, catalog_, clock_);
  live_[created->id()] = live;
  if (!exclusive_key.empty()) exclusive_[exclusive_key] = created->id();
  std::string id = created->id();
  threads_[id] = std::thread([this, live, body = std::move(body), exclusive_key]() mutable {
    Run(live, std::move(body), [this, &exclusive_key] {
      // Released before the final state shows, so that whoever sees the job
      // ended can start the next one at once.
      absl::MutexLock l(&mu_);
      if (!exclusive_key.empty()) exclusive_.erase(exclusive_key);
    });
    absl::MutexLock l(&mu_);
    live_.erase(live->id());
    finished_.push_back(live->id());
  });
  return *created;
}

void JobManager::Run(std::shared_ptr<Live> live, Body body,
                     const std::function<void()>& before_end) {
  if (live->cancelled()) {
    before_end();
    live->Transition(v1::JOB_STATE_CANCELLED, "cancelled before it started");
    return;
  }
  live->Transition(v1::JOB_STATE_RUNNING, "");
  const absl::Time start = clock_->Now();
  absl::Status s = body(*live);
  before_end();
  const v1::JobState end = s.ok() ? v1::JOB_STATE_SUCCEEDED
                           : (live->cancelled() || absl::IsCancelled(s)) ? v1::JOB_STATE_CANCELLED
                                                                         : v1::JOB_STATE_FAILED;
  metrics::JobEnded(live->Snapshot(nullptr), end,
                    absl::ToDoubleSeconds(clock_->Now() - start));
  live->Transition(end, std::string(s.message()));
}

std::shared_ptr<JobManager::Live> JobManager::FindLive(const std::string& id) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second;
}

std::optional<v1::Job> JobManager::GetLive(const std::string& id) {
  std::shared_ptr<Live> live = FindLive(id);
  if (!live) return std::nullopt;
  return live->Snapshot(nullptr);
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) {
  std::shared_ptr<Live> live = FindLive(id);
  if (live) return live->Snapshot(nullptr);
  return catalog_->GetJob(id);
}

absl::Status JobManager::Watch(const std::string& id, absl::Duration min_interval,
                               const std::function<bool(const v1::Job&)>& on_state) {
  std::shared_ptr<Live> live = FindLive(id);
  if (!live) {
    auto job = catalog_->GetJob(id);
    if (!job.ok()) return job.status();
    on_state(*job);
    return absl::OkStatus();
  }
  uint64_t seen = 0;
  v1::Job job = live->Snapshot(&seen);
  absl::Time last_sent = absl::Now();
  while (true) {
    if (!on_state(job)) return absl::OkStatus();
    if (Ended(job.state())) return absl::OkStatus();
    last_sent = absl::Now();
    uint64_t v = seen;
    // Wake at least every second so that a vanished watcher is noticed.
    while (v == seen) {
      live->WaitChange(seen, absl::Seconds(1));
      job = live->Snapshot(&v);
      if (v == seen && !on_state(job)) return absl::OkStatus();
    }
    if (!Ended(job.state())) {
      // Progress goes out at most every min_interval, but the final state
      // goes out as soon as the job ends.
      absl::Duration since = absl::Now() - last_sent;
      if (since < min_interval) live->WaitEndedFor(min_interval - since);
    }
    job = live->Snapshot(&seen);
  }
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  std::shared_ptr<Live> live = FindLive(id);
  if (!live) {
    auto job = catalog_->GetJob(id);
    if (!job.ok()) return job.status();
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " already ended (",
                                                      v1::JobState_Name(job->state()), ")"));
  }
  v1::Job now = live->Snapshot(nullptr);
  if (Ended(now.state())) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " already ended"));
  }
  live->RequestCancel();
  return live->Snapshot(nullptr);
}

bool JobManager::HostBusy(const std::string& host) {
  absl::MutexLock l(&mu_);
  for (const auto& [id, live] : live_) {
    if (live->Snapshot(nullptr).host() == host) return true;
  }
  return false;
}

absl::StatusOr<v1::Job> JobManager::Wait(const std::string& id) {
  std::shared_ptr<Live> live = FindLive(id);
  if (live) {
    live->WaitEnded();
    return live->Snapshot(nullptr);
  }
  return catalog_->GetJob(id);
}

}  // namespace blkfleet::server
