// SPDX-License-Identifier: Apache-2.0
#include "server/server_metrics.h"
#include "server/verify_job.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/durable_file.h"
#include "common/status_util.h"
#include "common/zstd_codec.h"

namespace blkfleet::server {
namespace {

using DigestSet = std::unordered_set<Sha256Digest, Sha256DigestHash>;

// Every use of one distinct chunk in the verified backup.
struct Chunk {
  Sha256Digest digest;
  uint64_t plain_length = 0;
  std::map<int, std::vector<uint64_t>> uses;  // device ordinal -> chunk indexes
  absl::Status status;
};

// The other committed backups whose indexes name any of `bad`.
absl::StatusOr<std::map<Sha256Digest, std::vector<std::string>>> OtherUsers(
    catalog::Catalog* catalog, repo::Repository* repo, const std::string& self,
    const DigestSet& bad, JobContext& ctx) {
  std::map<Sha256Digest, std::vector<std::string>> users;
  catalog::PageRequest page{0, 100};
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(std::vector<v1::Backup> backups, catalog->ListBackups("", page));
    for (const auto& b : backups) {
      if (b.id() == self || ctx.cancelled()) continue;
      DigestSet found;
      for (int i = 0; i < b.devices_size(); ++i) {
        auto sha = DigestFromBytes(b.devices(i).index_sha256());
        if (!sha) continue;
        auto index = repo->ReadIndex(b.id(), i, *sha);
        if (!index.ok()) continue;  // that backup's own verify reports it
        for (const auto& d : index->digests) {
          if (bad.count(d) != 0) found.insert(d);
        }
      }
      for (const auto& d : found) users[d].push_back(b.id());
    }
    if (backups.size() < static_cast<size_t>(page.limit)) break;
    page.offset += page.limit;
  }
  return users;
}

}  // namespace

std::string FormatIndexes(const std::vector<uint64_t>& sorted, size_t max_ranges) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < sorted.size()) {
    if (parts.size() == max_ranges) {
      parts.push_back("...");
      break;
    }
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    parts.push_back(j == i ? absl::StrCat(sorted[i]) : absl::StrCat(sorted[i], "-", sorted[j]));
    i = j + 1;
  }
  return absl::StrJoin(parts, ", ");
}

