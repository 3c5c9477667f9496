// SPDX-License-Identifier: Apache-2.0
// Retention (server/retention.h): which backups each keep_* rule keeps, and
// why, in a policy's time zone.
#include "server/retention.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace blkfleet::server {
namespace {

absl::TimeZone Zone(const std::string& name) {
  absl::TimeZone tz;
  EXPECT_TRUE(absl::LoadTimeZone(name, &tz)) << name;
  return tz;
}

// "2026-12-01 14:30[ P]": a local time in `tz`, " P" for protected; ids are
// 1, 2, ... in the order given.
std::vector<RetentionCandidate> Backups(const std::vector<std::string>& specs,
                                        absl::TimeZone tz) {
  std::vector<RetentionCandidate> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    std::string spec = specs[i];
    bool prot = false;
    if (spec.size() > 2 && spec.substr(spec.size() - 2) == " P") {
      prot = true;
      spec.resize(spec.size() - 2);
    }
    absl::Time t;
    std::string err;
    EXPECT_TRUE(absl::ParseTime("%Y-%m-%d %H:%M", spec, tz, &t, &err)) << spec << ": " << err;
    out.push_back({std::to_string(i + 1), t, prot});
  }
  return out;
}

// "id: reason, reason" for kept ones, newest first; removed ones as "id: -".
std::vector<std::string> Render(const std::vector<RetentionDecision>& d) {
  std::vector<std::string> out;
  for (const auto& x : d) {
    out.push_back(x.id + ": " + (x.keep ? absl::StrJoin(x.reasons, ", ") : std::string("-")));
  }
  return out;
}

struct Case {
  std::string name;
  std::vector<std::string> backups;  // see Backups()
  Retention rules;
  std::string zone;
  std::vector<std::string> want;  // see Render()
};

Retention R(int last, int hourly, int daily, int weekly, int monthly, int yearly) {
  Retention r;
  r.keep_last = last;
  r.keep_hourly = hourly;
  r.keep_daily = daily;
  r.keep_weekly = weekly;
  r.keep_monthly = monthly;
  r.keep_yearly = yearly;
  return r;
}

class RetentionTableTest : public ::testing::TestWithParam<Case> {};

TEST_P(RetentionTableTest, KeepsExactlyTheExpectedBackupsForTheExpectedReasons) {
  const Case& c = GetParam();
  absl::TimeZone tz = Zone(c.zone);
  auto got = Render(ApplyRetention(Backups(c.backups, tz), c.rules, tz));
  EXPECT_EQ(absl::StrJoin(got, "\n"), absl::StrJoin(c.want, "\n"));
}

