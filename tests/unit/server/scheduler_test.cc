// SPDX-License-Identifier: Apache-2.0
// Cron parsing, policy validation and the scheduler on a fake clock
// (docs/policies.md), including a 1,000-host fleet simulation.
#include "server/scheduler.h"

#include <cstdio>
#include <map>
#include <random>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/metrics.h"
#include "server/catalog/sqlite_catalog.h"
#include "server/cron.h"
#include "server/policy.h"
#include "temp_dir.h"

namespace blkfleet::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time t) : now_(t) {}
  absl::Time Now() const override { return now_; }
  void Advance(absl::Duration d) { now_ += d; }
  void Set(absl::Time t) { now_ = t; }

 private:
  absl::Time now_;
};

absl::TimeZone Tz(const std::string& name) {
  absl::TimeZone tz;
  EXPECT_TRUE(absl::LoadTimeZone(name, &tz)) << name;
  return tz;
}

absl::Time At(int y, int mo, int d, int h, int mi, absl::TimeZone tz = absl::UTCTimeZone()) {
  return absl::FromCivil(absl::CivilMinute(y, mo, d, h, mi), tz);
}

// --- cron -----------------------------------------------------------------

TEST(Cron, NextSlots) {
  struct Case {
    std::string expr;
    absl::Time from;
    absl::Time want;
  };
  const Case cases[] = {
      {"0 * * * *", At(2026, 1, 1, 10, 0), At(2026, 1, 1, 11, 0)},
      {"0 * * * *", At(2026, 1, 1, 10, 59), At(2026, 1, 1, 11, 0)},
      {"*/15 * * * *", At(2026, 1, 1, 10, 16), At(2026, 1, 1, 10, 30)},
      {"30 2 * * *", At(2026, 1, 1, 3, 0), At(2026, 1, 2, 2, 30)},
      {"0 0 1 * *", At(2026, 1, 15, 0, 0), At(2026, 2, 1, 0, 0)},
      {"0 0 29 2 *", At(2026, 3, 1, 0, 0), At(2028, 2, 29, 0, 0)},
      {"0 9 * * 1-5", At(2026, 1, 2, 10, 0), At(2026, 1, 5, 9, 0)},  // Fri -> Mon
      {"0 9 * * 7", At(2026, 1, 1, 0, 0), At(2026, 1, 4, 9, 0)},     // 7 is Sunday
      {"0 0 13 * 5", At(2026, 1, 1, 0, 0), At(2026, 1, 2, 0, 0)},    // either day field
      {"5,35 1-2 * * *", At(2026, 1, 1, 1, 5), At(2026, 1, 1, 1, 35)},
      {"10/20 * * * *", At(2026, 1, 1, 0, 31), At(2026, 1, 1, 0, 50)},
  };
  for (const Case& c : cases) {
    auto cron = CronSchedule::Parse(c.expr, absl::UTCTimeZone());
    ASSERT_TRUE(cron.ok()) << c.expr << ": " << cron.status();
    EXPECT_EQ(cron->Next(c.from), c.want) << c.expr << " after " << c.from;
  }
}

TEST(Cron, NeverMatchingIsInfinite) {
  auto cron = CronSchedule::Parse("0 0 30 2 *", absl::UTCTimeZone());
  ASSERT_TRUE(cron.ok());
  EXPECT_EQ(cron->Next(At(2026, 1, 1, 0, 0)), absl::InfiniteFuture());
}

