// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_CATALOG_SQLITE_CATALOG_H_
#define BLKFLEET_SERVER_CATALOG_SQLITE_CATALOG_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/catalog/catalog.h"

struct sqlite3;

namespace blkfleet::catalog {

// One step of the schema: applied in its own transaction together with the
// update of `schema_version`, so a failing step leaves the previous version.
struct Migration {
  int version;
  std::string sql;
};

// The schema migrations of the server, in order.
const std::vector<Migration>& SchemaMigrations();

// Catalog in one SQLite database file, WAL mode, synchronous=FULL (a
// committed backup survives a power loss). One connection behind a mutex: the
// catalog is small and its writes are short.
class SqliteCatalog final : public Catalog {
 public:
  // Opens (creating when missing) the database at `path` and applies the
  // migrations it lacks. FAILED_PRECONDITION when the file's schema is newer
  // than the newest migration known.
  static absl::StatusOr<std::unique_ptr<SqliteCatalog>> Open(
      const std::string& path, const std::vector<Migration>& migrations = SchemaMigrations());
  ~SqliteCatalog() override;

  int SchemaVersion() override;
  absl::Status CreateHost(const v1::Host& host) override;
  absl::StatusOr<v1::Host> GetHost(const std::string& name) override;
  absl::StatusOr<std::vector<v1::Host>> ListHosts(const PageRequest& page) override;
  absl::Status DeleteHost(const std::string& name) override;
  absl::Status PutHostKernels(const std::vector<HostKernelReport>& reports) override;
  absl::StatusOr<std::string> AllocateBackupId() override;
  absl::Status CommitBackup(const v1::Backup& backup, const Sha256Digest& manifest_sha256) override;
  absl::StatusOr<v1::Backup> GetBackup(const std::string& id) override;
  absl::StatusOr<std::vector<v1::Backup>> ListBackups(const std::string& host,
                                                      const PageRequest& page) override;
  absl::StatusOr<Sha256Digest> GetManifestSha256(const std::string& id) override;
  absl::StatusOr<v1::Backup> SetBackupProtected(const std::string& id, bool on) override;
  absl::Status DeleteBackup(const std::string& id) override;
  absl::StatusOr<std::vector<std::string>> ListBackupRemovals() override;
  absl::Status ForgetBackupRemoval(const std::string& id) override;
  absl::Status RecordHeldSnapshot(const HeldSnapshot& snapshot) override;
  absl::Status ForgetHeldSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<HeldSnapshot>> ListHeldSnapshots() override;
  absl::StatusOr<std::optional<DeviceBackupRef>> LatestDeviceBackup(
      const std::string& host, const std::string& device) override;
  absl::StatusOr<v1::Job> CreateJob(const v1::Job& job) override;
  absl::Status UpdateJob(const v1::Job& job) override;
  absl::StatusOr<v1::Job> GetJob(const std::string& id) override;
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::string& host,
                                                const PageRequest& page) override;
  absl::StatusOr<int> FailUnfinishedJobs(const std::string& reason) override;
  absl::Status SavePolicyDocument(const std::string& document) override;
  absl::StatusOr<std::optional<std::string>> LoadPolicyDocument() override;
  absl::Status PutScheduleState(const ScheduleState& state) override;
  absl::Status PutScheduleStates(const std::vector<ScheduleState>& states) override;
  absl::StatusOr<std::vector<ScheduleState>> ListScheduleStates() override;
  absl::Status DeleteScheduleState(const std::string& policy, const std::string& host) override;

 private:
  explicit SqliteCatalog(sqlite3* db);
  absl::Status Migrate(const std::vector<Migration>& migrations);
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Backup> LoadBackup(int64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace blkfleet::catalog

#endif  // BLKFLEET_SERVER_CATALOG_SQLITE_CATALOG_H_
