// SPDX-License-Identifier: Apache-2.0
#include "server/scheduler.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/server_metrics.h"

namespace blkfleet::server {
namespace {

absl::Time FromUs(int64_t us) { return absl::FromUnixMicros(us); }

bool JobEnded(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED ||
         s == v1::JOB_STATE_CANCELLED;
}

const Policy* FindPolicy(const PolicySet& set, const std::string& name) {
  for (const auto& p : set.policies) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace

absl::Duration MaxBackupAge(const Policy& p, absl::Time from) {
  absl::Duration widest = absl::ZeroDuration();
  const absl::Time until = from + absl::Hours(24 * 366);
  absl::Time slot = p.schedule.Next(from);
  for (int i = 0; i < 10000 && slot < until; ++i) {
    absl::Time next = p.schedule.Next(slot);
    if (next == absl::InfiniteFuture()) break;
    widest = std::max(widest, next - slot);
    slot = next;
  }
  absl::Duration retries = absl::ZeroDuration();
  absl::Duration wait = p.retry.initial_backoff;
  for (int attempt = 1; attempt < p.retry.max_attempts; ++attempt) {
    retries += std::min(wait, p.retry.max_backoff) * (1.0 + p.retry.jitter);
    if (wait < p.retry.max_backoff) wait *= 2;
  }
  return widest + retries + absl::Hours(1);
}

int64_t ToUnixMicrosOrZero(absl::Time t) {
  return t == absl::InfiniteFuture() ? 0 : absl::ToUnixMicros(t);
}

Scheduler::Scheduler(catalog::Catalog* catalog, Clock* clock, StartBackupFn start,
                     GetJobFn get_job, SchedulerOptions options)
    : catalog_(catalog),
      clock_(clock),
      start_(std::move(start)),
      get_job_(std::move(get_job)),
      options_(options),
      rng_(options.seed) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::SetAfterBackup(AfterBackupFn fn) {
  absl::MutexLock l(&mu_);
  after_backup_ = std::move(fn);
}

absl::Status Scheduler::LoadStored() {
  auto doc = catalog_->LoadPolicyDocument();
  if (!doc.ok()) return doc.status();
  if (!doc->has_value()) return absl::OkStatus();
  auto set = ParsePolicyDocument(**doc);
  if (!set.ok()) {
    return absl::Status(set.status().code(),
                        absl::StrCat("stored policy document: ", set.status().message()));
  }
  absl::MutexLock l(&mu_);
  set_ = std::move(*set);
  policy_max_age_.clear();
  return absl::OkStatus();
}

absl::StatusOr<PolicySet> Scheduler::Apply(const std::string& document, bool dry_run) {
  auto set = ParsePolicyDocument(document);
  if (!set.ok() || dry_run) return set;
  if (absl::Status s = catalog_->SavePolicyDocument(document); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  set_ = *set;
  policy_max_age_.clear();
  return set;
}

std::optional<PolicySet> Scheduler::Policies() {
  absl::MutexLock l(&mu_);
  return set_;
}

std::vector<catalog::ScheduleState> Scheduler::Targets() {
  absl::MutexLock l(&mu_);
  if (!loaded_states_) {
    auto stored = catalog_->ListScheduleStates();
    return stored.ok() ? *stored : std::vector<catalog::ScheduleState>{};
  }
  std::vector<catalog::ScheduleState> out;
  for (const auto& [k, st] : states_) out.push_back(st);
  return out;
}

std::vector<std::string> Scheduler::AllHosts() {
  std::vector<std::string> out;
  catalog::PageRequest page;
  page.limit = 1000;
  while (true) {
    auto hosts = catalog_->ListHosts(page);
    if (!hosts.ok()) break;
    for (const auto& h : *hosts) out.push_back(h.name());
    if (static_cast<int>(hosts->size()) < page.limit) break;
    page.offset += page.limit;
  }
  return out;
}

std::vector<std::string> Scheduler::HostsOf(const std::string& policy) {
  std::optional<PolicySet> set = Policies();
  std::vector<std::string> out;
  if (!set) return out;
  const Policy* p = FindPolicy(*set, policy);
  if (!p) return out;
  const HostGroup& g = set->host_groups.at(p->host_group);
  for (const auto& h : AllHosts()) {
    if (g.Contains(h)) out.push_back(h);
  }
  return out;
}

void Scheduler::Persist(const catalog::ScheduleState& st) { dirty_.insert({st.policy, st.host}); }

void Scheduler::Flush() {
  if (dirty_.empty()) return;
  std::vector<catalog::ScheduleState> changed;
  changed.reserve(dirty_.size());
  for (const Key& k : dirty_) {
    auto it = states_.find(k);
    if (it != states_.end()) changed.push_back(it->second);
  }
  // A failed write stays pending for the next pass; the in-memory state
  // stays authoritative while this process runs.
  if (catalog_->PutScheduleStates(changed).ok()) dirty_.clear();
}

void Scheduler::ExportMaxAges(const std::vector<std::string>& hosts, const std::set<Key>& wanted,
                              absl::Time now) {
  if (!set_) return;
  if (!policy_max_age_.empty() && hosts == max_age_hosts_) return;  // nothing changed
  max_age_hosts_ = hosts;
  if (policy_max_age_.empty()) {
    for (const auto& p : set_->policies) policy_max_age_[p.name] = MaxBackupAge(p, now);
  }
  std::map<std::pair<std::string, std::string>, absl::Duration> limits;
  for (const Key& k : wanted) {
    const Policy* p = FindPolicy(*set_, k.first);
    if (!p) continue;
    const absl::Duration age = policy_max_age_.at(p->name);
    for (const auto& device : set_->device_sets.at(p->device_set).devices) {
      auto [it, inserted] = limits.try_emplace({k.second, device}, age);
      if (!inserted) it->second = std::min(it->second, age);
    }
  }
  for (const auto& [hd, age] : limits) {
    auto it = exported_max_age_.find(hd);
    if (it != exported_max_age_.end() && it->second == age) continue;
    metrics::SetBackupMaxAge(hd.first, hd.second, absl::ToDoubleSeconds(age));
    exported_max_age_[hd] = age;
  }
  // A host deleted or no longer covered: its limit goes (the alert rule
  // falls back to its default for a device still backed up by hand).
  for (auto it = exported_max_age_.begin(); it != exported_max_age_.end();) {
    if (limits.count(it->first)) {
      ++it;
      continue;
    }
    metrics::ClearBackupMaxAge(it->first.first, it->first.second);
    it = exported_max_age_.erase(it);
  }
}

absl::Duration Scheduler::Backoff(const RetryPolicy& r, int attempt) {
  absl::Duration d = r.initial_backoff;
  for (int i = 1; i < attempt && d < r.max_backoff; ++i) d *= 2;
  d = std::min(d, r.max_backoff);
  if (r.jitter > 0) {
    std::uniform_real_distribution<double> u(-r.jitter, r.jitter);
    d = d * (1.0 + u(rng_));
  }
  return d;
}

void Scheduler::FailedAttempt(catalog::ScheduleState& st, const Policy& p, const std::string& why,
                              absl::Time now) {
  if (st.attempt < p.retry.max_attempts) {
    absl::Time at = now + Backoff(p.retry, st.attempt);
    st.retry_at_us = absl::ToUnixMicros(at);
    st.last_result = absl::StrCat("failed (attempt ", st.attempt, " of ", p.retry.max_attempts,
                                  ", retry at ", absl::FormatTime(at), "): ", why);
  } else {
    st.retry_at_us = 0;
    st.last_result =
        absl::StrCat("failed (gave up after ", st.attempt, " attempts): ", why);
  }
}

void Scheduler::Ended(catalog::ScheduleState& st, const Policy& p, const v1::Job& job,
                      absl::Time now) {
  st.running = false;
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    st.retry_at_us = 0;
    st.last_result = "succeeded";
    if (p.prune_after_backup && after_backup_) after_backup_(p, st.host);
    return;
  }
  std::string why = job.error().empty()
                        ? std::string(job.state() == v1::JOB_STATE_CANCELLED ? "cancelled" : "failed")
                        : job.error();
  FailedAttempt(st, p, absl::StrCat("job ", job.id(), ": ", why), now);
}

void Scheduler::Tick() {
  absl::MutexLock l(&mu_);
  TickLocked(clock_->Now());
  Flush();
}

void Scheduler::TickLocked(absl::Time now) {
  if (!loaded_states_) {
    auto stored = catalog_->ListScheduleStates();
    if (!stored.ok()) return;
    for (auto& st : *stored) states_[{st.policy, st.host}] = st;
    loaded_states_ = true;
  }
  if (!set_) return;
  const PolicySet& set = *set_;

  // Targets of the applied set among the known hosts.
  std::vector<std::string> hosts = AllHosts();
  std::set<Key> wanted;
  for (const auto& p : set.policies) {
    const HostGroup& g = set.host_groups.at(p.host_group);
    for (const auto& h : hosts) {
      if (!g.Contains(h)) continue;
      Key k{p.name, h};
      wanted.insert(k);
      auto it = states_.find(k);
      if (it == states_.end()) {
        catalog::ScheduleState st;
        st.policy = p.name;
        st.host = h;
        st.next_slot_us = ToUnixMicrosOrZero(p.schedule.Next(now));
        states_[k] = st;
        Persist(st);
      } else if (it->second.next_slot_us == 0 && !it->second.running) {
        // A schedule with no future slot, changed since: pick the next.
        it->second.next_slot_us = ToUnixMicrosOrZero(p.schedule.Next(now));
        Persist(it->second);
      }
    }
  }
  ExportMaxAges(hosts, wanted, now);
  // Targets gone from the set (policy, group or host removed): forgotten once
  // their job ended. A policy re-added later starts from its next slot.
  for (auto it = states_.begin(); it != states_.end();) {
    if (!wanted.count(it->first) && !it->second.running) {
      dirty_.erase(it->first);
      (void)catalog_->DeleteScheduleState(it->first.first, it->first.second);
      it = states_.erase(it);
    } else {
      ++it;
    }
  }

  // Jobs that ended since the last pass; count the ones still running.
  int running = 0;
  std::map<std::string, int> running_by_host;
  for (auto& [k, st] : states_) {
    if (!st.running) continue;
    auto job = get_job_(st.job_id);
    const Policy* p = FindPolicy(set, k.first);
    if (!job.ok() || JobEnded(job->state())) {
      if (p) {
        v1::Job failed;
        if (job.ok()) {
          failed = *job;
        } else {
          failed.set_id(st.job_id);
          failed.set_state(v1::JOB_STATE_FAILED);
          failed.set_error(std::string(job.status().message()));
        }
        Ended(st, *p, failed, now);
      } else {
        st.running = false;
      }
      Persist(st);
      continue;
    }
    ++running;
    ++running_by_host[k.second];
  }

  // Due targets, the longest waiting first so that limits delay fairly.
  struct Due {
    absl::Time since;
    Key key;
    bool retry;
  };
  std::vector<Due> due;
  for (auto& [k, st] : states_) {
    if (st.running || !wanted.count(k)) continue;
    bool slot_due = st.next_slot_us != 0 && FromUs(st.next_slot_us) <= now;
    bool retry_due = st.retry_at_us != 0 && FromUs(st.retry_at_us) <= now;
    if (slot_due) {
      due.push_back({FromUs(st.next_slot_us), k, false});
    } else if (retry_due) {
      due.push_back({FromUs(st.retry_at_us), k, true});
    }
  }
  std::sort(due.begin(), due.end(), [](const Due& a, const Due& b) {
    return a.since != b.since ? a.since < b.since : a.key < b.key;
  });
  for (const Due& d : due) {
    if (running >= set.concurrency.global) break;
    const std::string& host = d.key.second;
    if (running_by_host[host] >= set.concurrency.per_host) continue;
    catalog::ScheduleState& st = states_[d.key];
    const Policy* p = FindPolicy(set, d.key.first);
    if (!p) continue;
    absl::Time slot = FromUs(st.last_slot_us);
    int missed = 0;
    if (!d.retry) {
      // Fold every slot that passed into one run: the latest.
      slot = FromUs(st.next_slot_us);
      for (absl::Time n = p->schedule.Next(slot); n <= now; n = p->schedule.Next(slot)) {
        slot = n;
        ++missed;
      }
    }
    auto job = start_(host, set.device_sets.at(p->device_set).devices);
    if (!job.ok() && absl::IsFailedPrecondition(job.status())) continue;  // busy: stays due
    if (!d.retry) {
      st.last_slot_us = absl::ToUnixMicros(slot);
      st.next_slot_us = ToUnixMicrosOrZero(p->schedule.Next(slot));
      st.missed_slots = missed;
      st.attempt = 0;
      st.last_lag_ms = absl::ToInt64Milliseconds(now - slot);
      metrics::SetSchedulerLag(absl::ToDoubleSeconds(now - slot));
    }
    st.retry_at_us = 0;
    st.attempt += 1;
    st.last_start_us = absl::ToUnixMicros(now);
    if (!job.ok()) {
      st.job_id.clear();
      st.running = false;
      FailedAttempt(st, *p, std::string(job.status().message()), now);
    } else {
      st.job_id = job->id();
      st.running = true;
      st.last_result = "running";
      ++running;
      ++running_by_host[host];
    }
    Persist(st);
  }
}

void Scheduler::Start() {
  thread_ = std::thread([this] {
    absl::MutexLock l(&mu_);
    while (!stop_) {
      TickLocked(clock_->Now());
      Flush();
      mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.tick);
    }
  });
}

void Scheduler::Stop() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace blkfleet::server
