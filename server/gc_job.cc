// SPDX-License-Identifier: Apache-2.0
#include "server/server_metrics.h"
#include "server/gc_job.h"
#include "server/crash_point.h"
#include "server/prune_job.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>
#include <cerrno>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"
#include "common/status_util.h"

namespace blkfleet::server {
namespace {

using DigestSet = std::unordered_set<Sha256Digest, Sha256DigestHash>;

// A chunk write takes seconds at most; its temporary file is never that old.
constexpr absl::Duration kMinTempAge = absl::Hours(1);
constexpr int kRemovalThreads = 8;

absl::Status Mark(catalog::Catalog* catalog, repo::Repository* repo, JobContext& ctx,
                  DigestSet* marked) {
  catalog::PageRequest page{0, 100};
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(std::vector<v1::Backup> backups, catalog->ListBackups("", page));
    for (const auto& b : backups) {
      if (ctx.cancelled()) return absl::CancelledError("cancelled by request");
      for (int i = 0; i < b.devices_size(); ++i) {
        auto sha = DigestFromBytes(b.devices(i).index_sha256());
        absl::StatusOr<repo::DeviceIndex> index =
            sha ? repo->ReadIndex(b.id(), i, *sha)
                : absl::DataLossError("the catalog holds no valid index digest");
        if (!index.ok()) {
          // Deleted (pruned) since the listing: it references nothing now.
          if (absl::IsNotFound(catalog->GetBackup(b.id()).status())) break;
          return absl::FailedPreconditionError(absl::StrCat(
              "cannot tell which chunks backup ", b.id(), " uses, so nothing was removed: ",
              index.status().message()));
        }
        marked->insert(index->digests.begin(), index->digests.end());
      }
    }
    if (backups.size() < static_cast<size_t>(page.limit)) break;
    // Offsets shift if a backup commits or is deleted meanwhile: a backup
    // seen twice costs nothing; one missed would be fatal, and the only
    // backups that can be missed are those committed during the listing,
    // whose chunks are pinned (see ChunkPins).
    page.offset += page.limit;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGc(catalog::Catalog* catalog, repo::Repository* repo, ChunkPins* pins,
                   Clock* clock, const GcOptions& options, JobContext& ctx, GcCounts* out) {
  GcCounts counts;
  // Before the mark: from here on every chunk a running backup pins is kept.
  pins->BeginSweep();
  struct EndSweep {
    ChunkPins* pins;
    ~EndSweep() { pins->EndSweep(); }
  } end_sweep{pins};

  if (!options.dry_run) {
    // A prune interrupted after its catalog commit: its backups' files go
    // before their chunks can (a reader of the repository alone never finds
    // a backup whose chunks were collected).
    ctx.SetPhase("finish interrupted removals");
    BLKFLEET_RETURN_IF_ERROR(FinishBackupRemovals(catalog, repo).status());
  }
  const absl::Time now = clock->Now();
  // Temporary files are not pinned: a Put in progress is protected by age
  // alone, so they get at least kMinTempAge whatever the grace period. The
  // files of a backup committing now are as young.
  const absl::Time temp_cutoff = now - std::max(options.grace, kMinTempAge);
  ctx.SetPhase("remove orphan backup files");
  BLKFLEET_ASSIGN_OR_RETURN(std::vector<std::string> orphans,
                            RemoveOrphanBackups(catalog, repo, temp_cutoff, options.dry_run));
  counts.orphan_backups = orphans.size();
  ctx.SetPhase("mark");
  DigestSet marked;
  BLKFLEET_RETURN_IF_ERROR(Mark(catalog, repo, ctx, &marked));
  counts.referenced = marked.size();

  ctx.SetPhase(options.dry_run ? "sweep (dry run)" : "sweep");
  const absl::Time chunk_cutoff = now - options.grace;
  auto older_than = [](const std::string& path, absl::Time cutoff, struct stat* st) {
    if (::lstat(path.c_str(), st) != 0) return false;  // gone meanwhile
    return absl::TimeFromTimespec(st->st_mtim) < cutoff;
  };
  struct Candidate {
    Sha256Digest digest;
    std::string path;
    uint64_t size_bytes;
  };
  std::vector<Candidate> candidates;
  BLKFLEET_RETURN_IF_ERROR(repo->chunks().ListFiles([&](const repo::ChunkStore::FileEntry& e) {
    if (ctx.cancelled()) return absl::CancelledError("cancelled by request");
    struct stat st;
    if (!e.digest) {
      if (!older_than(e.path, temp_cutoff, &st)) return absl::OkStatus();
      if (!options.dry_run && ::unlink(e.path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoStatus(errno, absl::StrCat("remove ", e.path));
      }
      ++counts.temp_removed;
      return absl::OkStatus();
    }
    ++counts.chunk_files;
    if (marked.count(*e.digest) != 0) return absl::OkStatus();
    if (!older_than(e.path, chunk_cutoff, &st)) {
      ++counts.kept_young;
      return absl::OkStatus();
    }
    candidates.push_back({*e.digest, e.path, static_cast<uint64_t>(st.st_size)});
    return absl::OkStatus();
  }));

  // Removal is bound by the filesystem's metadata latency, not the CPU:
  // several removals in flight overlap it.
  std::atomic<size_t> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  auto remove_some = [&] {
    while (!ctx.cancelled()) {
      const size_t i = next.fetch_add(1);
      if (i >= candidates.size()) return;
      const Candidate& c = candidates[i];
      CrashPoint("gc.mid_sweep");
      int err = 0;
      const bool removed = pins->RemoveUnlessPinned(c.digest, [&] {
        if (!options.dry_run && ::unlink(c.path.c_str()) != 0) err = errno;
      });
      absl::MutexLock l(&mu);
      if (!removed) {
        ++counts.kept_pinned;
      } else if (err != 0 && err != ENOENT) {
        if (first_error.ok()) first_error = ErrnoStatus(err, absl::StrCat("remove ", c.path));
      } else {
        ++counts.removed;
        counts.removed_bytes += c.size_bytes;
        ctx.AddDone(c.size_bytes, 1);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < kRemovalThreads; ++t) threads.emplace_back(remove_some);
  remove_some();
  for (auto& t : threads) t.join();
  if (ctx.cancelled()) return absl::CancelledError("cancelled by request");
  BLKFLEET_RETURN_IF_ERROR(first_error);
  if (!options.dry_run) metrics::GcRemoved(counts.removed, counts.removed_bytes);

  ctx.SetSummary(absl::StrCat(
      options.dry_run ? "would remove " : "removed ", counts.removed, " chunks (",
      counts.removed_bytes, " bytes), ", counts.temp_removed, " temporary files and the files of ",
      counts.orphan_backups, " failed backups; kept ",
      counts.chunk_files - counts.removed, " of ", counts.chunk_files, " chunk files (",
      counts.referenced, " referenced digests, ", counts.kept_young,
      " unreferenced but younger than the grace period, ", counts.kept_pinned,
      " used by running backups)"));
  if (out) *out = counts;
  return absl::OkStatus();
}

}  // namespace blkfleet::server
