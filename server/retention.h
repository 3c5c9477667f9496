// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_RETENTION_H_
#define BLKFLEET_SERVER_RETENTION_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/policy.h"

namespace blkfleet::server {

// One committed backup of one (host, device set) as retention sees it.
struct RetentionCandidate {
  std::string id;         // decimal backup id: the tie-break of equal times
  absl::Time time;        // the backup's start (its snapshot)
  bool is_protected = false;
};

// What retention decided for one backup. `reasons` name every rule that kept
// it, e.g. "last 2", "daily 2026-12-01", "weekly 2026-W49", "monthly 2026-12",
// "yearly 2026", "hourly 2026-12-01 14:00", "protected", "newest",
// "no retention rules"; empty when it goes.
struct RetentionDecision {
  std::string id;
  absl::Time time;
  bool keep = false;
  std::vector<std::string> reasons;
};

// Applies `rules` to the committed backups of one (host, device set)
// (docs/policies.md, "Retention"), periods taken in `tz`. Returns one decision
// per candidate, newest first (by time, then by id). Pure: no clock, no I/O.
//
// - Protected backups are always kept ("protected") and take no rule's slot.
// - keep_last N keeps the N newest unprotected backups.
// - keep_hourly/daily/weekly/monthly/yearly N: walking the unprotected
//   backups newest first, each keeps the newest backup of every period (hour,
//   calendar day, ISO week from Monday, month, year in `tz`) that holds one,
//   for the N most recent such periods.
// - A backup kept by any rule is kept; rules do not share slots.
// - Empty rules keep everything; the newest backup is never removed.
std::vector<RetentionDecision> ApplyRetention(std::vector<RetentionCandidate> backups,
                                              const Retention& rules, absl::TimeZone tz);

// "2026-W49": the ISO 8601 week (weeks start on Monday; week 1 holds the
// year's first Thursday) of civil day `day`.
std::string IsoWeekLabel(absl::CivilDay day);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_RETENTION_H_
