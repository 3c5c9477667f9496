// SPDX-License-Identifier: Apache-2.0
#include "server/repository/repository.h"

#include <google/protobuf/util/json_util.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/chunk_id.h"
#include "common/durable_file.h"
#include "common/status_util.h"
#include "common/uuid.h"
#include "nlohmann/json.hpp"

namespace blkfleet::repo {
namespace {

constexpr const char* kRepoFormat = "blkfleet-repository";
constexpr const char* kManifestFormat = "blkfleet-manifest";
constexpr int kRepoVersion = 1;
constexpr int kManifestVersion = 1;
constexpr const char* kEncryption = "aes-256-gcm";
constexpr const char* kKeyedChunkId = "hmac-sha256";
constexpr const char* kKdf = "hkdf-sha256";
constexpr const char* kKeyFlag = "--repo-key-file";

std::string ManifestMacLine(const std::string& key, std::string_view manifest) {
  return absl::StrCat("hmac-sha256 ", DigestToHex(HmacSha256(key, manifest)), "\n");
}

}  // namespace

Repository::Repository(std::string root, std::string id, std::optional<RepoSubkeys> keys)
    : root_(std::move(root)),
      id_(std::move(id)),
      metadata_mac_key_(keys ? keys->metadata_mac : std::string()),
      chunks_(root_ + "/chunks", keys ? keys->chunk_id : ChunkIdFn(),
              keys ? std::make_shared<const ChunkCipher>(keys->chunk_enc) : nullptr) {}

absl::StatusOr<std::unique_ptr<Repository>> Repository::Open(const std::string& root,
                                                             const RepoKey* key) {
  BLKFLEET_RETURN_IF_ERROR(MakeDirectories(root));
  const std::string meta_path = root + "/repo.json";
  std::string id;
  std::optional<RepoSubkeys> keys;
  auto meta = ReadWholeFile(meta_path);
  if (meta.ok()) {
    nlohmann::json j = nlohmann::json::parse(*meta, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || j.value("format", "") != kRepoFormat) {
      return absl::FailedPreconditionError(absl::StrCat(meta_path, " is not a blkfleet repository"));
    }
    if (j.value("version", 0) != kRepoVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat(meta_path, ": unsupported repository version ", j.value("version", 0)));
    }
    id = j.value("id", "");
    const std::string encryption = j.value("encryption", "");
    const std::string chunk_id = j.value("chunk_id", "");
    if (encryption == "none" && chunk_id == "sha256") {
      if (key != nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            meta_path, ": the repository is not encrypted, but ", kKeyFlag,
            " was given (a plain repository cannot be opened with a key)"));
      }
    } else if (encryption == kEncryption && chunk_id == kKeyedChunkId &&
               j.value("kdf", "") == kKdf) {
      if (key == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            meta_path, ": the repository is encrypted (", kEncryption, "): give its key with ",
            kKeyFlag));
      }
      keys = DeriveRepoSubkeys(*key, id);
      if (!ConstantTimeEquals(keys->key_check, j.value("key_check", ""))) {
        return absl::FailedPreconditionError(absl::StrCat(
            meta_path, ": ", kKeyFlag, " is not this repository's key (its key check value "
            "differs from repo.json's key_check); nothing was changed"));
      }
    } else {
      return absl::FailedPreconditionError(absl::StrCat(
          meta_path, ": unsupported encryption \"", encryption, "\" with chunk ids \"",
          chunk_id, "\""));
    }
  } else if (absl::IsNotFound(meta.status())) {
    std::error_code ec;
    bool empty = std::filesystem::is_empty(root, ec);
    if (ec) return ErrnoStatus(ec.value(), absl::StrCat("read directory ", root));
    if (!empty) {
      return absl::FailedPreconditionError(
          absl::StrCat(root, " is not empty and holds no repo.json: refusing to use it"));
    }
    id = Uuid::Random().ToString();
    nlohmann::json j = {{"format", kRepoFormat}, {"version", kRepoVersion}, {"id", id},
                        {"chunk_id", "sha256"},  {"encryption", "none"},
                        {"chunk_layout", "chunks/<xx>/<sha256 hex>"}};
    if (key != nullptr) {
      keys = DeriveRepoSubkeys(*key, id);
      j["chunk_id"] = kKeyedChunkId;
      j["encryption"] = kEncryption;
      j["kdf"] = kKdf;
      j["key_check"] = keys->key_check;
      j["chunk_layout"] = "chunks/<xx>/<hmac-sha256 hex>";
    }
    BLKFLEET_RETURN_IF_ERROR(MakeDirectories(root + "/chunks"));
    BLKFLEET_RETURN_IF_ERROR(MakeDirectories(root + "/backups"));
    BLKFLEET_RETURN_IF_ERROR(WriteFileDurably(meta_path, j.dump(2) + "\n"));
  } else {
    return meta.status();
  }
  std::unique_ptr<Repository> repo(new Repository(root, id, std::move(keys)));
  BLKFLEET_RETURN_IF_ERROR(MakeDirectories(root + "/backups"));
  BLKFLEET_RETURN_IF_ERROR(repo->chunks_.Init());
  return repo;
}

