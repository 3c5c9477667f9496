// SPDX-License-Identifier: Apache-2.0
#include "server/prune_job.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_util.h"
#include "server/crash_point.h"
#include "server/retention.h"

namespace blkfleet::server {
namespace {

absl::Time FromTimestamp(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

std::vector<std::string> SortedDevices(const v1::Backup& b) {
  std::vector<std::string> d;
  for (const auto& dev : b.devices()) d.push_back(dev.device());
  std::sort(d.begin(), d.end());
  return d;
}

absl::StatusOr<std::vector<std::string>> HostsToPrune(catalog::Catalog* catalog,
                                                      const PolicySet& policies,
                                                      const std::string& only) {
  if (!only.empty()) return std::vector<std::string>{only};
  std::vector<std::string> out;
  catalog::PageRequest page{0, 100};
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(std::vector<v1::Host> hosts, catalog->ListHosts(page));
    for (const auto& h : hosts) {
      for (const auto& p : policies.policies) {
        if (policies.host_groups.at(p.host_group).Contains(h.name())) {
          out.push_back(h.name());
          break;
        }
      }
    }
    if (hosts.size() < static_cast<size_t>(page.limit)) break;
    page.offset += page.limit;
  }
  return out;
}

absl::StatusOr<std::vector<v1::Backup>> BackupsOf(catalog::Catalog* catalog,
                                                  const std::string& host) {
  std::vector<v1::Backup> out;
  catalog::PageRequest page{0, 100};
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(std::vector<v1::Backup> backups, catalog->ListBackups(host, page));
    for (auto& b : backups) out.push_back(std::move(b));
    if (backups.size() < static_cast<size_t>(page.limit)) break;
    page.offset += page.limit;
  }
  return out;
}

// Decides for every committed backup of `host`: its (host, device set)
// group's covering policies' retention, combined.
void Decide(const PolicySet& policies, const std::string& host,
            const std::vector<v1::Backup>& backups, v1::PruneResult* result) {
  std::map<std::vector<std::string>, std::vector<const v1::Backup*>> groups;
  for (const auto& b : backups) groups[SortedDevices(b)].push_back(&b);
  for (const auto& [devices, members] : groups) {
    std::vector<const Policy*> covering;
    for (const auto& p : policies.policies) {
      std::vector<std::string> set = policies.device_sets.at(p.device_set).devices;
      std::sort(set.begin(), set.end());
      if (set == devices && policies.host_groups.at(p.host_group).Contains(host)) {
        covering.push_back(&p);
      }
    }
    std::vector<RetentionCandidate> candidates;
    std::map<std::string, const v1::Backup*> by_id;
    for (const v1::Backup* b : members) {
      candidates.push_back({b->id(), FromTimestamp(b->start_time()), b->protected_()});
      by_id[b->id()] = b;
    }
    // id -> decision, in the order retention returns (newest first).
    std::vector<std::string> order;
    std::map<std::string, v1::PruneDecision> decided;
    auto decision = [&](const std::string& id) -> v1::PruneDecision& {
      auto [it, fresh] = decided.try_emplace(id);
      if (fresh) {
        order.push_back(id);
        const v1::Backup& b = *by_id.at(id);
        it->second.set_backup_id(id);
        it->second.set_host(host);
        *it->second.mutable_start_time() = b.start_time();
        for (const auto& d : b.devices()) it->second.add_devices(d.device());
        for (const Policy* p : covering) it->second.add_policies(p->name);
      }
      return it->second;
    };
    if (covering.empty()) {
      Retention keep_all;  // empty: keeps everything
      for (const auto& d : ApplyRetention(candidates, keep_all, absl::UTCTimeZone())) {
        v1::PruneDecision& pd = decision(d.id);
        pd.set_keep(true);
        pd.add_reasons(d.reasons[0] == "protected" ? "protected" : "no policy");
      }
    }
    for (const Policy* p : covering) {
      for (const auto& d : ApplyRetention(candidates, p->retention, p->schedule.tz())) {
        v1::PruneDecision& pd = decision(d.id);
        pd.set_keep(pd.keep() || d.keep);
        for (const auto& r : d.reasons) {
          pd.add_reasons(covering.size() > 1 ? absl::StrCat(p->name, ": ", r) : r);
        }
      }
    }
    for (const auto& id : order) *result->add_decisions() = std::move(decided[id]);
  }
}

// Removes one backup (see RunPrune). `skipped` gets why it was not, when the
// reason is not an error of the job.
absl::Status RemoveBackup(catalog::Catalog* catalog, repo::Repository* repo, BackupUses* uses,
                          const std::string& id, std::string* skipped) {
  if (absl::Status s = uses->BeginRemoval(id); !s.ok()) {
    *skipped = std::string(s.message());
    return absl::OkStatus();
  }
  struct End {
    BackupUses* uses;
    const std::string& id;
    ~End() { uses->EndRemoval(id); }
  } end{uses, id};
  absl::Status deleted = catalog->DeleteBackup(id);
  if (absl::IsFailedPrecondition(deleted) || absl::IsNotFound(deleted)) {
    *skipped = absl::StrCat(deleted.message(), " (changed since the decision)");
    return absl::OkStatus();
  }
  BLKFLEET_RETURN_IF_ERROR(deleted);
  // The commit point is behind: from here a crash leaves the removal pending
  // (FinishBackupRemovals completes it).
  CrashPoint("prune.deleted");
  BLKFLEET_RETURN_IF_ERROR(repo->RemoveBackupFiles(id));
  return catalog->ForgetBackupRemoval(id);
}

}  // namespace