TEST(Cron, DaylightSavingTime) {
  absl::TimeZone berlin = Tz("Europe/Berlin");
  // 2026-03-29: 02:00 -> 03:00 in Berlin. The 02:30 slot runs at the jump.
  auto daily = CronSchedule::Parse("30 2 * * *", berlin);
  ASSERT_TRUE(daily.ok());
  absl::Time n = daily->Next(At(2026, 3, 28, 12, 0, berlin));
  EXPECT_EQ(n, At(2026, 3, 29, 3, 0, berlin));
  EXPECT_EQ(daily->Next(n), At(2026, 3, 30, 2, 30, berlin));
  // 2026-10-25: 03:00 -> 02:00. An hourly schedule runs 02:00 once, not twice.
  auto hourly = CronSchedule::Parse("0 * * * *", berlin);
  ASSERT_TRUE(hourly.ok());
  absl::Time t = At(2026, 10, 25, 0, 30, berlin);
  std::vector<absl::Time> slots;
  for (int i = 0; i < 4; ++i) slots.push_back(t = hourly->Next(t));
  // 01:00 CEST, 02:00 CEST, (02:00 CET is the same civil time: skipped), 03:00 CET
  EXPECT_EQ(slots[0], At(2026, 10, 24, 23, 0));  // 01:00 CEST
  EXPECT_EQ(slots[1] - slots[0], absl::Hours(1));
  EXPECT_EQ(slots[2] - slots[1], absl::Hours(2));
  EXPECT_EQ(slots[3] - slots[2], absl::Hours(1));
}

TEST(Cron, BadInputNamesFieldAndReason) {
  struct Case {
    std::string expr;
    std::string want;
  };
  const Case cases[] = {
      {"", "has 0 fields"},
      {"* * * *", "has 4 fields"},
      {"* * * * * *", "has 6 fields"},
      {"60 * * * *", "minute field '60': 60 is outside 0-59"},
      {"* 24 * * *", "hour field '24': 24 is outside 0-23"},
      {"* * 0 * *", "day-of-month field '0': 0 is outside 1-31"},
      {"* * * 13 *", "month field '13'"},
      {"* * * * 8", "day-of-week field '8'"},
      {"*/0 * * * *", "step '0' is not a positive number"},
      {"5-1 * * * *", "range 5-1 is backwards"},
      {"a * * * *", "'a' is not a number"},
      {"1,,2 * * * *", "empty list item"},
      {"-1 * * * *", "is not a number"},
  };
  for (const Case& c : cases) {
    auto cron = CronSchedule::Parse(c.expr, absl::UTCTimeZone());
    ASSERT_FALSE(cron.ok()) << c.expr;
    EXPECT_EQ(cron.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(cron.status().message(), HasSubstr(c.want)) << c.expr;
  }
}

// --- policy documents -------------------------------------------------------

constexpr char kGood[] = R"(
version: 1
concurrency:
  global: 4
  per_host: 1
host_groups:
  web:
    hosts: [web1]
    match: ["web-*"]
device_sets:
  system:
    devices: [/dev/vda]
policies:
  - name: hourly
    host_group: web
    device_set: system
    schedule:
      cron: "0 * * * *"
      time_zone: Europe/Berlin
    retention:
      keep_last: 3
      keep_daily: 7
    prune_after_backup: true
    retry:
      max_attempts: 3
      initial_backoff: 1m
      max_backoff: 10m
      jitter: 0.1
)";

TEST(PolicyDocument, ParsesGood) {
  auto set = ParsePolicyDocument(kGood);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->concurrency.global, 4);
  ASSERT_EQ(set->policies.size(), 1u);
  const Policy& p = set->policies[0];
  EXPECT_EQ(p.time_zone, "Europe/Berlin");
  EXPECT_EQ(p.retention.keep_last, 3);
  EXPECT_EQ(p.retention.keep_daily, 7);
  EXPECT_TRUE(p.prune_after_backup);
  EXPECT_EQ(p.retry.initial_backoff, absl::Minutes(1));
  EXPECT_TRUE(set->host_groups.at("web").Contains("web1"));
  EXPECT_TRUE(set->host_groups.at("web").Contains("web-17"));
  EXPECT_FALSE(set->host_groups.at("web").Contains("db1"));
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

