// SPDX-License-Identifier: Apache-2.0
#include "server/retention.h"

#include <algorithm>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace blkfleet::server {
namespace {

// Newer first: later time, then the larger id (ids grow with every backup).
bool Newer(const RetentionCandidate& a, const RetentionCandidate& b) {
  if (a.time != b.time) return a.time > b.time;
  if (a.id.size() != b.id.size()) return a.id.size() > b.id.size();
  return a.id > b.id;
}

absl::CivilDay MondayOf(absl::CivilDay day) {
  return absl::PrevWeekday(day + 1, absl::Weekday::monday);
}

// A bucketed rule: its name, its count and the label of a time's period.
struct BucketRule {
  const char* name;
  int keep;
  std::function<std::string(absl::CivilSecond)> period;
};

}  // namespace

std::string IsoWeekLabel(absl::CivilDay day) {
  const absl::CivilDay thursday = MondayOf(day) + 3;  // decides the ISO year
  const int week = (absl::GetYearDay(thursday) - 1) / 7 + 1;
  return absl::StrFormat("%04d-W%02d", thursday.year(), week);
}

std::vector<RetentionDecision> ApplyRetention(std::vector<RetentionCandidate> backups,
                                              const Retention& rules, absl::TimeZone tz) {
  std::sort(backups.begin(), backups.end(), Newer);
  std::vector<RetentionDecision> out;
  out.reserve(backups.size());
  for (const auto& b : backups) out.push_back({b.id, b.time, false, {}});
  auto keep = [&](size_t i, std::string reason) {
    out[i].keep = true;
    out[i].reasons.push_back(std::move(reason));
  };

  for (size_t i = 0; i < backups.size(); ++i) {
    if (backups[i].is_protected) keep(i, "protected");
    else if (rules.Empty()) keep(i, "no retention rules");
  }
  if (rules.Empty()) return out;

  int last = 0;
  for (size_t i = 0; i < backups.size() && last < rules.keep_last; ++i) {
    if (!backups[i].is_protected) keep(i, absl::StrCat("last ", ++last));
  }

  const BucketRule buckets[] = {
      {"hourly", rules.keep_hourly,
       [](absl::CivilSecond s) {
         return absl::StrFormat("%04d-%02d-%02d %02d:00", s.year(), s.month(), s.day(), s.hour());
       }},
      {"daily", rules.keep_daily,
       [](absl::CivilSecond s) {
         return absl::StrFormat("%04d-%02d-%02d", s.year(), s.month(), s.day());
       }},
      {"weekly", rules.keep_weekly,
       [](absl::CivilSecond s) { return IsoWeekLabel(absl::CivilDay(s)); }},
      {"monthly", rules.keep_monthly,
       [](absl::CivilSecond s) { return absl::StrFormat("%04d-%02d", s.year(), s.month()); }},
      {"yearly", rules.keep_yearly,
       [](absl::CivilSecond s) { return absl::StrFormat("%04d", s.year()); }},
  };
  for (const BucketRule& rule : buckets) {
    int periods = 0;
    std::set<std::string> seen;
    for (size_t i = 0; i < backups.size() && periods < rule.keep; ++i) {
      if (backups[i].is_protected) continue;
      std::string period = rule.period(absl::ToCivilSecond(backups[i].time, tz));
      // Newest first: the first backup met in a period is its newest. (A
      // civil hour repeated by a DST change is one period.)
      if (!seen.insert(period).second) continue;
      ++periods;
      keep(i, absl::StrCat(rule.name, " ", period));
    }
  }

  if (!out.empty() && !out[0].keep) keep(0, "newest");
  return out;
}

}  // namespace blkfleet::server
