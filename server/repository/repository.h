// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_REPOSITORY_REPOSITORY_H_
#define BLKFLEET_SERVER_REPOSITORY_REPOSITORY_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "blkfleet/server/v1/server.pb.h"
#include "server/repository/chunk_store.h"
#include "server/repository/device_index.h"
#include "server/repository/repo_key.h"

namespace blkfleet::repo {

// The backup repository on a local filesystem (layout in docs/formats.md):
//
//   <root>/repo.json                      format, version, id, chunk id scheme,
//                                         encryption and key check value
//   <root>/chunks/<xx>/<digest hex>       chunk files (ChunkStore)
//   <root>/backups/<id>/device-<i>.index  one index per device of a backup
//   <root>/backups/<id>/manifest.json     the backup's manifest
//   <root>/backups/<id>/manifest.mac      its HMAC (encrypted repositories)
//
// A backup's files are written before the catalog records it; files of a
// backup the catalog does not know are leftovers of a failed job, never read
// as a backup by the server, and removed at the next server start or garbage
// collection (RemoveOrphanBackups, server/prune_job.h).
class Repository {
 public:
  // Opens the repository at `root`, creating it when the directory is empty
  // or missing (encrypted when `key` is given). FAILED_PRECONDITION for an
  // unknown format or version, an encrypted repository without a key, a
  // plain one with a key, or a key whose check value differs from the one
  // in repo.json; nothing is written in those cases.
  static absl::StatusOr<std::unique_ptr<Repository>> Open(const std::string& root,
                                                          const RepoKey* key = nullptr);

  bool encrypted() const { return chunks_.encrypted(); }
  ChunkStore& chunks() { return chunks_; }
  const std::string& root() const { return root_; }
  const std::string& id() const { return id_; }

  // Writes device `ordinal`'s index of backup `backup_id` durably and returns
  // the SHA-256 of the file.
  absl::StatusOr<Sha256Digest> WriteIndex(const std::string& backup_id, int ordinal,
                                          const DeviceIndex& index);
  // Reads an index and checks it against the digest recorded in the catalog
  // (DATA_LOSS on mismatch) and its own checksum.
  absl::StatusOr<DeviceIndex> ReadIndex(const std::string& backup_id, int ordinal,
                                        const Sha256Digest& expected_sha256);

  // Writes the manifest of `backup` (whose devices carry their index digests)
  // durably and returns the SHA-256 of the file. An encrypted repository
  // first writes manifest.mac, the HMAC of the manifest bytes, which
  // ReadManifest checks.
  absl::StatusOr<Sha256Digest> WriteManifest(const blkfleet::server::v1::Backup& backup);
  absl::StatusOr<blkfleet::server::v1::Backup> ReadManifest(const std::string& backup_id);

  // Removes the index and manifest files of a backup and its directory
  // (after the catalog forgot it; its chunks go with garbage collection).
  // A missing directory is not an error.
  absl::Status RemoveBackupFiles(const std::string& backup_id);

  // The backup directories present, ids in numeric order, with the time
  // each directory last changed; `.tmp-` leftovers are not listed. Whether
  // one is a backup is the catalog's (or, without it, the manifest's) call.
  struct BackupDirEntry {
    std::string id;
    absl::Time mtime;
  };
  absl::StatusOr<std::vector<BackupDirEntry>> ListBackupDirs() const;

  std::string BackupDir(const std::string& backup_id) const;
  std::string ManifestPath(const std::string& backup_id) const;
  std::string ManifestMacPath(const std::string& backup_id) const;
  std::string IndexPath(const std::string& backup_id, int ordinal) const;

 private:
  Repository(std::string root, std::string id, std::optional<RepoSubkeys> keys);

  const std::string root_;
  const std::string id_;
  const std::string metadata_mac_key_;  // empty: plain repository
  ChunkStore chunks_;
};

}  // namespace blkfleet::repo

#endif  // BLKFLEET_SERVER_REPOSITORY_REPOSITORY_H_