TEST(PolicyDocument, BadDocumentsNameTheFieldPath) {
  struct Case {
    std::string doc;
    std::string want;
  };
  const std::string g = kGood;
  const Case cases[] = {
      {"version: 1\nfoo: 2\n", "foo: unknown field"},
      {"policies: []\n", "version: missing"},
      {"version: 2\n", "version: 2 is outside 1-1"},
      {"version: [1\n", "not valid YAML"},
      {Replace(g, "global: 4", "global: 0"), "concurrency.global: 0 is outside"},
      {Replace(g, "per_host: 1", "per_host: x"), "concurrency.per_host: 'x' is not a whole number"},
      {Replace(g, "hosts: [web1]", "hosts: [web1, web1]"), "host_groups.web.hosts[1]: 'web1' is listed twice"},
      {Replace(g, "devices: [/dev/vda]", "devices: []"), "device_sets.system.devices: is empty"},
      {Replace(g, "host_group: web", "host_group: db"), "policies[0].host_group: 'db' is not defined under host_groups"},
      {Replace(g, "device_set: system", "device_set: data"), "policies[0].device_set: 'data' is not defined"},
      {Replace(g, "\"0 * * * *\"", "\"0 * * *\""), "policies[0].schedule.cron: cron '0 * * *' has 4 fields"},
      {Replace(g, "\"0 * * * *\"", "\"99 * * * *\""), "policies[0].schedule.cron: cron minute field"},
      {Replace(g, "Europe/Berlin", "Mars/Olympus"), "policies[0].schedule.time_zone: 'Mars/Olympus' is not a known time zone"},
      {Replace(g, "keep_last: 3", "keep_last: -1"), "policies[0].retention.keep_last: -1 is outside"},
      {Replace(g, "keep_daily: 7", "keep_dayly: 7"), "policies[0].retention.keep_dayly: unknown field"},
      {Replace(g, "initial_backoff: 1m", "initial_backoff: soon"), "policies[0].retry.initial_backoff: 'soon' is not a positive duration"},
      {Replace(g, "max_backoff: 10m", "max_backoff: 10s"), "policies[0].retry.max_backoff: is shorter than initial_backoff"},
      {Replace(g, "jitter: 0.1", "jitter: 2"), "policies[0].retry.jitter: must be a fraction"},
      {Replace(g, "max_attempts: 3", "max_attempts: 0"), "policies[0].retry.max_attempts: 0 is outside"},
      {Replace(g, "prune_after_backup: true", "prune_after_backup: yes please"), "policies[0].prune_after_backup: must be true or false"},
      {Replace(Replace(g, "keep_last: 3", "keep_last: 0"), "keep_daily: 7", "keep_daily: 0"), "policies[0].prune_after_backup: is true but retention keeps nothing"},
      {g + "  - name: hourly\n    host_group: web\n    device_set: system\n    schedule: {cron: \"0 * * * *\"}\n", "policies[1].name: 'hourly' names an earlier policy too"},
      {g + "  - name: nosched\n    host_group: web\n    device_set: system\n", "policies[1].schedule: missing"},
  };
  for (const Case& c : cases) {
    auto set = ParsePolicyDocument(c.doc);
    ASSERT_FALSE(set.ok()) << c.want;
    EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(set.status().message(), HasSubstr(c.want));
  }
}