const Case kCases[] = {
    {"SingleBackupIsKeptByAnyRule", {"2026-12-01 10:00"}, R(1, 0, 0, 0, 0, 0), "UTC",
     {"1: last 1"}},
    {"SingleBackupWithOnlyADailyRule", {"2026-12-01 10:00"}, R(0, 0, 3, 0, 0, 0), "UTC",
     {"1: daily 2026-12-01"}},
    {"EmptyRulesKeepEverything",
     {"2026-12-01 10:00", "2026-12-02 10:00", "2026-12-03 10:00"}, R(0, 0, 0, 0, 0, 0), "UTC",
     {"3: no retention rules", "2: no retention rules", "1: no retention rules"}},
    {"EmptyRulesStillNameProtection", {"2026-12-01 10:00 P", "2026-12-02 10:00"},
     R(0, 0, 0, 0, 0, 0), "UTC", {"2: no retention rules", "1: protected"}},
    {"KeepLastKeepsTheNewestN",
     {"2026-12-01 10:00", "2026-12-01 11:00", "2026-12-01 12:00", "2026-12-01 13:00"},
     R(2, 0, 0, 0, 0, 0), "UTC", {"4: last 1", "3: last 2", "2: -", "1: -"}},
    {"KeepLastLargerThanTheCountKeepsAll", {"2026-12-01 10:00", "2026-12-01 11:00"},
     R(5, 0, 0, 0, 0, 0), "UTC", {"2: last 1", "1: last 2"}},
    {"InputOrderDoesNotMatter",
     {"2026-12-01 13:00", "2026-12-01 10:00", "2026-12-01 12:00", "2026-12-01 11:00"},
     R(2, 0, 0, 0, 0, 0), "UTC", {"1: last 1", "3: last 2", "4: -", "2: -"}},
    {"HourlyKeepsTheNewestOfEachHour",
     {"2026-12-01 10:05", "2026-12-01 10:55", "2026-12-01 11:10", "2026-12-01 11:40",
      "2026-12-01 13:00"},
     R(0, 2, 0, 0, 0, 0), "UTC",
     {"5: hourly 2026-12-01 13:00", "4: hourly 2026-12-01 11:00", "3: -", "2: -", "1: -"}},
    {"DailyCountsDaysThatHoldABackupNotCalendarDays",
     {"2026-11-20 09:00", "2026-11-25 09:00", "2026-11-25 21:00", "2026-12-01 08:00",
      "2026-12-01 20:00"},
     R(0, 0, 3, 0, 0, 0), "UTC",
     {"5: daily 2026-12-01", "4: -", "3: daily 2026-11-25", "2: -", "1: daily 2026-11-20"}},
    {"DailyUsesThePolicyTimeZoneDayBoundary",
     // 23:30 and 00:30 in New York: two local days, one UTC day.
     {"2026-12-01 23:30", "2026-12-02 00:30"}, R(0, 0, 2, 0, 0, 0), "America/New_York",
     {"2: daily 2026-12-02", "1: daily 2026-12-01"}},
    {"DailyInUtcMergesWhatNewYorkSplits",
     // The same instants as above, seen in UTC: 04:30 and 05:30 on Dec 2.
     {"2026-12-02 04:30", "2026-12-02 05:30"}, R(0, 0, 2, 0, 0, 0), "UTC",
     {"2: daily 2026-12-02", "1: -"}},
    {"DailyAcrossTheFallBackDstDayIsOneDay",
     // Berlin falls back on 2026-10-25 (a 25-hour day): 00:30 and 23:30 are
     // one calendar day there.
     {"2026-10-24 23:30", "2026-10-25 00:30", "2026-10-25 23:30", "2026-10-26 00:30"},
     R(0, 0, 3, 0, 0, 0), "Europe/Berlin",
     {"4: daily 2026-10-26", "3: daily 2026-10-25", "2: -", "1: daily 2026-10-24"}},
    {"DailyAcrossTheSpringForwardDstDay",
     // Berlin springs forward on 2026-03-29 (a 23-hour day).
     {"2026-03-28 23:50", "2026-03-29 00:10", "2026-03-29 03:10", "2026-03-29 23:50"},
     R(0, 0, 2, 0, 0, 0), "Europe/Berlin",
     {"4: daily 2026-03-29", "3: -", "2: -", "1: daily 2026-03-28"}},
    {"WeeklyWeeksStartOnMonday",
     // 2026-11-29 is a Sunday, 2026-11-30 a Monday.
     {"2026-11-23 09:00", "2026-11-29 23:00", "2026-11-30 01:00", "2026-12-06 09:00"},
     R(0, 0, 0, 3, 0, 0), "UTC",
     {"4: weekly 2026-W49", "3: -", "2: weekly 2026-W48", "1: -"}},
    {"WeeklyAcrossTheYearEndUsesTheIsoYear",
     // 2026-12-31 (Thursday) is in 2026-W53; 2027-01-04 (Monday) starts W01;
     // 2021-01-01 (Friday) belongs to 2020-W53.
     {"2021-01-01 09:00", "2026-12-31 09:00", "2027-01-03 09:00", "2027-01-04 09:00"},
     R(0, 0, 0, 5, 0, 0), "UTC",
     {"4: weekly 2027-W01", "3: weekly 2026-W53", "2: -", "1: weekly 2020-W53"}},
    {"MonthlyKeepsTheNewestOfEachMonth",
     {"2026-09-30 23:00", "2026-10-01 01:00", "2026-10-31 12:00", "2026-11-15 12:00",
      "2026-12-01 00:30"},
     R(0, 0, 0, 0, 3, 0), "UTC",
     {"5: monthly 2026-12", "4: monthly 2026-11", "3: monthly 2026-10", "2: -", "1: -"}},
    {"MonthlyBoundaryInTheTimeZone",
     // 2026-12-01 00:30 in Tokyo is still November in UTC; as Tokyo sees it
     // the two backups fall in different months.
     {"2026-11-30 23:30", "2026-12-01 00:30"}, R(0, 0, 0, 0, 1, 0), "Asia/Tokyo",
     {"2: monthly 2026-12", "1: -"}},
    {"YearlyKeepsTheNewestOfEachYear",
     {"2024-06-01 00:00", "2024-12-31 23:00", "2025-03-01 00:00", "2026-01-01 00:00"},
     R(0, 0, 0, 0, 0, 2), "UTC",
     {"4: yearly 2026", "3: yearly 2025", "2: -", "1: -"}},
    {"RulesCombineAndNameEveryRuleThatKept",
     {"2026-11-02 10:00", "2026-11-30 10:00", "2026-12-01 09:00", "2026-12-01 10:00",
      "2026-12-02 10:00"},
     R(1, 0, 2, 0, 2, 0), "UTC",
     {"5: last 1, daily 2026-12-02, monthly 2026-12", "4: daily 2026-12-01", "3: -",
      "2: monthly 2026-11", "1: -"}},
    {"ProtectedAreKeptAndTakeNoSlot",
     {"2026-12-01 10:00", "2026-12-01 11:00 P", "2026-12-01 12:00", "2026-12-01 13:00 P"},
     R(2, 0, 0, 0, 0, 0), "UTC", {"4: protected", "3: last 1", "2: protected", "1: last 2"}},
    {"ProtectedTakeNoDailySlot",
     {"2026-11-29 10:00", "2026-11-30 10:00 P", "2026-12-01 10:00"}, R(0, 0, 2, 0, 0, 0),
     "UTC", {"3: daily 2026-12-01", "2: protected", "1: daily 2026-11-29"}},
    {"AllProtectedAllKept", {"2026-12-01 10:00 P", "2026-12-02 10:00 P"}, R(1, 0, 0, 0, 0, 0),
     "UTC", {"2: protected", "1: protected"}},
    {"TiesInTimeAreBrokenByTheLargerId",
     {"2026-12-01 10:00", "2026-12-01 10:00", "2026-12-01 10:00"}, R(0, 0, 1, 0, 0, 0), "UTC",
     {"3: daily 2026-12-01", "2: -", "1: -"}},
    {"NoBackupsNoDecisions", {}, R(3, 0, 0, 0, 0, 0), "UTC", {}},
};

