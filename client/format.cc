// SPDX-License-Identifier: Apache-2.0
#include "client/format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace blkfleet::cli {

namespace v1 = ::blkfleet::server::v1;

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

std::string HumanTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

std::string JobStateName(v1::JobState s) {
  std::string n = v1::JobState_Name(s);
  const std::string prefix = "JOB_STATE_";
  return n.rfind(prefix, 0) == 0 ? n.substr(prefix.size()) : n;
}

std::string JobKindName(v1::JobKind k) {
  std::string n = v1::JobKind_Name(k);
  const std::string prefix = "JOB_KIND_";
  n = n.rfind(prefix, 0) == 0 ? n.substr(prefix.size()) : n;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  return n;
}

std::string ProgressLine(const v1::Job& job) {
  const auto& p = job.progress();
  std::string line = p.phase().empty() ? JobStateName(job.state()) : p.phase();
  if (p.bytes_total() > 0) {
    int pct = static_cast<int>(100.0 * static_cast<double>(p.bytes_done()) /
                               static_cast<double>(p.bytes_total()));
    absl::StrAppend(&line, "  ", std::min(pct, 100), "%  ", HumanBytes(p.bytes_done()), " / ",
                    HumanBytes(p.bytes_total()));
  }
  if (p.chunks_total() > 0) {
    absl::StrAppend(&line, "  ", p.chunks_done(), "/", p.chunks_total(), " chunks");
  }
  if (job.attempts() > 0) absl::StrAppend(&line, "  (", job.attempts(), " resumes)");
  return line;
}

Table::Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void Table::AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

void Table::Print(std::ostream& out) const {
  std::vector<size_t> width;
  for (const auto& r : rows_) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows_) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string s;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(m, &s, opts).ok()) return "{}";
  nlohmann::json j = nlohmann::json::parse(s, nullptr, false);
  return j.is_discarded() ? s : j.dump(2);
}

std::string ModuleReadiness(const v1::Host& h) {
  if (!h.has_kernel() || h.kernel().running_release().empty()) return "-";
  const auto& k = h.kernel();
  if (!k.module_loaded()) return "NOT LOADED";
  std::vector<std::string> missing;
  for (const auto& ik : k.installed_kernels()) {
    if (!ik.module_present()) missing.push_back(ik.release());
  }
  if (!missing.empty()) return absl::StrCat("MISSING for ", absl::StrJoin(missing, ","));
  return "ok";
}

void PrintHosts(const v1::ListHostsResponse& r, std::ostream& out) {
  Table t({"NAME", "AGENT", "DEVICES", "AGENT VERSION", "BACKEND", "KERNEL", "MODULE", "CREATED"});
  for (const auto& h : r.hosts()) {
    t.AddRow({h.name(), h.agent_address(),
              h.default_devices().empty() ? "-" : absl::StrJoin(h.default_devices(), ","),
              h.agent_version().empty() ? "(no answer)" : h.agent_version(),
              h.backend().empty() ? "-" : h.backend(),
              h.kernel().running_release().empty() ? "-" : h.kernel().running_release(),
              ModuleReadiness(h), HumanTime(h.create_time())});
  }
  t.Print(out);
}

void PrintHost(const v1::Host& h, std::ostream& out) {
  out << "host " << h.name() << "\n";
  out << "  agent            " << h.agent_address();
  if (!h.agent_version().empty()) {
    out << " (blkfleet-agent " << h.agent_version() << ", backend " << h.backend() << ")";
  } else {
    out << " (no answer now)";
  }
  out << "\n  default devices  "
      << (h.default_devices().empty() ? "-" : absl::StrJoin(h.default_devices(), ", ")) << "\n";
  out << "  created          " << HumanTime(h.create_time()) << "\n";
  const auto& k = h.kernel();
  if (k.running_release().empty()) {
    out << "  kernel           - (no report from the agent yet)\n";
    return;
  }
  out << "  kernel           " << k.running_release() << " (reported "
      << HumanTime(h.kernel_report_time()) << ")\n";
  if (k.module_loaded()) {
    out << "  blksnap module   " << (k.module_version().empty() ? "-" : k.module_version())
        << ", interception " << (k.intercept_mode().empty() ? "unknown" : k.intercept_mode())
        << "\n";
  } else {
    out << "  blksnap module   NOT LOADED: " << k.module_error() << "\n";
  }
  out << "  readiness        " << ModuleReadiness(h) << "\n";
  if (k.modules_dir().empty()) {
    out << "  installed kernels: not looked for (sim backend without --modules-dir)\n";
    return;
  }
  out << "  installed kernels (" << k.modules_dir() << "):\n";
  if (k.installed_kernels().empty()) out << "    none found\n";
  Table t({"    KERNEL", "MODULE", "PATH", ""});
  for (const auto& ik : k.installed_kernels()) {
    std::vector<std::string> notes;
    if (ik.running()) notes.push_back("running");
    if (ik.default_boot()) notes.push_back("default boot");
    t.AddRow({"    " + ik.release(), ik.module_present() ? "yes" : "NO",
              ik.module_path().empty() ? "-" : ik.module_path(), absl::StrJoin(notes, ", ")});
  }
  if (!k.installed_kernels().empty()) t.Print(out);
}