absl::StatusOr<std::vector<Repository::BackupDirEntry>> Repository::ListBackupDirs() const {
  const std::string backups = absl::StrCat(root_, "/backups");
  std::vector<BackupDirEntry> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(backups, ec)) {
    // `.tmp-` names: a backup being removed (RemoveBackupFiles).
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) continue;
    struct stat st;
    if (::lstat(e.path().c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // removed meanwhile
      return ErrnoStatus(errno, absl::StrCat("stat ", e.path().string()));
    }
    if (S_ISDIR(st.st_mode)) out.push_back({name, absl::TimeFromTimespec(st.st_mtim)});
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return ErrnoStatus(ec.value(), absl::StrCat("list ", backups));
  }
  // Backup ids are decimal sequence numbers: numeric order.
  std::sort(out.begin(), out.end(), [](const BackupDirEntry& a, const BackupDirEntry& b) {
    return a.id.size() != b.id.size() ? a.id.size() < b.id.size() : a.id < b.id;
  });
  return out;
}

std::string Repository::BackupDir(const std::string& backup_id) const {
  return absl::StrCat(root_, "/backups/", backup_id);
}

std::string Repository::ManifestPath(const std::string& backup_id) const {
  return absl::StrCat(BackupDir(backup_id), "/manifest.json");
}

absl::Status Repository::RemoveBackupFiles(const std::string& backup_id) {
  const std::string backups = absl::StrCat(root_, "/backups");
  const std::string dir = BackupDir(backup_id);
  // A `.tmp-` name is never read as a backup: one rename takes the whole
  // backup away at once, so a reader finds it complete or not at all, and a
  // crash while its files go leaves only a temporary leftover.
  const std::string doomed = absl::StrCat(backups, "/.tmp-removed-", backup_id);
  std::error_code ec;
  std::filesystem::remove_all(doomed, ec);  // a previous attempt's leftover
  if (ec) return absl::InternalError(absl::StrCat("remove ", doomed, ": ", ec.message()));
  if (::rename(dir.c_str(), doomed.c_str()) == 0) {
    BLKFLEET_RETURN_IF_ERROR(FsyncDirectory(backups));
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("rename ", dir, " to ", doomed));
  }
  std::filesystem::remove_all(doomed, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", doomed, ": ", ec.message()));
  return FsyncDirectory(backups);
}

std::string Repository::ManifestMacPath(const std::string& backup_id) const {
  return absl::StrCat(BackupDir(backup_id), "/manifest.mac");
}

std::string Repository::IndexPath(const std::string& backup_id, int ordinal) const {
  return absl::StrCat(BackupDir(backup_id), "/device-", ordinal, ".index");
}