TEST(PolicyDocument, GlobMatch) {
  EXPECT_TRUE(GlobMatch("*", "anything"));
  EXPECT_TRUE(GlobMatch("web-?", "web-1"));
  EXPECT_FALSE(GlobMatch("web-?", "web-12"));
  EXPECT_TRUE(GlobMatch("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "aXXbYY"));
}

// --- scheduler ----------------------------------------------------------------

// Fake backup jobs: started ones are recorded; the test ends them.
struct FakeJobs {
  std::map<std::string, v1::Job> jobs;
  std::vector<std::pair<std::string, absl::Time>> starts;  // host, when
  std::set<std::string> busy_hosts;
  FakeClock* clock;
  int next = 1;

  Scheduler::StartBackupFn StartFn() {
    return [this](const std::string& host, const std::vector<std::string>& devices)
               -> absl::StatusOr<v1::Job> {
      if (busy_hosts.count(host)) return absl::FailedPreconditionError("busy");
      EXPECT_FALSE(devices.empty());
      v1::Job j;
      j.set_id(absl::StrCat(next++));
      j.set_host(host);
      j.set_state(v1::JOB_STATE_RUNNING);
      jobs[j.id()] = j;
      starts.push_back({host, clock->Now()});
      return j;
    };
  }
  Scheduler::GetJobFn GetFn() {
    return [this](const std::string& id) -> absl::StatusOr<v1::Job> {
      auto it = jobs.find(id);
      if (it == jobs.end()) return absl::NotFoundError(id);
      return it->second;
    };
  }
  int Running() {
    int n = 0;
    for (auto& [id, j] : jobs) n += j.state() == v1::JOB_STATE_RUNNING;
    return n;
  }
  void EndAll(v1::JobState s) {
    for (auto& [id, j] : jobs) {
      if (j.state() == v1::JOB_STATE_RUNNING) {
        j.set_state(s);
        if (s == v1::JOB_STATE_FAILED) j.set_error("agent unreachable");
      }
    }
  }
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = catalog::SqliteCatalog::Open(dir_.path() + "/catalog.db");
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = std::move(*c);
    fake_.clock = &clock_;
  }
  void AddHosts(int n, const std::string& prefix = "h") {
    for (int i = 0; i < n; ++i) {
      v1::Host h;
      h.set_name(absl::StrCat(prefix, i));
      h.set_agent_address("127.0.0.1:1");
      ASSERT_TRUE(catalog_->CreateHost(h).ok());
    }
  }
  std::unique_ptr<Scheduler> Make() {
    SchedulerOptions o;
    o.seed = 42;
    return std::make_unique<Scheduler>(catalog_.get(), &clock_, fake_.StartFn(), fake_.GetFn(), o);
  }
  static std::string Doc(const std::string& cron, int global, int per_host,
                         const std::string& retry = "") {
    return absl::StrCat(R"(
version: 1
concurrency: {global: )", global, ", per_host: ", per_host, R"(}
host_groups:
  all: {match: ["*"]}
device_sets:
  sys: {devices: [/dev/vda]}
policies:
  - name: p
    host_group: all
    device_set: sys
    schedule: {cron: ")", cron, R"("}
)", retry);
  }
  catalog::ScheduleState State(Scheduler& s, const std::string& host) {
    for (const auto& st : s.Targets()) {
      if (st.host == host) return st;
    }
    ADD_FAILURE() << "no target for " << host;
    return {};
  }

  testing::TempDir dir_;
  std::unique_ptr<catalog::SqliteCatalog> catalog_;
  FakeClock clock_{At(2026, 1, 1, 10, 30)};
  FakeJobs fake_;
};

TEST_F(SchedulerTest, RunsEachSlotAndRecordsLag) {
  AddHosts(1);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 4, 1), false).ok());
  s->Tick();
  EXPECT_TRUE(fake_.starts.empty());
  EXPECT_EQ(State(*s, "h0").next_slot_us, absl::ToUnixMicros(At(2026, 1, 1, 11, 0)));
  clock_.Set(At(2026, 1, 1, 11, 0) + absl::Seconds(3));
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 1u);
  auto st = State(*s, "h0");
  EXPECT_TRUE(st.running);
  EXPECT_EQ(st.last_lag_ms, 3000);
  EXPECT_EQ(st.missed_slots, 0);
  s->Tick();  // running: no second start
  EXPECT_EQ(fake_.starts.size(), 1u);
  fake_.EndAll(v1::JOB_STATE_SUCCEEDED);
  s->Tick();
  EXPECT_EQ(State(*s, "h0").last_result, "succeeded");
  clock_.Set(At(2026, 1, 1, 12, 0));
  s->Tick();
  EXPECT_EQ(fake_.starts.size(), 2u);
}