void PrintBackups(const v1::ListBackupsResponse& r, std::ostream& out) {
  Table t({"ID", "HOST", "STARTED", "DURATION", "KIND", "DEVICES", "SIZE", "READ", "RECEIVED"});
  for (const auto& b : r.backups()) {
    uint64_t size = 0, read = 0, received = 0;
    std::vector<std::string> devs;
    bool full = false, incr = false;
    for (const auto& d : b.devices()) {
      size += d.size_bytes();
      read += d.bytes_read();
      received += d.bytes_received();
      devs.push_back(d.device());
      (d.kind() == v1::BACKUP_KIND_INCREMENTAL ? incr : full) = true;
    }
    int64_t secs = b.end_time().seconds() - b.start_time().seconds();
    t.AddRow({b.id(), b.host(), HumanTime(b.start_time()), absl::StrCat(secs, "s"),
              full && incr ? "mixed" : (incr ? "incremental" : "full"), absl::StrJoin(devs, ","),
              HumanBytes(size), HumanBytes(read), HumanBytes(received)});
  }
  t.Print(out);
}

void PrintJobs(const v1::ListJobsResponse& r, std::ostream& out) {
  Table t({"ID", "KIND", "STATE", "HOST", "CREATED", "PROGRESS", "RESULT"});
  for (const auto& j : r.jobs()) {
    std::string result = j.error();
    if (result.size() > 60) result = result.substr(0, 57) + "...";
    if (result.empty()) result = j.summary();
    if (result.size() > 60) result = result.substr(0, 57) + "...";
    if (result.empty() && !j.backup_id().empty()) result = "backup " + j.backup_id();
    std::string progress = "-";
    if (j.progress().bytes_total() > 0) {
      progress = absl::StrCat(100 * j.progress().bytes_done() / j.progress().bytes_total(), "%");
    }
    t.AddRow({j.id(), JobKindName(j.kind()), JobStateName(j.state()), j.host(),
              HumanTime(j.create_time()), progress, result.empty() ? "-" : result});
  }
  t.Print(out);
}

void PrintJob(const v1::Job& j, std::ostream& out) {
  out << "id:        " << j.id() << "\n"
      << "kind:      " << JobKindName(j.kind()) << "\n"
      << "state:     " << JobStateName(j.state()) << "\n"
      << "host:      " << j.host() << "\n"
      << "created:   " << HumanTime(j.create_time()) << "\n"
      << "started:   " << HumanTime(j.start_time()) << "\n"
      << "ended:     " << HumanTime(j.end_time()) << "\n"
      << "progress:  " << ProgressLine(j) << "\n";
  if (!j.backup_id().empty()) out << "backup:    " << j.backup_id() << "\n";
  if (j.attempts() > 0) out << "resumes:   " << j.attempts() << "\n";
  if (!j.summary().empty()) out << "summary:   " << j.summary() << "\n";
  if (!j.error().empty()) out << "error:     " << j.error() << "\n";
  if (j.has_prune_result()) PrintPruneResult(j.prune_result(), out);
}

void PrintBackup(const v1::Backup& b, std::ostream& out) {
  out << "id:        " << b.id() << "\n"
      << "host:      " << b.host() << "\n"
      << "state:     committed" << (b.protected_() ? ", protected" : "") << "\n"
      << "started:   " << HumanTime(b.start_time()) << "\n"
      << "ended:     " << HumanTime(b.end_time()) << "\n"
      << "snapshot:  " << (b.snapshot_id().empty() ? "-" : b.snapshot_id()) << "\n";
  Table t({"DEVICE", "KIND", "BASE", "SIZE", "CHUNK", "CHUNKS", "READ", "NEW", "BYTES READ",
           "RECEIVED", "CBT CHANGE"});
  for (const auto& d : b.devices()) {
    t.AddRow({d.device(), d.kind() == v1::BACKUP_KIND_INCREMENTAL ? "incremental" : "full",
              d.base_backup_id().empty() ? "-" : d.base_backup_id(), HumanBytes(d.size_bytes()),
              HumanBytes(d.chunk_size_bytes()), absl::StrCat(d.chunks_total()),
              absl::StrCat(d.chunks_read()), absl::StrCat(d.chunks_new()),
              HumanBytes(d.bytes_read()), HumanBytes(d.bytes_received()),
              absl::StrCat(d.cbt().change_number())});
  }
  t.Print(out);
}

void PrintPruneResult(const v1::PruneResult& r, std::ostream& out) {
  Table t({"BACKUP", "HOST", "STARTED", "DEVICES", "POLICY", "DECISION", "WHY"});
  for (const auto& d : r.decisions()) {
    std::string decision = "keep";
    std::string why = absl::StrJoin(d.reasons(), ", ");
    if (!d.keep()) {
      decision = !d.skipped().empty() ? "not removed" : d.removed() ? "removed" : "would remove";
      why = d.skipped().empty() ? "no rule keeps it" : d.skipped();
    }
    t.AddRow({d.backup_id(), d.host(), HumanTime(d.start_time()), absl::StrJoin(d.devices(), ","),
              d.policies().empty() ? "-" : absl::StrJoin(d.policies(), ","), decision, why});
  }
  t.Print(out);
}

}  // namespace blkfleet::cli