INSTANTIATE_TEST_SUITE_P(Cases, RetentionTableTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

TEST(RetentionTest, IdsCompareAsNumbersNotText) {
  // Ids 9 and 10 at the same time: 10 is the newer.
  absl::Time t = absl::FromUnixSeconds(1'800'000'000);
  auto d = ApplyRetention({{"9", t, false}, {"10", t, false}}, R(1, 0, 0, 0, 0, 0),
                          absl::UTCTimeZone());
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].id, "10");
  EXPECT_TRUE(d[0].keep);
  EXPECT_EQ(d[1].id, "9");
  EXPECT_FALSE(d[1].keep);
}

TEST(RetentionTest, HourlyAcrossTheRepeatedFallBackHourIsOneHour) {
  // Europe/Berlin, 2026-10-25: 02:00-02:59 happens twice (CEST, then CET).
  absl::TimeZone tz = Zone("Europe/Berlin");
  absl::Time first = absl::FromCivil(absl::CivilSecond(2026, 10, 25, 0, 30, 0), absl::UTCTimeZone());
  // 00:30 UTC = 02:30 CEST; 01:30 UTC = 02:30 CET; 02:30 UTC = 03:30 CET.
  std::vector<RetentionCandidate> b = {{"1", first, false},
                                       {"2", first + absl::Hours(1), false},
                                       {"3", first + absl::Hours(2), false}};
  auto d = Render(ApplyRetention(b, R(0, 3, 0, 0, 0, 0), tz));
  EXPECT_EQ(absl::StrJoin(d, "\n"),
            "3: hourly 2026-10-25 03:00\n2: hourly 2026-10-25 02:00\n1: -");
}

TEST(RetentionTest, IsoWeekLabels) {
  EXPECT_EQ(IsoWeekLabel(absl::CivilDay(2026, 1, 1)), "2026-W01");   // Thursday
  EXPECT_EQ(IsoWeekLabel(absl::CivilDay(2027, 1, 1)), "2026-W53");   // Friday
  EXPECT_EQ(IsoWeekLabel(absl::CivilDay(2024, 12, 30)), "2025-W01"); // Monday
  EXPECT_EQ(IsoWeekLabel(absl::CivilDay(2026, 12, 6)), "2026-W49");  // Sunday
  EXPECT_EQ(IsoWeekLabel(absl::CivilDay(2026, 12, 7)), "2026-W50");  // Monday
}

}  // namespace
}  // namespace blkfleet::server
