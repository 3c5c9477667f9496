// SPDX-License-Identifier: Apache-2.0
#include "server/cron.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"

namespace blkfleet::server {
namespace {

struct FieldSpec {
  const char* name;
  int lo;
  int hi;
};

constexpr FieldSpec kFields[5] = {
    {"minute", 0, 59}, {"hour", 0, 23}, {"day-of-month", 1, 31}, {"month", 1, 12},
    {"day-of-week", 0, 7}};

absl::Status Bad(const FieldSpec& f, const std::string& text, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("cron ", f.name, " field '", text, "': ", why));
}

absl::StatusOr<int> Number(const FieldSpec& f, const std::string& field, absl::string_view s) {
  int v = 0;
  if (s.empty() || !absl::SimpleAtoi(s, &v) || s.find_first_not_of("0123456789") != s.npos) {
    return Bad(f, field, absl::StrCat("'", s, "' is not a number"));
  }
  if (v < f.lo || v > f.hi) {
    return Bad(f, field, absl::StrCat(v, " is outside ", f.lo, "-", f.hi));
  }
  return v;
}

// Sets the values of one field in `bits` (index = value). Returns whether the
// field was `*` (unrestricted).
absl::StatusOr<bool> ParseField(const FieldSpec& f, const std::string& field,
                                std::vector<bool>& bits) {
  bits.assign(f.hi + 1, false);
  if (field.empty()) return Bad(f, field, "empty");
  bool star = false;
  for (absl::string_view item : absl::StrSplit(field, ',')) {
    if (item.empty()) return Bad(f, field, "empty list item");
    int step = 1;
    absl::string_view range = item;
    if (size_t slash = item.find('/'); slash != item.npos) {
      range = item.substr(0, slash);
      absl::string_view st = item.substr(slash + 1);
      if (!absl::SimpleAtoi(st, &step) || st.find_first_not_of("0123456789") != st.npos ||
          step <= 0) {
        return Bad(f, field, absl::StrCat("step '", st, "' is not a positive number"));
      }
    }
    int lo = f.lo, hi = f.hi;
    if (range == "*") {
      if (item == "*") star = true;
      if (f.hi == 7) hi = 6;  // day-of-week `*`: 0-6
    } else if (size_t dash = range.find('-'); dash != range.npos) {
      auto a = Number(f, field, range.substr(0, dash));
      if (!a.ok()) return a.status();
      auto b = Number(f, field, range.substr(dash + 1));
      if (!b.ok()) return b.status();
      if (*a > *b) return Bad(f, field, absl::StrCat("range ", *a, "-", *b, " is backwards"));
      lo = *a;
      hi = *b;
    } else {
      auto a = Number(f, field, range);
      if (!a.ok()) return a.status();
      lo = *a;
      hi = item.find('/') != item.npos ? f.hi : *a;  // `5/15`: from 5 on
    }
    for (int v = lo; v <= hi; v += step) bits[v] = true;
  }
  return star;
}

}  // namespace

absl::StatusOr<CronSchedule> CronSchedule::Parse(const std::string& expr, absl::TimeZone tz) {
  std::vector<std::string> parts = absl::StrSplit(expr, ' ', absl::SkipWhitespace());
  if (parts.size() != 5) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cron '", expr, "' has ", parts.size(),
        " fields; want 5 (minute hour day-of-month month day-of-week)"));
  }
  CronSchedule c;
  c.text_ = expr;
  c.tz_ = tz;
  std::vector<bool> bits;
  for (int i = 0; i < 5; ++i) {
    auto star = ParseField(kFields[i], parts[i], bits);
    if (!star.ok()) return star.status();
    for (int v = 0; v < static_cast<int>(bits.size()); ++v) {
      if (!bits[v]) continue;
      switch (i) {
        case 0: c.minutes_.set(v); break;
        case 1: c.hours_.set(v); break;
        case 2: c.mdays_.set(v); break;
        case 3: c.months_.set(v); break;
        case 4: c.wdays_.set(v % 7); break;
      }
    }
    if (i == 2) c.mday_any_ = *star;
    if (i == 4) c.wday_any_ = *star;
  }
  return c;
}

bool CronSchedule::DayMatches(const absl::CivilDay& d) const {
  int wd = 0;
  switch (absl::GetWeekday(d)) {
    case absl::Weekday::sunday: wd = 0; break;
    case absl::Weekday::monday: wd = 1; break;
    case absl::Weekday::tuesday: wd = 2; break;
    case absl::Weekday::wednesday: wd = 3; break;
    case absl::Weekday::thursday: wd = 4; break;
    case absl::Weekday::friday: wd = 5; break;
    case absl::Weekday::saturday: wd = 6; break;
  }
  bool md = mdays_.test(d.day());
  bool w = wdays_.test(wd);
  if (mday_any_ && wday_any_) return true;
  if (mday_any_) return w;
  if (wday_any_) return md;
  return md || w;
}

absl::Time CronSchedule::Next(absl::Time t) const {
  absl::CivilMinute m = absl::ToCivilMinute(t, tz_) + 1;
  const absl::CivilMinute limit = m + 60 * 24 * 366 * 8;
  while (m < limit) {
    if (!months_.test(m.month())) {
      m = absl::CivilMinute(absl::CivilMonth(m) + 1);
      continue;
    }
    if (!DayMatches(absl::CivilDay(m))) {
      m = absl::CivilMinute(absl::CivilDay(m) + 1);
      continue;
    }
    if (!hours_.test(m.hour())) {
      m = absl::CivilMinute(absl::CivilHour(m) + 1);
      continue;
    }
    if (!minutes_.test(m.minute())) {
      m += 1;
      continue;
    }
    absl::TimeZone::TimeInfo ti = tz_.At(m);
    absl::Time at = ti.kind == absl::TimeZone::TimeInfo::SKIPPED ? ti.trans : ti.pre;
    // After a repeated hour, a civil time may map to an instant before `t`;
    // a skipped hour maps all its slots to the one transition instant.
    if (at > t) return at;
    m += 1;
  }
  return absl::InfiniteFuture();
}

}  // namespace blkfleet::server
