// SPDX-License-Identifier: Apache-2.0
#include "server/server_metrics.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "server/catalog/catalog.h"
#include "server/repository/repository.h"

namespace blkfleet::server::metrics {
namespace {
namespace m = ::blkfleet::metrics;

constexpr char kJobsName[] = "blkfleet_server_jobs_total";
constexpr char kJobsHelp[] = "Jobs ended, by kind (backup, restore, verify, prune, gc) and outcome "
                             "(succeeded, failed, cancelled)";
constexpr char kDurationName[] = "blkfleet_server_job_duration_seconds";
constexpr char kDurationHelp[] = "Run time of ended jobs, by kind";
constexpr char kLastSuccessName[] = "blkfleet_backup_last_success_timestamp_seconds";
constexpr char kLastSuccessHelp[] =
    "Unix time of the newest committed backup of each host and device";

std::string KindName(v1::JobKind kind) {
  std::string name = v1::JobKind_Name(kind);
  constexpr std::string_view kPrefix = "JOB_KIND_";
  if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
  return absl::AsciiStrToLower(name);
}

std::string OutcomeName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "failed";
  }
}

// 100 ms .. ~1.8 days
std::vector<double> DurationBuckets() { return m::ExponentialBuckets(0.1, 4, 12); }

struct Handles {
  m::Counter ingested = m::GetCounter(
      "blkfleet_server_ingested_bytes_total",
      "Chunk payload bytes received from agents by backups (compressed as they travelled)");
  m::Counter deduplicated = m::GetCounter(
      "blkfleet_server_deduplicated_bytes_total",
      "Device bytes of backup chunks the repository already held (only their digest travelled)");
  m::Counter backed_up = m::GetCounter("blkfleet_server_backup_read_bytes_total",
                                       "Device bytes read by backups (new and deduplicated chunks)");
  m::Counter gc_chunks = m::GetCounter("blkfleet_server_gc_removed_chunks_total",
                                       "Chunk files removed by garbage collection");
  m::Counter gc_bytes = m::GetCounter("blkfleet_server_gc_removed_bytes_total",
                                      "Bytes of chunk files removed by garbage collection");
  m::Counter verify_chunks = m::GetCounter("blkfleet_server_verify_checked_chunks_total",
                                           "Chunks read and checked by verify jobs");
  m::Counter verify_damaged = m::GetCounter("blkfleet_server_verify_damaged_chunks_total",
                                            "Damaged chunks found by verify jobs");
  m::Counter verify_damaged_backups = m::GetCounter(
      "blkfleet_server_verify_damaged_backups_total",
      "Verify jobs that found damage (bad chunks, or a bad index or manifest)");
  m::Gauge scheduler_lag = m::GetGauge(
      "blkfleet_server_scheduler_lag_seconds",
      "How late the scheduler started the last due backup, after its due time");
  m::Gauge repo_chunks = m::GetGauge("blkfleet_server_repository_chunks",
                                     "Chunk files in the repository (counted at most every walk)");
  m::Gauge repo_bytes = m::GetGauge("blkfleet_server_repository_chunk_bytes",
                                    "Bytes of chunk files in the repository (as stored)");
  m::Gauge fs_avail = m::GetGauge(
      "blkfleet_server_repository_filesystem_avail_bytes",
      "Bytes available to the server on the repository's filesystem");
  m::Gauge fs_size = m::GetGauge("blkfleet_server_repository_filesystem_size_bytes",
                                 "Size of the repository's filesystem");
};

// Set when a job that may add or remove chunk files ended: the next scrape
// counts the repository again.
std::atomic<bool> repo_changed{true};

const Handles& H() {
  static const Handles* h = new Handles;
  return *h;
}

}  // namespace

