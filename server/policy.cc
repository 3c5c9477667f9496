// SPDX-License-Identifier: Apache-2.0
#include "server/policy.h"

#include <set>

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/validation.h"

namespace blkfleet::server {
namespace {

absl::Status Bad(const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
}

// Rejects keys of `node` not in `allowed` (a typo must not silently keep a
// default).
absl::Status OnlyKeys(const YAML::Node& node, const std::string& path,
                      const std::set<std::string>& allowed) {
  if (!node.IsMap()) return Bad(path.empty() ? "document" : path, "must be a mapping");
  for (const auto& kv : node) {
    std::string key = kv.first.Scalar();
    if (!allowed.count(key)) {
      return Bad(path.empty() ? key : absl::StrCat(path, ".", key),
                 absl::StrCat("unknown field (expected one of: ", absl::StrJoin(allowed, ", "),
                              ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Str(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar() || n.Scalar().empty()) return Bad(path, "must be a non-empty string");
  return n.Scalar();
}

absl::StatusOr<int> Int(const YAML::Node& n, const std::string& path, int lo, int hi) {
  if (!n.IsScalar()) return Bad(path, "must be a number");
  const std::string& s = n.Scalar();
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(s, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size()) return Bad(path, absl::StrCat("'", s, "' is not a whole number"));
  if (v < lo || v > hi) return Bad(path, absl::StrCat(v, " is outside ", lo, "-", hi));
  return static_cast<int>(v);
}

absl::StatusOr<absl::Duration> Dur(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) return Bad(path, "must be a duration (e.g. 30s, 5m, 1h)");
  absl::Duration d;
  if (!absl::ParseDuration(n.Scalar(), &d) || d <= absl::ZeroDuration()) {
    return Bad(path, absl::StrCat("'", n.Scalar(), "' is not a positive duration (e.g. 30s, 5m, 1h)"));
  }
  return d;
}

absl::StatusOr<std::vector<std::string>> StrList(const YAML::Node& n, const std::string& path) {
  if (!n.IsSequence()) return Bad(path, "must be a list of strings");
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = absl::StrCat(path, "[", i, "]");
    auto s = Str(n[i], p);
    if (!s.ok()) return s.status();
    if (!seen.insert(*s).second) return Bad(p, absl::StrCat("'", *s, "' is listed twice"));
    out.push_back(*s);
  }
  return out;
}

#define ASSIGN_OR_RETURN_POLICY(lhs, expr) \
  do {                                     \
    auto r_ = (expr);                      \
    if (!r_.ok()) return r_.status();      \
    lhs = *r_;                             \
  } while (0)

absl::StatusOr<Retention> ParseRetention(const YAML::Node& n, const std::string& path) {
  if (auto s = OnlyKeys(n, path, {"keep_last", "keep_hourly", "keep_daily", "keep_weekly",
                                   "keep_monthly", "keep_yearly"});
      !s.ok()) {
    return s;
  }
  Retention r;
  auto field = [&](const char* key, int* out) -> absl::Status {
    if (!n[key]) return absl::OkStatus();
    auto v = Int(n[key], absl::StrCat(path, ".", key), 0, 100000);
    if (!v.ok()) return v.status();
    *out = *v;
    return absl::OkStatus();
  };
  for (auto [k, p] : std::initializer_list<std::pair<const char*, int*>>{
           {"keep_last", &r.keep_last},       {"keep_hourly", &r.keep_hourly},
           {"keep_daily", &r.keep_daily},     {"keep_weekly", &r.keep_weekly},
           {"keep_monthly", &r.keep_monthly}, {"keep_yearly", &r.keep_yearly}}) {
    if (auto s = field(k, p); !s.ok()) return s;
  }
  return r;
}

absl::StatusOr<RetryPolicy> ParseRetry(const YAML::Node& n, const std::string& path) {
  if (auto s = OnlyKeys(n, path, {"max_attempts", "initial_backoff", "max_backoff", "jitter"});
      !s.ok()) {
    return s;
  }
  RetryPolicy r;
  if (n["max_attempts"]) ASSIGN_OR_RETURN_POLICY(r.max_attempts, Int(n["max_attempts"], path + ".max_attempts", 1, 100));
  if (n["initial_backoff"]) ASSIGN_OR_RETURN_POLICY(r.initial_backoff, Dur(n["initial_backoff"], path + ".initial_backoff"));
  if (n["max_backoff"]) ASSIGN_OR_RETURN_POLICY(r.max_backoff, Dur(n["max_backoff"], path + ".max_backoff"));
  if (r.max_backoff < r.initial_backoff) {
    return Bad(path + ".max_backoff", "is shorter than initial_backoff");
  }
  if (n["jitter"]) {
    const YAML::Node& j = n["jitter"];
    double v = -1;
    try {
      v = j.as<double>();
    } catch (...) {
    }
    if (!j.IsScalar() || v < 0 || v > 1) {
      return Bad(path + ".jitter", "must be a fraction from 0 to 1 (e.g. 0.2)");
    }
    r.jitter = v;
  }
  return r;
}

}  // namespace

bool HostGroup::Contains(const std::string& host) const {
  for (const auto& h : hosts) {
    if (h == host) return true;
  }
  for (const auto& m : match) {
    if (GlobMatch(m, host)) return true;
  }
  return false;
}

bool GlobMatch(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi;
      ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

absl::StatusOr<PolicySet> ParsePolicyDocument(const std::string& yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("document: not valid YAML: line ",
                                                   e.mark.line + 1, ", column ",
                                                   e.mark.column + 1, ": ", e.msg));
  }
  PolicySet set;
  set.document = yaml;
  if (auto s = OnlyKeys(root, "", {"version", "concurrency", "host_groups", "device_sets",
                                    "policies"});
      !s.ok()) {
    return s;
  }
  if (!root["version"]) return Bad("version", "missing (this server reads version 1)");
  {
    auto v = Int(root["version"], "version", 1, 1);
    if (!v.ok()) return v.status();
  }
  if (const YAML::Node& c = root["concurrency"]) {
    if (auto s = OnlyKeys(c, "concurrency", {"global", "per_host"}); !s.ok()) return s;
    if (c["global"]) ASSIGN_OR_RETURN_POLICY(set.concurrency.global, Int(c["global"], "concurrency.global", 1, 100000));
    if (c["per_host"]) ASSIGN_OR_RETURN_POLICY(set.concurrency.per_host, Int(c["per_host"], "concurrency.per_host", 1, 1000));
  }
  if (const YAML::Node& g = root["host_groups"]) {
    if (!g.IsMap()) return Bad("host_groups", "must be a mapping of group name to group");
    for (const auto& kv : g) {
      HostGroup hg;
      hg.name = kv.first.Scalar();
      std::string path = absl::StrCat("host_groups.", hg.name);
      if (auto s = ValidateHostName(hg.name, path); !s.ok()) return Bad(path, "group names take letters, digits, '.', '-', '_'");
      if (auto s = OnlyKeys(kv.second, path, {"hosts", "match"}); !s.ok()) return s;
      if (kv.second["hosts"]) {
        ASSIGN_OR_RETURN_POLICY(hg.hosts, StrList(kv.second["hosts"], path + ".hosts"));
        for (size_t i = 0; i < hg.hosts.size(); ++i) {
          std::string p = absl::StrCat(path, ".hosts[", i, "]");
          if (auto s = ValidateHostName(hg.hosts[i], p); !s.ok()) return s;
        }
      }
      if (kv.second["match"]) ASSIGN_OR_RETURN_POLICY(hg.match, StrList(kv.second["match"], path + ".match"));
      if (hg.hosts.empty() && hg.match.empty()) {
        return Bad(path, "names no hosts (give hosts or match)");
      }
      set.host_groups[hg.name] = hg;
    }
  }
  if (const YAML::Node& d = root["device_sets"]) {
    if (!d.IsMap()) return Bad("device_sets", "must be a mapping of set name to set");
    for (const auto& kv : d) {
      DeviceSet ds;
      ds.name = kv.first.Scalar();
      std::string path = absl::StrCat("device_sets.", ds.name);
      if (auto s = OnlyKeys(kv.second, path, {"devices"}); !s.ok()) return s;
      if (!kv.second["devices"]) return Bad(path + ".devices", "missing");
      ASSIGN_OR_RETURN_POLICY(ds.devices, StrList(kv.second["devices"], path + ".devices"));
      if (ds.devices.empty()) return Bad(path + ".devices", "is empty");
      set.device_sets[ds.name] = ds;
    }
  }
  const YAML::Node& pl = root["policies"];
  if (pl && !pl.IsSequence()) return Bad("policies", "must be a list");
  std::set<std::string> names;
  for (size_t i = 0; pl && i < pl.size(); ++i) {
    const YAML::Node& n = pl[i];
    std::string path = absl::StrCat("policies[", i, "]");
    if (auto s = OnlyKeys(n, path, {"name", "host_group", "device_set", "schedule", "retention",
                                     "prune_after_backup", "retry"});
        !s.ok()) {
      return s;
    }
    Policy p;
    if (!n["name"]) return Bad(path + ".name", "missing");
    ASSIGN_OR_RETURN_POLICY(p.name, Str(n["name"], path + ".name"));
    if (auto s = ValidateHostName(p.name, path + ".name"); !s.ok()) {
      return Bad(path + ".name", "takes letters, digits, '.', '-', '_'");
    }
    if (!names.insert(p.name).second) {
      return Bad(path + ".name", absl::StrCat("'", p.name, "' names an earlier policy too"));
    }
    for (auto [key, out, known] :
         std::initializer_list<std::tuple<const char*, std::string*, bool>>{
             {"host_group", &p.host_group, false}, {"device_set", &p.device_set, true}}) {
      std::string fp = absl::StrCat(path, ".", key);
      if (!n[key]) return Bad(fp, "missing");
      ASSIGN_OR_RETURN_POLICY(*out, Str(n[key], fp));
      bool exists = known ? set.device_sets.count(*out) > 0 : set.host_groups.count(*out) > 0;
      if (!exists) {
        return Bad(fp, absl::StrCat("'", *out, "' is not defined under ",
                                    known ? "device_sets" : "host_groups"));
      }
    }
    const YAML::Node& sch = n["schedule"];
    if (!sch) return Bad(path + ".schedule", "missing");
    if (auto s = OnlyKeys(sch, path + ".schedule", {"cron", "time_zone"}); !s.ok()) return s;
    if (!sch["cron"]) return Bad(path + ".schedule.cron", "missing");
    std::string cron;
    ASSIGN_OR_RETURN_POLICY(cron, Str(sch["cron"], path + ".schedule.cron"));
    p.time_zone = "UTC";
    if (sch["time_zone"]) ASSIGN_OR_RETURN_POLICY(p.time_zone, Str(sch["time_zone"], path + ".schedule.time_zone"));
    absl::TimeZone tz;
    if (!absl::LoadTimeZone(p.time_zone, &tz)) {
      return Bad(path + ".schedule.time_zone",
                 absl::StrCat("'", p.time_zone, "' is not a known time zone (is tzdata installed?)"));
    }
    auto parsed = CronSchedule::Parse(cron, tz);
    if (!parsed.ok()) return Bad(path + ".schedule.cron", std::string(parsed.status().message()));
    p.schedule = *parsed;
    if (n["retention"]) ASSIGN_OR_RETURN_POLICY(p.retention, ParseRetention(n["retention"], path + ".retention"));
    if (n["retry"]) ASSIGN_OR_RETURN_POLICY(p.retry, ParseRetry(n["retry"], path + ".retry"));
    if (const YAML::Node& pab = n["prune_after_backup"]) {
      if (!pab.IsScalar() || (pab.Scalar() != "true" && pab.Scalar() != "false")) {
        return Bad(path + ".prune_after_backup", "must be true or false");
      }
      p.prune_after_backup = pab.Scalar() == "true";
      if (p.prune_after_backup && p.retention.Empty()) {
        return Bad(path + ".prune_after_backup", "is true but retention keeps nothing: set a keep_* rule");
      }
    }
    set.policies.push_back(std::move(p));
  }
  return set;
}

}  // namespace blkfleet::server