absl::Status RunVerify(catalog::Catalog* catalog, repo::Repository* repo,
                       const std::string& backup_id, const VerifyOptions& options,
                       JobContext& ctx) {
  ctx.SetBackupId(backup_id);
  ctx.SetPhase("manifest and indexes");
  BLKFLEET_ASSIGN_OR_RETURN(v1::Backup backup, catalog->GetBackup(backup_id));
  BLKFLEET_ASSIGN_OR_RETURN(Sha256Digest manifest_sha, catalog->GetManifestSha256(backup_id));
  std::vector<std::string> problems;  // besides bad chunks

  auto manifest_bytes = ReadWholeFile(repo->ManifestPath(backup_id));
  if (!manifest_bytes.ok()) {
    problems.push_back(absl::StrCat("manifest cannot be read: ", manifest_bytes.status().message()));
  } else if (Sha256(*manifest_bytes) != manifest_sha) {
    problems.push_back("manifest does not match its catalog digest");
  } else {
    auto manifest = repo->ReadManifest(backup_id);
    if (!manifest.ok()) {
      problems.push_back(std::string(manifest.status().message()));
    } else if (manifest->devices_size() != backup.devices_size()) {
      problems.push_back("manifest and catalog list different devices");
    } else {
      for (int i = 0; i < backup.devices_size(); ++i) {
        if (manifest->devices(i).device() != backup.devices(i).device() ||
            manifest->devices(i).index_sha256() != backup.devices(i).index_sha256()) {
          problems.push_back(absl::StrCat("manifest and catalog disagree on device #", i));
        }
      }
    }
  }

  std::vector<Chunk> chunks;
  std::unordered_map<Sha256Digest, size_t, Sha256DigestHash> slot;
  uint64_t bytes_total = 0;
  for (int i = 0; i < backup.devices_size(); ++i) {
    const v1::BackupDevice& dev = backup.devices(i);
    auto sha = DigestFromBytes(dev.index_sha256());
    if (!sha) {
      problems.push_back(absl::StrCat("catalog holds no valid index digest for ", dev.device()));
      continue;
    }
    auto index = repo->ReadIndex(backup_id, i, *sha);
    if (!index.ok()) {
      problems.push_back(std::string(index.status().message()));
      continue;
    }
    if (index->device_size_bytes != dev.size_bytes() ||
        index->chunk_size_bytes != dev.chunk_size_bytes()) {
      problems.push_back(absl::StrCat("index of ", dev.device(), " disagrees with the catalog on sizes"));
      continue;
    }
    for (uint64_t k = 0; k < index->digests.size(); ++k) {
      const Sha256Digest& d = index->digests[k];
      auto [it, added] = slot.emplace(d, chunks.size());
      if (added) {
        Chunk c;
        c.digest = d;
        c.plain_length = std::min<uint64_t>(index->chunk_size_bytes,
                                            index->device_size_bytes - k * index->chunk_size_bytes);
        bytes_total += c.plain_length;
        chunks.push_back(std::move(c));
      }
      chunks[it->second].uses[i].push_back(k);
    }
  }

  ctx.SetPhase("chunks");
  ctx.SetTotals(bytes_total, chunks.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    ZstdCodec codec;
    std::string plain;
    while (!ctx.cancelled()) {
      const size_t i = next.fetch_add(1);
      if (i >= chunks.size()) return;
      chunks[i].status = repo->chunks().Get(chunks[i].digest, &codec, &plain);
      ctx.AddDone(chunks[i].plain_length, 1);
    }
  };
  std::vector<std::thread> threads;
  const int n = std::max(1, options.threads);
  for (int t = 1; t < n; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  if (ctx.cancelled()) return absl::CancelledError("cancelled by request");

  DigestSet bad;
  for (const auto& c : chunks) {
    if (!c.status.ok()) bad.insert(c.digest);
  }
  std::map<Sha256Digest, std::vector<std::string>> users;
  if (!bad.empty()) {
    ctx.SetPhase("other backups using bad chunks");
    auto u = OtherUsers(catalog, repo, backup_id, bad, ctx);
    if (u.ok()) users = std::move(*u);
  }

  metrics::VerifyChecked(chunks.size(), bad.size(), !bad.empty() || !problems.empty());
  const std::string checked =
      absl::StrCat("checked ", chunks.size(), " distinct chunks (", bytes_total, " bytes) of ",
                   backup.devices_size(), " devices: ", bad.size(), " bad");
  ctx.SetSummary(problems.empty() ? checked
                                  : absl::StrCat(checked, ", ", problems.size(),
                                                 " index/manifest problems"));
  if (bad.empty() && problems.empty()) return absl::OkStatus();

  std::vector<std::string> lines = problems;
  size_t reported = 0;
  for (const auto& c : chunks) {
    if (c.status.ok()) continue;
    if (reported++ == options.max_reported) {
      lines.push_back(absl::StrCat("and ", bad.size() - options.max_reported, " more bad chunks"));
      break;
    }
    std::vector<std::string> where;
    for (const auto& [ordinal, idx] : c.uses) {
      where.push_back(absl::StrCat(backup.devices(ordinal).device(), " chunks ", FormatIndexes(idx)));
    }
    std::string line = absl::StrCat("bad chunk ", DigestToHex(c.digest), " (",
                                    absl::StrJoin(where, "; "), "): ", c.status.message());
    auto u = users.find(c.digest);
    if (u != users.end()) absl::StrAppend(&line, "; also used by backups ", absl::StrJoin(u->second, ", "));
    lines.push_back(std::move(line));
  }
  return absl::DataLossError(absl::StrCat("backup ", backup_id, " failed verification (", bad.size(),
                                          " bad chunks of ", chunks.size(), "): ",
                                          absl::StrJoin(lines, " | ")));
}

}  // namespace blkfleet::server