TEST_F(SchedulerTest, MissedSlotsAfterDowntimeRunOnce) {
  AddHosts(1);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 4, 1), false).ok());
  s->Tick();
  clock_.Set(At(2026, 1, 1, 15, 20));  // 11:00 .. 15:00 passed unrun
  s->Tick();
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 1u);
  auto st = State(*s, "h0");
  EXPECT_EQ(st.missed_slots, 4);
  EXPECT_EQ(st.last_slot_us, absl::ToUnixMicros(At(2026, 1, 1, 15, 0)));
  EXPECT_EQ(st.next_slot_us, absl::ToUnixMicros(At(2026, 1, 1, 16, 0)));
  EXPECT_EQ(st.last_lag_ms, 20 * 60 * 1000);
}

TEST_F(SchedulerTest, GlobalAndPerHostLimits) {
  AddHosts(10);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 3, 1), false).ok());
  s->Tick();
  clock_.Set(At(2026, 1, 1, 11, 0));
  s->Tick();
  EXPECT_EQ(fake_.Running(), 3);
  s->Tick();
  EXPECT_EQ(fake_.Running(), 3);  // limit holds
  fake_.EndAll(v1::JOB_STATE_SUCCEEDED);
  s->Tick();
  EXPECT_EQ(fake_.Running(), 3);
  EXPECT_EQ(fake_.starts.size(), 6u);
  // Per host: two policies on one host, per_host 1: one at a time.
  std::string two = Doc("0 * * * *", 10, 1) + R"(
  - name: q
    host_group: all
    device_set: sys
    schedule: {cron: "0 * * * *"}
)";
  auto s2 = std::make_unique<Scheduler>(catalog_.get(), &clock_, fake_.StartFn(), fake_.GetFn());
  fake_.EndAll(v1::JOB_STATE_SUCCEEDED);
  s.reset();
  ASSERT_TRUE(s2->Apply(two, false).ok());
  s2->Tick();
  clock_.Set(At(2026, 1, 1, 12, 0));
  fake_.starts.clear();
  s2->Tick();
  std::map<std::string, int> per_host;
  for (auto& [id, j] : fake_.jobs) per_host[j.host()] += j.state() == v1::JOB_STATE_RUNNING;
  for (auto& [h, n] : per_host) EXPECT_LE(n, 1) << h;
  EXPECT_EQ(fake_.Running(), 10);
}

TEST_F(SchedulerTest, RetriesWithBackoffThenGivesUp) {
  AddHosts(1);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 0 * * *", 4, 1,
                           "    retry: {max_attempts: 3, initial_backoff: 1m, max_backoff: 1h, "
                           "jitter: 0.5}\n"),
                       false)
                  .ok());
  s->Tick();
  clock_.Set(At(2026, 1, 2, 0, 0));
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 1u);
  fake_.EndAll(v1::JOB_STATE_FAILED);
  s->Tick();
  auto st = State(*s, "h0");
  EXPECT_THAT(st.last_result, HasSubstr("attempt 1 of 3"));
  EXPECT_THAT(st.last_result, HasSubstr("agent unreachable"));
  absl::Duration wait1 = absl::FromUnixMicros(st.retry_at_us) - clock_.Now();
  EXPECT_GE(wait1, absl::Seconds(30));  // 1m +- 50%
  EXPECT_LE(wait1, absl::Seconds(90));
  clock_.Advance(wait1 - absl::Seconds(1));
  s->Tick();
  EXPECT_EQ(fake_.starts.size(), 1u);  // not before its time
  clock_.Advance(absl::Seconds(1));
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 2u);
  fake_.EndAll(v1::JOB_STATE_FAILED);
  s->Tick();
  st = State(*s, "h0");
  absl::Duration wait2 = absl::FromUnixMicros(st.retry_at_us) - clock_.Now();
  EXPECT_GE(wait2, absl::Seconds(60));  // 2m +- 50%
  EXPECT_LE(wait2, absl::Seconds(180));
  clock_.Advance(wait2);
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 3u);
  EXPECT_EQ(State(*s, "h0").attempt, 3);
  fake_.EndAll(v1::JOB_STATE_FAILED);
  s->Tick();
  st = State(*s, "h0");
  EXPECT_THAT(st.last_result, HasSubstr("gave up after 3 attempts"));
  EXPECT_EQ(st.retry_at_us, 0);
  clock_.Advance(absl::Hours(1));
  s->Tick();
  EXPECT_EQ(fake_.starts.size(), 3u);
  clock_.Set(At(2026, 1, 3, 0, 0));  // the next slot starts afresh
  s->Tick();
  EXPECT_EQ(fake_.starts.size(), 4u);
  EXPECT_EQ(State(*s, "h0").attempt, 1);
}

