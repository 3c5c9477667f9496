// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_PRUNE_JOB_H_
#define BLKFLEET_SERVER_PRUNE_JOB_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/catalog/catalog.h"
#include "server/job_manager.h"
#include "server/policy.h"
#include "server/repository/repository.h"

namespace blkfleet::server {

// Which backups are being read (restore, verify) and which are being removed
// (prune), so that neither pulls a backup from under the other: a backup in
// use is not removed, and a backup being removed is not read. Thread-safe.
class BackupUses {
 public:
  // A registered use; released by Release() or the destructor.
  class Use {
   public:
    ~Use() { Release(); }
    void Release();

   private:
    friend class BackupUses;
    Use(BackupUses* owner, std::string id, std::string what)
        : owner_(owner), id_(std::move(id)), what_(std::move(what)) {}
    BackupUses* owner_;
    std::string id_;
    std::string what_;
    bool released_ = false;
  };

  // Registers `what` ("a restore to /x") as reading backup `id`.
  // FAILED_PRECONDITION while prune removes it.
  absl::StatusOr<std::shared_ptr<Use>> Acquire(const std::string& id, const std::string& what);
  // Claims backup `id` for removal. FAILED_PRECONDITION naming its readers
  // while it is in use.
  absl::Status BeginRemoval(const std::string& id);
  void EndRemoval(const std::string& id);

 private:
  void Drop(const std::string& id, const std::string& what);

  absl::Mutex mu_;
  std::map<std::string, std::multiset<std::string>> uses_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> removing_ ABSL_GUARDED_BY(mu_);
};

// Removes the repository files of backups the catalog deleted
// (Catalog::ListBackupRemovals), finishing removals a crash interrupted, and
// forgets each once its files are gone. Returns how many it finished.
absl::StatusOr<int> FinishBackupRemovals(catalog::Catalog* catalog, repo::Repository* repo);

// Removes the files of backups the catalog does not know: leftovers of
// backup jobs that failed or were killed after writing their index or
// manifest but before the catalog commit. Only directories last changed
// before `changed_before` go (a backup committing now is younger); with
// `dry_run` nothing is removed. Returns the ids (removed or, dry, that would
// be). Without this, the repository alone (blkfleet-restore) would show a
// backup whose chunks garbage collection may already have taken.
absl::StatusOr<std::vector<std::string>> RemoveOrphanBackups(catalog::Catalog* catalog,
                                                             repo::Repository* repo,
                                                             absl::Time changed_before,
                                                             bool dry_run);

struct PruneOptions {
  std::string host;  // empty: every host some policy's group holds
  bool dry_run = false;
};

// The body of a prune job (docs/server.md, "Prune"): groups the committed
// backups of each host by device set, applies the retention of the policies
// covering (host, device set) (server/retention.h) and removes what none
// keeps, one backup at a time: claim it in `uses` (skipped, and said so, while
// a restore or verify reads it), delete it from the catalog (the commit
// point, which records its files as pending removal), then remove its files
// (one rename, then the files) and forget the pending removal. Its chunks
// stay until garbage collection. The decisions go to the job's
// prune_result; `out` (optional) receives them too.
absl::Status RunPrune(catalog::Catalog* catalog, repo::Repository* repo, BackupUses* uses,
                      const PolicySet& policies, const PruneOptions& options, JobContext& ctx,
                      v1::PruneResult* out = nullptr);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_PRUNE_JOB_H_
