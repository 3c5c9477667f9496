// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_CRON_H_
#define BLKFLEET_SERVER_CRON_H_

#include <bitset>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace blkfleet::server {

// A five-field cron expression (minute hour day-of-month month day-of-week)
// evaluated in a time zone. Fields take `*`, numbers, ranges `a-b`, steps
// `*/n` and `a-b/n`, and comma lists; day-of-week 0-7 (0 and 7: Sunday).
// As in Vixie cron, when both day fields are restricted a day matching
// either runs.
//
// Daylight saving time: a slot whose local time does not exist (the hour
// skipped in spring) runs at the transition; a local time that occurs twice
// (autumn) runs once, at its first occurrence.
class CronSchedule {
 public:
  // INVALID_ARGUMENT naming the field and the reason.
  static absl::StatusOr<CronSchedule> Parse(const std::string& expr, absl::TimeZone tz);

  // The first slot strictly after `t`. absl::InfiniteFuture() when none
  // within eight years (e.g. February 30).
  absl::Time Next(absl::Time t) const;

  const std::string& text() const { return text_; }
  absl::TimeZone tz() const { return tz_; }

 private:
  bool DayMatches(const absl::CivilDay& d) const;

  std::string text_;
  absl::TimeZone tz_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> mdays_;   // 1..31
  std::bitset<13> months_;  // 1..12
  std::bitset<7> wdays_;    // 0..6, Sunday 0
  bool mday_any_ = true;
  bool wday_any_ = true;
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_CRON_H_
