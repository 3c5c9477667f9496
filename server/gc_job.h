// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_GC_JOB_H_
#define BLKFLEET_SERVER_GC_JOB_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/catalog/catalog.h"
#include "server/chunk_pins.h"
#include "server/job_manager.h"
#include "server/repository/repository.h"

namespace blkfleet::server {

struct GcOptions {
  // Unreferenced chunk files younger than this (by mtime) are kept: they may
  // belong to a backup that has not committed yet, in another process
  // sharing the repository (those of this process are pinned). Temporary
  // files are kept for at least an hour whatever this says.
  absl::Duration grace = absl::Hours(24);
  bool dry_run = false;
};

struct GcCounts {
  uint64_t referenced = 0;      // distinct digests named by committed indexes
  uint64_t chunk_files = 0;     // chunk files seen
  uint64_t removed = 0;         // chunk files removed (dry run: would be)
  uint64_t removed_bytes = 0;
  uint64_t kept_young = 0;      // unreferenced, younger than the grace period
  uint64_t kept_pinned = 0;     // unreferenced, used by a running backup
  uint64_t temp_removed = 0;    // stale .tmp-* files removed (dry run: would be)
  uint64_t orphan_backups = 0;  // backup directories of failed jobs removed (dry: would be)
};

// The body of a garbage collection job (docs/server.md, "Garbage
// collection"): starts a sweep in `pins`, marks every digest named by a
// committed backup's index (an unreadable index of a backup still in the
// catalog fails the job before anything is removed), then removes the chunk
// files that are unmarked, older than the grace period and not pinned, and
// stale temporary files. `counts` (optional) receives the figures, which
// also go to the job's summary. Before the mark, the files of backups the
// catalog does not know (failed jobs' leftovers, older than the temporary
// file age) go, so that no backup directory outlives its chunks.
absl::Status RunGc(catalog::Catalog* catalog, repo::Repository* repo, ChunkPins* pins,
                   Clock* clock, const GcOptions& options, JobContext& ctx,
                   GcCounts* counts = nullptr);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_GC_JOB_H_