TEST_F(SchedulerTest, BusyHostStaysDue) {
  AddHosts(1);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 4, 1), false).ok());
  s->Tick();
  fake_.busy_hosts.insert("h0");
  clock_.Set(At(2026, 1, 1, 11, 0));
  s->Tick();
  EXPECT_TRUE(fake_.starts.empty());
  fake_.busy_hosts.clear();
  clock_.Advance(absl::Minutes(2));
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 1u);
  EXPECT_EQ(State(*s, "h0").last_lag_ms, 120000);
}

TEST_F(SchedulerTest, RestartNeitherLosesNorRepeatsRuns) {
  AddHosts(2);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 4, 1), false).ok());
  s->Tick();
  clock_.Set(At(2026, 1, 1, 11, 0));
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 2u);
  fake_.EndAll(v1::JOB_STATE_SUCCEEDED);
  s->Tick();
  s.reset();  // the server stops
  // Restarted within the same hour: the 11:00 runs are not repeated.
  auto s2 = Make();
  ASSERT_TRUE(s2->LoadStored().ok());
  clock_.Advance(absl::Minutes(10));
  s2->Tick();
  EXPECT_EQ(fake_.starts.size(), 2u);
  // Down over 12:00 and 13:00: one run each on restart, then 14:00.
  s2.reset();
  clock_.Set(At(2026, 1, 1, 13, 40));
  auto s3 = Make();
  ASSERT_TRUE(s3->LoadStored().ok());
  s3->Tick();
  EXPECT_EQ(fake_.starts.size(), 4u);
  EXPECT_EQ(State(*s3, "h0").missed_slots, 1);
  // A job that was running when the server stopped ends failed (the catalog
  // marks it so at start): the restarted scheduler retries it.
  fake_.EndAll(v1::JOB_STATE_FAILED);
  s3.reset();
  auto s4 = Make();
  ASSERT_TRUE(s4->LoadStored().ok());
  s4->Tick();
  auto st = State(*s4, "h0");
  EXPECT_THAT(st.last_result, HasSubstr("attempt 1 of 3"));
  EXPECT_NE(st.retry_at_us, 0);
}

TEST_F(SchedulerTest, BadApplyChangesNothing) {
  AddHosts(1);
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 4, 1), false).ok());
  auto bad = s->Apply(Doc("0 * * *", 4, 1), false);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("policies[0].schedule.cron"));
  EXPECT_EQ(s->Policies()->policies[0].schedule.text(), "0 * * * *");
  auto stored = catalog_->LoadPolicyDocument();
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_THAT(**stored, HasSubstr("\"0 * * * *\""));
  // dry run validates without applying
  ASSERT_TRUE(s->Apply(Doc("*/5 * * * *", 4, 1), true).ok());
  EXPECT_EQ(s->Policies()->policies[0].schedule.text(), "0 * * * *");
}