absl::StatusOr<Sha256Digest> Repository::WriteIndex(const std::string& backup_id, int ordinal,
                                                    const DeviceIndex& index) {
  BLKFLEET_RETURN_IF_ERROR(MakeDirectories(BackupDir(backup_id)));
  DeviceIndex copy = index;
  copy.digest_algorithm = encrypted() ? kIndexDigestHmacSha256 : kIndexDigestSha256;
  std::string bytes = EncodeDeviceIndex(copy);
  BLKFLEET_RETURN_IF_ERROR(WriteFileDurably(IndexPath(backup_id, ordinal), bytes));
  return Sha256(bytes);
}

absl::StatusOr<DeviceIndex> Repository::ReadIndex(const std::string& backup_id, int ordinal,
                                                  const Sha256Digest& expected_sha256) {
  const std::string path = IndexPath(backup_id, ordinal);
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) {
    return absl::DataLossError(absl::StrCat("index of backup ", backup_id, " device #", ordinal,
                                            " cannot be read: ", bytes.status().message()));
  }
  if (Sha256(*bytes) != expected_sha256) {
    return absl::DataLossError(absl::StrCat("index ", path, " does not match its catalog digest"));
  }
  auto index = DecodeDeviceIndex(*bytes);
  if (!index.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": ", index.status().message()));
  }
  if (index->digest_algorithm != (encrypted() ? kIndexDigestHmacSha256 : kIndexDigestSha256)) {
    return absl::DataLossError(absl::StrCat(path, ": its chunk ids are not of this repository's "
                                            "kind (digest algorithm ", index->digest_algorithm, ")"));
  }
  return index;
}

absl::StatusOr<Sha256Digest> Repository::WriteManifest(const blkfleet::server::v1::Backup& backup) {
  std::string backup_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(backup, &backup_json, opts);
  if (!st.ok()) return absl::InternalError(absl::StrCat("manifest: ", st.ToString()));
  nlohmann::json j = {{"format", kManifestFormat},
                      {"version", kManifestVersion},
                      {"repository_id", id_},
                      {"backup", nlohmann::json::parse(backup_json)}};
  nlohmann::json files = nlohmann::json::array();
  for (int i = 0; i < backup.devices_size(); ++i) files.push_back(absl::StrCat("device-", i, ".index"));
  j["index_files"] = files;
  std::string bytes = j.dump(2) + "\n";
  BLKFLEET_RETURN_IF_ERROR(MakeDirectories(BackupDir(backup.id())));
  if (!metadata_mac_key_.empty()) {
    BLKFLEET_RETURN_IF_ERROR(
        WriteFileDurably(ManifestMacPath(backup.id()), ManifestMacLine(metadata_mac_key_, bytes)));
  }
  BLKFLEET_RETURN_IF_ERROR(WriteFileDurably(ManifestPath(backup.id()), bytes));
  return Sha256(bytes);
}

absl::StatusOr<blkfleet::server::v1::Backup> Repository::ReadManifest(const std::string& backup_id) {
  const std::string path = ManifestPath(backup_id);
  BLKFLEET_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  if (!metadata_mac_key_.empty()) {
    auto mac = ReadWholeFile(ManifestMacPath(backup_id));
    if (!mac.ok()) {
      return absl::DataLossError(absl::StrCat(ManifestMacPath(backup_id), " cannot be read: ",
                                              mac.status().message()));
    }
    if (!ConstantTimeEquals(*mac, ManifestMacLine(metadata_mac_key_, bytes))) {
      return absl::DataLossError(absl::StrCat(
          path, " does not match its HMAC in manifest.mac (altered, or of another repository)"));
    }
  }
  nlohmann::json j = nlohmann::json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != kManifestFormat ||
      j.value("version", 0) != kManifestVersion || !j.contains("backup")) {
    return absl::DataLossError(absl::StrCat(path, " is not a valid manifest"));
  }
  blkfleet::server::v1::Backup backup;
  auto st = google::protobuf::util::JsonStringToMessage(j["backup"].dump(), &backup);
  if (!st.ok()) return absl::DataLossError(absl::StrCat(path, ": ", st.ToString()));
  return backup;
}

}  // namespace blkfleet::repo
