// SPDX-License-Identifier: Apache-2.0
// blkfleet-restore: rebuilds device images from a repository directory alone,
// without a server or a catalog (disaster recovery). It reads the manifests
// under <repo>/backups/, the index of the device (checked against the digest
// the manifest records and its own trailer) and every chunk (header, stored
// checksum and the SHA-256 of the plain data against the chunk's name) with
// the same code the server's restore job runs. Any bad or missing chunk
// fails the extraction with the chunk's position, digest and path, exits
// non-zero and leaves no output file.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/status_util.h"
#include "nlohmann/json.hpp"
#include "server/repository/repository.h"
#include "server/restore_job.h"

namespace blkfleet::server {
namespace {

// The restore body reports progress through a JobContext; here it only
// counts, and prints the phase when asked to be verbose.
class ToolContext : public JobContext {
 public:
  explicit ToolContext(bool verbose) : verbose_(verbose) {}
  const std::string& id() const override { return id_; }
  bool cancelled() const override { return false; }
  void SetCancelHook(std::function<void()>) override {}
  void SetPhase(const std::string& phase) override {
    if (verbose_) std::cerr << phase << "\n";
  }
  void SetTotals(uint64_t bytes, uint64_t chunks) override {
    absl::MutexLock l(&mu_);
    total_bytes_ = bytes;
    total_chunks_ = chunks;
  }
  void AddDone(uint64_t bytes, uint64_t chunks) override {
    absl::MutexLock l(&mu_);
    done_bytes_ += bytes;
    done_chunks_ += chunks;
  }
  void AddAttempt() override {}
  void SetBackupId(const std::string&) override {}
  void SetSummary(const std::string&) override {}
  uint64_t done_bytes() {
    absl::MutexLock l(&mu_);
    return done_bytes_;
  }
  uint64_t done_chunks() {
    absl::MutexLock l(&mu_);
    return done_chunks_;
  }