// The scheduler's metrics: the lag of the last due start, and each
// host/device's age limit under its policy (hourly: 1 h gap + retries
// 5m*1.2 + 10m*1.2 + 1 h for the run = 2 h 18 min).
TEST_F(SchedulerTest, ExportsLagAndMaxAge) {
  AddHosts(1, "metrics-host");
  auto s = Make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", 4, 1), false).ok());
  s->Tick();
  clock_.Set(At(2026, 1, 1, 11, 0) + absl::Seconds(7));
  s->Tick();
  ASSERT_EQ(fake_.starts.size(), 1u);
  const std::string text = metrics::TextExposition();
  EXPECT_THAT(text, HasSubstr("\nblkfleet_server_scheduler_lag_seconds 7\n"));
  EXPECT_THAT(text, HasSubstr("\nblkfleet_backup_max_age_seconds{device=\"/dev/vda\","
                              "host=\"metrics-host0\"} 8280\n"));
  // A host that leaves the fleet takes its limit with it.
  ASSERT_TRUE(catalog_->DeleteHost("metrics-host0").ok());
  s->Tick();
  EXPECT_THAT(metrics::TextExposition(), Not(HasSubstr("host=\"metrics-host0\"} 8280")));
  auto daily = ParsePolicyDocument(Doc("0 3 * * *", 4, 1));
  ASSERT_TRUE(daily.ok());
  EXPECT_EQ(MaxBackupAge(daily->policies[0], At(2026, 1, 1, 0, 0)),
            absl::Hours(25) + absl::Minutes(18));
}

// --- fleet simulation -------------------------------------------------------

// Backups that take a simulated time: a job started at t ends (succeeded) at
// t + its duration, 1 to 6 minutes drawn from a fixed seed.
struct SimFleet {
  struct Run {
    std::string host;
    absl::Time start, end;
  };
  FakeClock* clock;
  std::mt19937_64 rng{7};
  std::vector<Run> runs;  // index = job id - 1
  std::vector<size_t> active;  // runs not seen ended by Running() yet

  Scheduler::StartBackupFn StartFn() {
    return [this](const std::string& host, const std::vector<std::string>&)
               -> absl::StatusOr<v1::Job> {
      std::uniform_int_distribution<int> secs(60, 360);
      runs.push_back({host, clock->Now(), clock->Now() + absl::Seconds(secs(rng))});
      active.push_back(runs.size() - 1);
      v1::Job j;
      j.set_id(absl::StrCat(runs.size()));
      j.set_host(host);
      j.set_state(v1::JOB_STATE_RUNNING);
      return j;
    };
  }
  Scheduler::GetJobFn GetFn() {
    return [this](const std::string& id) -> absl::StatusOr<v1::Job> {
      size_t i = 0;
      if (!absl::SimpleAtoi(id, &i) || i == 0 || i > runs.size()) return absl::NotFoundError(id);
      v1::Job j;
      j.set_id(id);
      j.set_host(runs[i - 1].host);
      j.set_state(clock->Now() >= runs[i - 1].end ? v1::JOB_STATE_SUCCEEDED
                                                  : v1::JOB_STATE_RUNNING);
      return j;
    };
  }
  // Jobs running now, in total and the most of one host.
  std::pair<int, int> Running() {
    std::erase_if(active, [this](size_t i) { return clock->Now() >= runs[i].end; });
    std::map<std::string, int> by_host;
    int most = 0;
    for (size_t i : active) most = std::max(most, ++by_host[runs[i].host]);
    return {static_cast<int>(active.size()), most};
  }
};