void Init() {
  H();
  for (v1::JobKind kind : {v1::JOB_KIND_BACKUP, v1::JOB_KIND_RESTORE, v1::JOB_KIND_VERIFY,
                           v1::JOB_KIND_PRUNE, v1::JOB_KIND_GC}) {
    for (v1::JobState state :
         {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
      m::GetCounter(kJobsName, kJobsHelp,
                    {{"kind", KindName(kind)}, {"outcome", OutcomeName(state)}});
    }
    m::GetHistogram(kDurationName, kDurationHelp, DurationBuckets(), {{"kind", KindName(kind)}});
  }
}

void JobEnded(const v1::Job& job, v1::JobState state, double seconds) {
  const std::string kind = KindName(job.kind());
  if (job.kind() == v1::JOB_KIND_BACKUP || job.kind() == v1::JOB_KIND_GC) repo_changed = true;
  m::GetCounter(kJobsName, kJobsHelp, {{"kind", kind}, {"outcome", OutcomeName(state)}})
      .Increment();
  m::GetHistogram(kDurationName, kDurationHelp, DurationBuckets(), {{"kind", kind}})
      .Observe(seconds);
  if (job.kind() == v1::JOB_KIND_BACKUP && state == v1::JOB_STATE_FAILED) {
    m::GetCounter("blkfleet_server_backup_failures_total", "Failed backup jobs, by host",
                  {{"host", job.host()}})
        .Increment();
    m::GetGauge("blkfleet_backup_last_failure_timestamp_seconds",
                "Unix time of the last failed backup job of each host (since the server started)",
                {{"host", job.host()}})
        .Set(static_cast<double>(absl::ToUnixMicros(absl::Now())) / 1e6);
  }
}

void ChunkIngested(uint64_t received_bytes, uint64_t plain_bytes) {
  H().backed_up.Increment(static_cast<double>(plain_bytes));
  if (received_bytes > 0) {
    H().ingested.Increment(static_cast<double>(received_bytes));
  } else {
    H().deduplicated.Increment(static_cast<double>(plain_bytes));
  }
}

void BackupSucceeded(const std::string& host, const std::string& device, absl::Time when) {
  m::GetGauge(kLastSuccessName, kLastSuccessHelp, {{"host", host}, {"device", device}})
      .Set(static_cast<double>(absl::ToUnixMicros(when)) / 1e6);
}

void GcRemoved(uint64_t chunks, uint64_t bytes) {
  H().gc_chunks.Increment(static_cast<double>(chunks));
  H().gc_bytes.Increment(static_cast<double>(bytes));
}

void VerifyChecked(uint64_t chunks, uint64_t damaged, bool backup_damaged) {
  H().verify_chunks.Increment(static_cast<double>(chunks));
  H().verify_damaged.Increment(static_cast<double>(damaged));
  if (backup_damaged) H().verify_damaged_backups.Increment();
}

void SetSchedulerLag(double seconds) { H().scheduler_lag.Set(seconds); }

constexpr char kMaxAgeName[] = "blkfleet_backup_max_age_seconds";
constexpr char kMaxAgeHelp[] = "Age the newest good backup of a host/device may reach under its policy";

void SetBackupMaxAge(const std::string& host, const std::string& device, double seconds) {
  m::GetGauge(kMaxAgeName, kMaxAgeHelp, {{"host", host}, {"device", device}}).Set(seconds);
}

void ClearBackupMaxAge(const std::string& host, const std::string& device) {
  m::RemoveGauge(kMaxAgeName, kMaxAgeHelp, {{"host", host}, {"device", device}});
}

constexpr char kModuleReadyName[] = "blkfleet_host_module_ready";
constexpr char kModuleReadyHelp[] =
    "1 when a blksnap module is installed for this kernel of the host, 0 when not (the host "
    "has no backups once it runs that kernel)";
constexpr char kModuleLoadedName[] = "blkfleet_host_module_loaded";
constexpr char kModuleLoadedHelp[] =
    "1 when the host's agent can make snapshots (blksnap module loaded), 0 when not";

namespace {
// The kernels each host has a blkfleet_host_module_ready series for.
ABSL_CONST_INIT absl::Mutex kernels_mu(absl::kConstInit);
std::map<std::string, std::set<std::string>>& KernelSeries()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(kernels_mu) {
  static auto* series = new std::map<std::string, std::set<std::string>>;
  return *series;
}
}  // namespace

void SetHostKernel(const std::string& host, const blkfleet::type::v1::KernelReport& report) {
  absl::MutexLock lock(&kernels_mu);
  std::set<std::string>& had = KernelSeries()[host];
  std::set<std::string> now;
  for (const auto& k : report.installed_kernels()) {
    now.insert(k.release());
    m::GetGauge(kModuleReadyName, kModuleReadyHelp, {{"host", host}, {"kernel", k.release()}})
        .Set(k.module_present() ? 1 : 0);
  }
  for (const std::string& gone : had) {
    if (!now.contains(gone)) {
      m::RemoveGauge(kModuleReadyName, kModuleReadyHelp, {{"host", host}, {"kernel", gone}});
    }
  }
  had = std::move(now);
  m::GetGauge(kModuleLoadedName, kModuleLoadedHelp, {{"host", host}})
      .Set(report.module_loaded() ? 1 : 0);
}

void ClearHostKernel(const std::string& host) {
  absl::MutexLock lock(&kernels_mu);
  auto it = KernelSeries().find(host);
  if (it == KernelSeries().end()) return;
  for (const std::string& k : it->second) {
    m::RemoveGauge(kModuleReadyName, kModuleReadyHelp, {{"host", host}, {"kernel", k}});
  }
  m::RemoveGauge(kModuleLoadedName, kModuleLoadedHelp, {{"host", host}});
  KernelSeries().erase(it);
}

absl::Status Restore(catalog::Catalog* catalog) {
  for (catalog::PageRequest hp{0, 1000};; hp.offset += hp.limit) {
    absl::StatusOr<std::vector<v1::Host>> hosts = catalog->ListHosts(hp);
    if (!hosts.ok()) return hosts.status();
    for (const v1::Host& h : *hosts) {
      if (h.has_kernel()) SetHostKernel(h.name(), h.kernel());
    }
    if (static_cast<int>(hosts->size()) < hp.limit) break;
  }
  std::map<std::pair<std::string, std::string>, absl::Time> newest;
  catalog::PageRequest page;
  page.limit = 1000;
  while (true) {
    absl::StatusOr<std::vector<v1::Backup>> backups = catalog->ListBackups("", page);
    if (!backups.ok()) return backups.status();
    for (const v1::Backup& b : *backups) {
      const absl::Time end =
          absl::FromUnixSeconds(b.end_time().seconds()) + absl::Nanoseconds(b.end_time().nanos());
      for (const v1::BackupDevice& d : b.devices()) {
        auto [it, inserted] = newest.try_emplace({b.host(), d.device()}, end);
        if (!inserted && it->second < end) it->second = end;
      }
    }
    if (static_cast<int>(backups->size()) < page.limit) break;
    page.offset += page.limit;
  }
  for (const auto& [key, when] : newest) BackupSucceeded(key.first, key.second, when);
  return absl::OkStatus();
}

void WatchRepository(repo::Repository* repo, absl::Duration walk_interval) {
  struct Walk {
    absl::Mutex mu;
    absl::Time last ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  };
  auto walk = std::make_shared<Walk>();
  m::OnScrape([repo, walk, walk_interval] {
    struct statvfs vfs {};
    if (::statvfs(repo->root().c_str(), &vfs) == 0) {
      H().fs_avail.Set(static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize));
      H().fs_size.Set(static_cast<double>(vfs.f_blocks) * static_cast<double>(vfs.f_frsize));
    }
    // Counting walks every chunk file: not on every scrape of a big
    // repository, only after a backup or gc of this server ended, or every
    // walk_interval (for other writers of the repository).
    absl::MutexLock l(&walk->mu);
    const absl::Time now = absl::Now();
    if (!repo_changed.exchange(false) && now - walk->last < walk_interval) return;
    walk->last = now;
    uint64_t chunks = 0, bytes = 0;
    absl::Status s = repo->chunks().ListFiles([&](const repo::ChunkStore::FileEntry& e) {
      struct stat st {};
      if (e.digest && ::stat(e.path.c_str(), &st) == 0) {
        ++chunks;
        bytes += static_cast<uint64_t>(st.st_size);
      }
      return absl::OkStatus();
    });
    if (s.ok()) {
      H().repo_chunks.Set(static_cast<double>(chunks));
      H().repo_bytes.Set(static_cast<double>(bytes));
    }
  });
}

}  // namespace blkfleet::server::metrics
