// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_POLICY_H_
#define BLKFLEET_SERVER_POLICY_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/cron.h"

namespace blkfleet::server {

// How many backups prune keeps per (host, device set) (docs/policies.md).
// 0 everywhere keeps everything: prune removes nothing without a rule.
struct Retention {
  int keep_last = 0;
  int keep_hourly = 0;
  int keep_daily = 0;
  int keep_weekly = 0;
  int keep_monthly = 0;
  int keep_yearly = 0;
  bool Empty() const {
    return keep_last == 0 && keep_hourly == 0 && keep_daily == 0 && keep_weekly == 0 &&
           keep_monthly == 0 && keep_yearly == 0;
  }
};

// Retries of a failed scheduled run: the n-th retry waits
// min(initial_backoff * 2^(n-1), max_backoff), moved by up to +-jitter of it.
struct RetryPolicy {
  int max_attempts = 3;  // runs of one slot, the first included
  absl::Duration initial_backoff = absl::Minutes(5);
  absl::Duration max_backoff = absl::Hours(1);
  double jitter = 0.2;
};

struct HostGroup {
  std::string name;
  std::vector<std::string> hosts;  // exact names
  std::vector<std::string> match;  // shell patterns on names (`*`, `?`)
  bool Contains(const std::string& host) const;
};

struct DeviceSet {
  std::string name;
  std::vector<std::string> devices;
};

struct Policy {
  std::string name;
  std::string host_group;
  std::string device_set;
  CronSchedule schedule;
  std::string time_zone;
  Retention retention;
  bool prune_after_backup = false;
  RetryPolicy retry;
};

struct Concurrency {
  int global = 16;   // scheduled backups running at once
  int per_host = 1;  // of one host
};

// One validated policy document.
struct PolicySet {
  std::string document;  // the YAML as applied
  Concurrency concurrency;
  std::map<std::string, HostGroup> host_groups;
  std::map<std::string, DeviceSet> device_sets;
  std::vector<Policy> policies;
};

// Parses and validates a policy document (docs/policies.md).
// INVALID_ARGUMENT naming the field path (e.g. `policies[2].schedule.cron`)
// and the reason.
absl::StatusOr<PolicySet> ParsePolicyDocument(const std::string& yaml);

// Shell-style match of `name` against `pattern` (`*` any run, `?` one char).
bool GlobMatch(std::string_view pattern, std::string_view name);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_POLICY_H_