// One server's scheduler over 1,000 hosts with hourly backups for 24
// simulated hours (a pass every simulated minute), then 5 hours down, then 3 more hours:
// every host runs exactly once per hourly slot, the global and per-host
// limits hold at every pass, the 5 slots missed while down run once per host.
TEST_F(SchedulerTest, FleetSimulation1000Hosts) {
  constexpr int kHosts = 1000;
  constexpr int kGlobal = 250;
  const absl::Duration kPass = absl::Minutes(1);
  const absl::Duration kMaxLag = absl::Minutes(20);
  AddHosts(kHosts);
  SimFleet fleet;
  fleet.clock = &clock_;
  const absl::Time t0 = At(2026, 1, 1, 10, 30);
  clock_.Set(t0);
  SchedulerOptions o;
  o.seed = 42;
  auto make = [&] {
    return std::make_unique<Scheduler>(catalog_.get(), &clock_, fleet.StartFn(), fleet.GetFn(), o);
  };
  auto s = make();
  ASSERT_TRUE(s->Apply(Doc("0 * * * *", kGlobal, 1), false).ok());
  const absl::Time wall0 = absl::Now();
  int passes = 0, max_running = 0;
  auto run_until = [&](Scheduler& sched, absl::Time until) {
    for (; clock_.Now() < until; clock_.Advance(kPass)) {
      sched.Tick();
      ++passes;
      auto [total, most] = fleet.Running();
      ASSERT_LE(total, kGlobal) << clock_.Now();
      ASSERT_LE(most, 1) << clock_.Now();
      max_running = std::max(max_running, total);
    }
  };
  // Up for 24 slots (11:00 .. 10:00 next day), stopping at 10:50 with no
  // job running.
  const absl::Time down = At(2026, 1, 2, 10, 50);
  run_until(*s, down);
  ASSERT_EQ(fleet.Running().first, 0);
  s.reset();
  // Down over 11:00 .. 15:00; back at 15:10, up to 18:00 (slots 16, 17 run).
  const absl::Time up = At(2026, 1, 2, 15, 10);
  clock_.Set(up);
  s = make();
  ASSERT_TRUE(s->LoadStored().ok());
  run_until(*s, At(2026, 1, 2, 18, 0));
  const double wall = absl::ToDoubleSeconds(absl::Now() - wall0);

  // Runs per (host, slot): the slot of a run is the hour it started in (the
  // lag bound below, under an hour, makes that exact); after the downtime
  // the fold runs for the 15:00 slot.
  std::map<std::string, std::map<absl::Time, int>> per_host;
  absl::Duration max_lag = absl::ZeroDuration();
  for (const auto& r : fleet.runs) {
    absl::Time slot = absl::FromCivil(
        absl::CivilHour(absl::ToCivilHour(r.start, absl::UTCTimeZone())), absl::UTCTimeZone());
    absl::Duration lag = r.start - slot;
    if (slot == At(2026, 1, 2, 15, 0)) lag = r.start - up;  // waiting for the server
    max_lag = std::max(max_lag, lag);
    ++per_host[r.host][slot];
  }
  std::vector<absl::Time> want;
  for (absl::Time t = At(2026, 1, 1, 11, 0); t <= At(2026, 1, 2, 10, 0); t += absl::Hours(1)) {
    want.push_back(t);
  }
  for (int h = 15; h <= 17; ++h) want.push_back(At(2026, 1, 2, h, 0));
  ASSERT_EQ(per_host.size(), static_cast<size_t>(kHosts));
  for (const auto& [host, slots] : per_host) {
    ASSERT_EQ(slots.size(), want.size()) << host;
    for (const absl::Time t : want) {
      auto it = slots.find(t);
      ASSERT_TRUE(it != slots.end()) << host << " missed " << t;
      ASSERT_EQ(it->second, 1) << host << " ran " << it->second << " times for " << t;
    }
  }
  EXPECT_EQ(fleet.runs.size(), static_cast<size_t>(kHosts) * want.size());
  EXPECT_LE(max_lag, kMaxLag);
  // The restarted server folded 11:00 .. 15:00 into one run for 15:00, then
  // ran 16:00 and 17:00 as usual.
  for (const auto& st : s->Targets()) {
    EXPECT_EQ(st.last_slot_us, absl::ToUnixMicros(At(2026, 1, 2, 17, 0))) << st.host;
  }
  std::printf("fleet_sim: %d hosts, 24 h + 5 h down + 3 h, %zu runs, %d passes, max running %d, "
              "max lag %.0f s, wall %.1f s\n",
              kHosts, fleet.runs.size(), passes, max_running, absl::ToDoubleSeconds(max_lag),
              wall);
}

}  // namespace
}  // namespace blkfleet::server