 private:
  const bool verbose_;
  const std::string id_ = "blkfleet-restore";
  absl::Mutex mu_;
  uint64_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t total_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_chunks_ ABSL_GUARDED_BY(mu_) = 0;
};

// Opens an existing repository only: Repository::Open would create one in a
// missing or empty directory, which a recovery tool must never do.
// An encrypted repository needs its key (--repo-key-file).
absl::StatusOr<std::unique_ptr<repo::Repository>> OpenExisting(const std::string& root,
                                                               const std::string& key_file) {
  std::error_code ec;
  if (!std::filesystem::exists(root + "/repo.json", ec)) {
    return absl::NotFoundError(
        absl::StrCat(root, " holds no repo.json: not a blkfleet repository (--repo)"));
  }
  std::optional<repo::RepoKey> key;
  if (!key_file.empty()) {
    BLKFLEET_ASSIGN_OR_RETURN(key, repo::LoadRepoKeyFile(key_file, "--repo-key-file"));
  }
  return repo::Repository::Open(root, key ? &*key : nullptr);
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

int List(const std::string& root, const std::string& key_file, bool json) {
  auto repo = OpenExisting(root, key_file);
  if (!repo.ok()) {
    std::cerr << "blkfleet-restore: " << repo.status().message() << "\n";
    return 2;
  }
  auto dirs = (*repo)->ListBackupDirs();
  if (!dirs.ok()) {
    std::cerr << "blkfleet-restore: " << dirs.status().message() << "\n";
    return 1;
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, mtime] : *dirs) {
    auto b = (*repo)->ReadManifest(id);
    if (!b.ok()) {
      // A directory without a complete manifest is a job that failed before
      // writing it: not a backup.
      std::cerr << "blkfleet-restore: skipping " << (*repo)->BackupDir(id) << ": "
                << b.status().message() << "\n";
      continue;
    }
    if (json) {
      nlohmann::json devs = nlohmann::json::array();
      for (const auto& d : b->devices()) {
        devs.push_back({{"device", d.device()},
                        {"size_bytes", d.size_bytes()},
                        {"chunk_size_bytes", d.chunk_size_bytes()}});
      }
      out.push_back({{"id", b->id()},
                     {"host", b->host()},
                     {"snapshot_id", b->snapshot_id()},
                     {"end_time", FormatTime(b->end_time())},
                     {"devices", devs}});
    } else {
      std::cout << b->id() << "  " << b->host() << "  " << FormatTime(b->end_time());
      for (const auto& d : b->devices()) std::cout << "  " << d.device() << ":" << d.size_bytes();
      std::cout << "\n";
    }
  }
  if (json) std::cout << out.dump(2) << "\n";
  return 0;
}

int Extract(const std::string& root, const std::string& key_file, const std::string& backup_id,
            const std::string& device, const std::string& output, bool overwrite, int threads,
            bool verbose) {
  auto repo = OpenExisting(root, key_file);
  if (!repo.ok()) {
    std::cerr << "blkfleet-restore: " << repo.status().message() << "\n";
    return 2;
  }
  auto b = (*repo)->ReadManifest(backup_id);
  if (!b.ok()) {
    std::cerr << "blkfleet-restore: backup " << backup_id << ": " << b.status().message()
              << "\n";
    return 2;
  }
  int ordinal = -1;
  for (int i = 0; i < b->devices_size(); ++i) {
    if (b->devices(i).device() == device) ordinal = i;
  }
  if (ordinal < 0) {
    std::cerr << "blkfleet-restore: --device " << device << " is not in backup " << backup_id
              << " (devices:";
    for (const auto& d : b->devices()) std::cerr << " " << d.device();
    std::cerr << ")\n";
    return 2;
  }
  RestoreFileRequest req;
  req.backup = *b;
  req.device_ordinal = ordinal;
  req.file_path = std::filesystem::absolute(output).lexically_normal().string();
  req.overwrite = overwrite;
  req.reader_threads = threads;
  ToolContext ctx(verbose);
  const absl::Time start = absl::Now();
  absl::Status st = RunRestoreToFile(repo->get(), req, ctx);
  if (!st.ok()) {
    std::cerr << "blkfleet-restore: FAILED: " << st.message() << "\n";
    return 1;
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::cout << "restored " << device << " of backup " << backup_id << " to " << req.file_path
            << ": " << ctx.done_bytes() << " bytes, " << ctx.done_chunks()
            << " chunks verified, " << secs << " s\n";
  return 0;
}

}  // namespace
}  // namespace blkfleet::server

int main(int argc, char** argv) {
  CLI::App app{
      "blkfleet-restore: rebuilds device images from a blkfleet repository directory alone "
      "(no server, no catalog)"};
  app.require_subcommand(1);
  std::string root;
  app.add_option("--repo", root, "repository directory (the server's <data-dir>/repo)")
      ->required();
  std::string key_file;
  app.add_option("--repo-key-file", key_file,
                 "key file of an encrypted repository (as given to blkfleet-server)");

  bool json = false;
  CLI::App* list = app.add_subcommand("list", "list the backups found from their manifests");
  list->add_flag("--json", json, "JSON output");

  std::string backup_id, device, output;
  bool overwrite = false, verbose = false;
  int threads = 3;
  CLI::App* extract =
      app.add_subcommand("extract", "write one device image of a backup, verifying every chunk");
  extract->add_option("--backup", backup_id, "backup id")->required();
  extract->add_option("--device", device, "device name as in the manifest (e.g. vda)")
      ->required();
  extract->add_option("--output", output, "image file to create")->required();
  extract->add_flag("--overwrite", overwrite, "replace an existing output file");
  extract->add_option("--threads", threads, "chunk reader threads")
      ->check(CLI::Range(1, 64));
  extract->add_flag("-v,--verbose", verbose, "print phases");
  CLI11_PARSE(app, argc, argv);

  if (list->parsed()) return blkfleet::server::List(root, key_file, json);
  return blkfleet::server::Extract(root, key_file, backup_id, device, output, overwrite, threads,
                                   verbose);
}