void BackupUses::Use::Release() {
  if (released_) return;
  released_ = true;
  owner_->Drop(id_, what_);
}

absl::StatusOr<std::shared_ptr<BackupUses::Use>> BackupUses::Acquire(const std::string& id,
                                                                     const std::string& what) {
  absl::MutexLock l(&mu_);
  if (removing_.count(id) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("backup ", id, " is being pruned"));
  }
  uses_[id].insert(what);
  return std::shared_ptr<Use>(new Use(this, id, what));
}

void BackupUses::Drop(const std::string& id, const std::string& what) {
  absl::MutexLock l(&mu_);
  auto it = uses_.find(id);
  if (it == uses_.end()) return;
  if (auto w = it->second.find(what); w != it->second.end()) it->second.erase(w);
  if (it->second.empty()) uses_.erase(it);
}

absl::Status BackupUses::BeginRemoval(const std::string& id) {
  absl::MutexLock l(&mu_);
  if (auto it = uses_.find(id); it != uses_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "in use by ", absl::StrJoin(it->second, " and "), ": not removed"));
  }
  removing_.insert(id);
  return absl::OkStatus();
}

void BackupUses::EndRemoval(const std::string& id) {
  absl::MutexLock l(&mu_);
  removing_.erase(id);
}

absl::StatusOr<int> FinishBackupRemovals(catalog::Catalog* catalog, repo::Repository* repo) {
  BLKFLEET_ASSIGN_OR_RETURN(std::vector<std::string> ids, catalog->ListBackupRemovals());
  for (const auto& id : ids) {
    BLKFLEET_RETURN_IF_ERROR(repo->RemoveBackupFiles(id));
    BLKFLEET_RETURN_IF_ERROR(catalog->ForgetBackupRemoval(id));
  }
  return static_cast<int>(ids.size());
}

absl::StatusOr<std::vector<std::string>> RemoveOrphanBackups(catalog::Catalog* catalog,
                                                             repo::Repository* repo,
                                                             absl::Time changed_before,
                                                             bool dry_run) {
  BLKFLEET_ASSIGN_OR_RETURN(std::vector<repo::Repository::BackupDirEntry> dirs,
                            repo->ListBackupDirs());
  std::vector<std::string> orphans;
  for (const auto& d : dirs) {
    if (d.mtime >= changed_before) continue;
    absl::Status known = catalog->GetBackup(d.id).status();
    if (known.ok()) continue;
    if (!absl::IsNotFound(known)) return known;
    if (!dry_run) BLKFLEET_RETURN_IF_ERROR(repo->RemoveBackupFiles(d.id));
    orphans.push_back(d.id);
  }
  return orphans;
}

absl::Status RunPrune(catalog::Catalog* catalog, repo::Repository* repo, BackupUses* uses,
                      const PolicySet& policies, const PruneOptions& options, JobContext& ctx,
                      v1::PruneResult* out) {
  v1::PruneResult result;
  result.set_dry_run(options.dry_run);
  if (!options.dry_run) {
    ctx.SetPhase("finish interrupted removals");
    BLKFLEET_RETURN_IF_ERROR(FinishBackupRemovals(catalog, repo).status());
  }
  ctx.SetPhase("decide");
  BLKFLEET_ASSIGN_OR_RETURN(std::vector<std::string> hosts,
                            HostsToPrune(catalog, policies, options.host));
  for (const auto& host : hosts) {
    if (ctx.cancelled()) return absl::CancelledError("cancelled by request");
    BLKFLEET_ASSIGN_OR_RETURN(std::vector<v1::Backup> backups, BackupsOf(catalog, host));
    Decide(policies, host, backups, &result);
  }
  uint64_t to_remove = 0;
  for (const auto& d : result.decisions()) to_remove += d.keep() ? 0 : 1;
  ctx.SetTotals(0, to_remove);

  // Publishes the decisions so far, whatever the outcome.
  uint64_t removed = 0, skipped = 0;
  auto publish = [&] {
    ctx.SetPruneResult(result);
    ctx.SetSummary(absl::StrCat(
        options.dry_run ? "would remove " : "removed ", options.dry_run ? to_remove : removed,
        " of ", result.decisions_size(), " backups of ", hosts.size(), " hosts, kept ",
        result.decisions_size() - to_remove,
        skipped ? absl::StrCat(", skipped ", skipped, " in use or changed meanwhile") : "",
        options.dry_run || removed == 0 ? "" : "; their chunks go with the next garbage collection"));
    if (out) *out = result;
  };
  absl::Status status;
  if (!options.dry_run) {
    ctx.SetPhase("remove");
    // Oldest first: a prune cut short (cancel, error, crash) leaves the newer
    // of the doomed backups, the ones closer to what retention keeps.
    auto& decisions = *result.mutable_decisions();
    for (auto it = decisions.rbegin(); it != decisions.rend(); ++it) {
      v1::PruneDecision& d = *it;
      if (d.keep()) continue;
      if (ctx.cancelled()) {
        status = absl::CancelledError("cancelled by request");
        break;
      }
      std::string why;
      status = RemoveBackup(catalog, repo, uses, d.backup_id(), &why);
      if (!status.ok()) {
        d.set_skipped(std::string(status.message()));
        status = absl::Status(status.code(), absl::StrCat("removing backup ", d.backup_id(), ": ",
                                                          status.message()));
        break;
      }
      if (why.empty()) {
        d.set_removed(true);
        ++removed;
      } else {
        d.set_skipped(why);
        ++skipped;
      }
      ctx.AddDone(0, 1);
    }
  }
  publish();
  return status;
}

}  // namespace blkfleet::server
