// SPDX-License-Identifier: Apache-2.0
#include "server/catalog/sqlite_catalog.h"

#include <sqlite3.h>

#include <charconv>

#include "absl/strings/str_cat.h"
#include "common/status_util.h"
#include "nlohmann/json.hpp"

namespace blkfleet::catalog {
namespace {

absl::Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string msg = absl::StrCat("catalog ", std::string(what), ": ", sqlite3_errmsg(db));
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      return absl::AlreadyExistsError(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// A prepared statement; binds by 1-based position, reads by 0-based column.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Bind(int i, int64_t v) {
    Check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    Check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& BindBlob(int i, std::string_view v) {
    Check(sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  // True while a row is available.
  absl::StatusOr<bool> Step() {
    if (rc_ != SQLITE_OK) return SqliteError(db_, rc_, "prepare");
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, "step");
  }
  absl::Status Run() {
    auto r = Step();
    return r.ok() ? absl::OkStatus() : r.status();
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }

 private:
  void Check(int rc) {
    if (rc_ == SQLITE_OK && rc != SQLITE_OK) rc_ = rc;
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

int64_t ToMicros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

void FromMicros(int64_t us, google::protobuf::Timestamp* t) {
  if (us == 0) return;
  int64_t s = us / 1000000;
  int64_t rem = us % 1000000;
  if (rem < 0) {
    rem += 1000000;
    s -= 1;
  }
  t->set_seconds(s);
  t->set_nanos(static_cast<int32_t>(rem * 1000));
}

std::optional<int64_t> ParseId(const std::string& id) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(id.data(), id.data() + id.size(), v);
  if (ec != std::errc() || p != id.data() + id.size() || v <= 0) return std::nullopt;
  return v;
}

// Hosts with their last kernel report: FROM kHostTables.
constexpr const char* kHostColumns =
    "h.name, h.agent_address, h.default_devices, h.create_time_us, k.report, "
    "COALESCE(k.report_time_us, 0)";
constexpr const char* kHostTables = "hosts h LEFT JOIN host_kernels k ON k.host = h.name";

v1::Host ReadHost(Stmt& s) {
  v1::Host h;
  h.set_name(s.Text(0));
  h.set_agent_address(s.Text(1));
  nlohmann::json devs = nlohmann::json::parse(s.Text(2), nullptr, false);
  if (devs.is_array()) {
    for (const auto& d : devs) {
      if (d.is_string()) h.add_default_devices(d.get<std::string>());
    }
  }
  FromMicros(s.Int(3), h.mutable_create_time());
  if (std::string report = s.Blob(4); !report.empty()) {
    h.mutable_kernel()->ParseFromString(report);
    FromMicros(s.Int(5), h.mutable_kernel_report_time());
  }
  return h;
}

constexpr const char* kJobColumns =
    "id, kind, state, host, create_time_us, start_time_us, end_time_us, bytes_done, bytes_total, "
    "chunks_done, chunks_total, phase, error, backup_id, attempts, summary, prune_result";

v1::Job ReadJob(Stmt& s) {
  v1::Job j;
  j.set_id(std::to_string(s.Int(0)));
  j.set_kind(static_cast<v1::JobKind>(s.Int(1)));
  j.set_state(static_cast<v1::JobState>(s.Int(2)));
  j.set_host(s.Text(3));
  FromMicros(s.Int(4), j.mutable_create_time());
  if (s.Int(5) != 0) FromMicros(s.Int(5), j.mutable_start_time());
  if (s.Int(6) != 0) FromMicros(s.Int(6), j.mutable_end_time());
  auto* p = j.mutable_progress();
  p->set_bytes_done(static_cast<uint64_t>(s.Int(7)));
  p->set_bytes_total(static_cast<uint64_t>(s.Int(8)));
  p->set_chunks_done(static_cast<uint64_t>(s.Int(9)));
  p->set_chunks_total(static_cast<uint64_t>(s.Int(10)));
  p->set_phase(s.Text(11));
  j.set_error(s.Text(12));
  j.set_backup_id(s.Text(13));
  j.set_attempts(static_cast<uint32_t>(s.Int(14)));
  j.set_summary(s.Text(15));
  if (std::string pr = s.Blob(16); !pr.empty()) j.mutable_prune_result()->ParseFromString(pr);
  return j;
}

}  // namespace

const std::vector<Migration>& SchemaMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, R"sql(
CREATE TABLE hosts (
  name TEXT PRIMARY KEY,
  agent_address TEXT NOT NULL,
  default_devices TEXT NOT NULL,      -- JSON array of device names
  create_time_us INTEGER NOT NULL
);
CREATE TABLE sequences (
  name TEXT PRIMARY KEY,
  next_value INTEGER NOT NULL
);
INSERT INTO sequences (name, next_value) VALUES ('backup', 1);
CREATE TABLE backups (
  id INTEGER PRIMARY KEY,             -- from sequences('backup')
  host TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  start_time_us INTEGER NOT NULL,
  end_time_us INTEGER NOT NULL,
  protected INTEGER NOT NULL DEFAULT 0,
  manifest_sha256 BLOB NOT NULL
);
CREATE INDEX backups_by_host ON backups (host, id);
CREATE TABLE backup_devices (
  backup_id INTEGER NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL,           -- index file device-<ordinal>.index
  device TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  chunk_size_bytes INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  cbt_generation BLOB NOT NULL,
  cbt_change_number INTEGER NOT NULL,
  cbt_block_size_bytes INTEGER NOT NULL,
  cbt_block_count INTEGER NOT NULL,
  base_backup_id TEXT NOT NULL,
  chunks_total INTEGER NOT NULL,
  chunks_read INTEGER NOT NULL,
  chunks_new INTEGER NOT NULL,
  bytes_read INTEGER NOT NULL,
  bytes_received INTEGER NOT NULL,
  index_sha256 BLOB NOT NULL,
  PRIMARY KEY (backup_id, ordinal),
  UNIQUE (backup_id, device)
);
CREATE INDEX backup_devices_by_device ON backup_devices (device, backup_id);
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind INTEGER NOT NULL,
  state INTEGER NOT NULL,
  host TEXT NOT NULL,
  create_time_us INTEGER NOT NULL,
  start_time_us INTEGER NOT NULL DEFAULT 0,
  end_time_us INTEGER NOT NULL DEFAULT 0,
  bytes_done INTEGER NOT NULL DEFAULT 0,
  bytes_total INTEGER NOT NULL DEFAULT 0,
  chunks_done INTEGER NOT NULL DEFAULT 0,
  chunks_total INTEGER NOT NULL DEFAULT 0,
  phase TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '',
  backup_id TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_host ON jobs (host, id);
)sql"},
      {2, R"sql(
ALTER TABLE jobs ADD COLUMN summary TEXT NOT NULL DEFAULT '';
)sql"},
      {3, R"sql(
CREATE TABLE policy_document (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  document TEXT NOT NULL
);
CREATE TABLE schedule_state (
  policy TEXT NOT NULL,
  host TEXT NOT NULL,
  next_slot_us INTEGER NOT NULL,
  last_slot_us INTEGER NOT NULL,
  last_start_us INTEGER NOT NULL,
  retry_at_us INTEGER NOT NULL,
  job_id TEXT NOT NULL,
  running INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  last_lag_ms INTEGER NOT NULL,
  missed_slots INTEGER NOT NULL,
  last_result TEXT NOT NULL,
  PRIMARY KEY (policy, host)
);
)sql"},
      {4, R"sql(
ALTER TABLE jobs ADD COLUMN prune_result BLOB NOT NULL DEFAULT x'';
CREATE TABLE backup_removals (
  id INTEGER PRIMARY KEY,             -- a backup deleted from the catalog
  remove_time_us INTEGER NOT NULL     -- whose files may still be in the repository
);
)sql"},
      {5, R"sql(
CREATE TABLE held_snapshots (
  snapshot_id TEXT PRIMARY KEY,       -- created on the agent, not destroyed yet
  job_id TEXT NOT NULL,
  host TEXT NOT NULL,
  agent_address TEXT NOT NULL,
  lease_ms INTEGER NOT NULL
);
)sql"},
      {6, R"sql(
CREATE TABLE host_kernels (
  host TEXT PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
  running_release TEXT NOT NULL,      -- also in report, for queries by hand
  module_loaded INTEGER NOT NULL,
  report BLOB NOT NULL,               -- blkfleet.type.v1.KernelReport
  report_time_us INTEGER NOT NULL     -- when the agent sent it
);
)sql"},
  };
  return kMigrations;
}

SqliteCatalog::SqliteCatalog(sqlite3* db) : db_(db) {}

SqliteCatalog::~SqliteCatalog() {
  absl::MutexLock l(&mu_);
  sqlite3_close_v2(db_);
}

absl::StatusOr<std::unique_ptr<SqliteCatalog>> SqliteCatalog::Open(
    const std::string& path, const std::vector<Migration>& migrations) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = absl::UnavailableError(
        absl::StrCat("cannot open catalog ", path, ": ", db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close_v2(db);
    return s;
  }
  std::unique_ptr<SqliteCatalog> cat(new SqliteCatalog(db));
  {
    absl::MutexLock l(&cat->mu_);
    sqlite3_busy_timeout(db, 5000);
    BLKFLEET_RETURN_IF_ERROR(cat->Exec("PRAGMA journal_mode=WAL"));
    BLKFLEET_RETURN_IF_ERROR(cat->Exec("PRAGMA synchronous=FULL"));
    BLKFLEET_RETURN_IF_ERROR(cat->Exec("PRAGMA foreign_keys=ON"));
  }
  BLKFLEET_RETURN_IF_ERROR(cat->Migrate(migrations));
  return cat;
}

absl::Status SqliteCatalog::Exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    absl::Status s = SqliteError(db_, rc, "exec");
    return absl::Status(s.code(), absl::StrCat("catalog: ", msg));
  }
  return absl::OkStatus();
}

absl::Status SqliteCatalog::Migrate(const std::vector<Migration>& migrations) {
  absl::MutexLock l(&mu_);
  BLKFLEET_RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
  int64_t current = 0;
  {
    Stmt s(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (row) current = s.Int(0);
  }
  int newest = migrations.empty() ? 0 : migrations.back().version;
  if (current > newest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "catalog schema version ", current, " is newer than this server knows (", newest,
        "): upgrade blkfleet-server"));
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    BLKFLEET_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status s = Exec(m.sql);
    if (s.ok()) s = Exec(absl::StrCat("DELETE FROM schema_version; INSERT INTO schema_version "
                                      "(version) VALUES (", m.version, ")"));
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return absl::Status(s.code(), absl::StrCat("schema migration to version ", m.version,
                                                 " failed: ", s.message()));
    }
    current = m.version;
  }
  return absl::OkStatus();
}

int SqliteCatalog::SchemaVersion() {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
  auto row = s.Step();
  return row.ok() && *row ? static_cast<int>(s.Int(0)) : -1;
}

absl::Status SqliteCatalog::CreateHost(const v1::Host& host) {
  nlohmann::json devs = nlohmann::json::array();
  for (const auto& d : host.default_devices()) devs.push_back(d);
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         "INSERT INTO hosts (name, agent_address, default_devices, create_time_us) "
         "VALUES (?, ?, ?, ?)");
  s.Bind(1, host.name()).Bind(2, host.agent_address()).Bind(3, devs.dump());
  s.Bind(4, ToMicros(host.create_time()));
  absl::Status st = s.Run();
  if (absl::IsAlreadyExists(st)) {
    return absl::AlreadyExistsError(absl::StrCat("host ", host.name(), " already exists"));
  }
  return st;
}

absl::StatusOr<v1::Host> SqliteCatalog::GetHost(const std::string& name) {
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         absl::StrCat("SELECT ", kHostColumns, " FROM ", kHostTables, " WHERE h.name = ?").c_str());
  s.Bind(1, name);
  BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("host ", name, " not found"));
  return ReadHost(s);
}

absl::StatusOr<std::vector<v1::Host>> SqliteCatalog::ListHosts(const PageRequest& page) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kHostColumns, " FROM ", kHostTables,
                           " ORDER BY h.name LIMIT ? OFFSET ?")
                  .c_str());
  s.Bind(1, page.limit).Bind(2, page.offset);
  std::vector<v1::Host> out;
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ReadHost(s));
  }
  return out;
}

absl::Status SqliteCatalog::DeleteHost(const std::string& name) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "DELETE FROM hosts WHERE name = ?");
  s.Bind(1, name);
  BLKFLEET_RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("host ", name, " not found"));
  return absl::OkStatus();
}

absl::Status SqliteCatalog::PutHostKernels(const std::vector<HostKernelReport>& reports) {
  if (reports.empty()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  BLKFLEET_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status result;
  for (const HostKernelReport& r : reports) {
    // A host deleted meanwhile selects no row: nothing is written for it.
    Stmt s(db_,
           "INSERT OR REPLACE INTO host_kernels (host, running_release, module_loaded, report, "
           "report_time_us) SELECT name, ?, ?, ?, ? FROM hosts WHERE name = ?");
    s.Bind(1, r.report.running_release()).Bind(2, int64_t{r.report.module_loaded()});
    s.BindBlob(3, r.report.SerializeAsString()).Bind(4, r.report_time_us).Bind(5, r.host);
    result = s.Run();
    if (!result.ok()) break;
  }
  if (result.ok()) result = Exec("COMMIT");
  if (!result.ok()) Exec("ROLLBACK").IgnoreError();
  return result;
}

absl::StatusOr<std::string> SqliteCatalog::AllocateBackupId() {
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         "UPDATE sequences SET next_value = next_value + 1 WHERE name = 'backup' "
         "RETURNING next_value - 1");
  BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::InternalError("catalog: backup id sequence missing");
  int64_t id = s.Int(0);
  BLKFLEET_RETURN_IF_ERROR(s.Run());  // finish the statement
  return std::to_string(id);
}

absl::Status SqliteCatalog::CommitBackup(const v1::Backup& backup,
                                         const Sha256Digest& manifest_sha256) {
  auto id = ParseId(backup.id());
  if (!id) return absl::InvalidArgumentError(absl::StrCat("malformed backup id '", backup.id(), "'"));
  absl::MutexLock l(&mu_);
  BLKFLEET_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> absl::Status {
    Stmt b(db_,
           "INSERT INTO backups (id, host, snapshot_id, start_time_us, end_time_us, protected, "
           "manifest_sha256) VALUES (?, ?, ?, ?, ?, ?, ?)");
    b.Bind(1, *id).Bind(2, backup.host()).Bind(3, backup.snapshot_id());
    b.Bind(4, ToMicros(backup.start_time())).Bind(5, ToMicros(backup.end_time()));
    b.Bind(6, backup.protected_() ? 1 : 0).BindBlob(7, DigestToBytes(manifest_sha256));
    BLKFLEET_RETURN_IF_ERROR(b.Run());
    for (int i = 0; i < backup.devices_size(); ++i) {
      const v1::BackupDevice& d = backup.devices(i);
      Stmt s(db_,
             "INSERT INTO backup_devices (backup_id, ordinal, device, size_bytes, "
             "chunk_size_bytes, kind, cbt_generation, cbt_change_number, cbt_block_size_bytes, "
             "cbt_block_count, base_backup_id, chunks_total, chunks_read, chunks_new, bytes_read, "
             "bytes_received, index_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
      s.Bind(1, *id).Bind(2, i).Bind(3, d.device()).Bind(4, static_cast<int64_t>(d.size_bytes()));
      s.Bind(5, d.chunk_size_bytes()).Bind(6, d.kind()).BindBlob(7, d.cbt().generation_id());
      s.Bind(8, d.cbt().change_number()).Bind(9, d.cbt().block_size_bytes());
      s.Bind(10, d.cbt().block_count()).Bind(11, d.base_backup_id());
      s.Bind(12, static_cast<int64_t>(d.chunks_total()));
      s.Bind(13, static_cast<int64_t>(d.chunks_read()));
      s.Bind(14, static_cast<int64_t>(d.chunks_new()));
      s.Bind(15, static_cast<int64_t>(d.bytes_read()));
      s.Bind(16, static_cast<int64_t>(d.bytes_received()));
      s.BindBlob(17, d.index_sha256());
      BLKFLEET_RETURN_IF_ERROR(s.Run());
    }
    return Exec("COMMIT");
  };
  absl::Status st = body();
  if (!st.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return absl::Status(st.code(), absl::StrCat("recording backup ", backup.id(), ": ", st.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Backup> SqliteCatalog::LoadBackup(int64_t id) {
  Stmt s(db_,
         "SELECT id, host, snapshot_id, start_time_us, end_time_us, protected FROM backups "
         "WHERE id = ?");
  s.Bind(1, id);
  BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("backup ", id, " not found"));
  v1::Backup b;
  b.set_id(std::to_string(s.Int(0)));
  b.set_host(s.Text(1));
  b.set_snapshot_id(s.Text(2));
  FromMicros(s.Int(3), b.mutable_start_time());
  FromMicros(s.Int(4), b.mutable_end_time());
  b.set_protected_(s.Int(5) != 0);
  Stmt d(db_,
         "SELECT device, size_bytes, chunk_size_bytes, kind, cbt_generation, cbt_change_number, "
         "cbt_block_size_bytes, cbt_block_count, base_backup_id, chunks_total, chunks_read, "
         "chunks_new, bytes_read, bytes_received, index_sha256 FROM backup_devices "
         "WHERE backup_id = ? ORDER BY ordinal");
  d.Bind(1, id);
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(bool more, d.Step());
    if (!more) break;
    v1::BackupDevice* dev = b.add_devices();
    dev->set_device(d.Text(0));
    dev->set_size_bytes(static_cast<uint64_t>(d.Int(1)));
    dev->set_chunk_size_bytes(static_cast<uint32_t>(d.Int(2)));
    dev->set_kind(static_cast<v1::BackupKind>(d.Int(3)));
    dev->mutable_cbt()->set_generation_id(d.Blob(4));
    dev->mutable_cbt()->set_change_number(static_cast<uint32_t>(d.Int(5)));
    dev->mutable_cbt()->set_block_size_bytes(static_cast<uint32_t>(d.Int(6)));
    dev->mutable_cbt()->set_block_count(static_cast<uint32_t>(d.Int(7)));
    dev->set_base_backup_id(d.Text(8));
    dev->set_chunks_total(static_cast<uint64_t>(d.Int(9)));
    dev->set_chunks_read(static_cast<uint64_t>(d.Int(10)));
    dev->set_chunks_new(static_cast<uint64_t>(d.Int(11)));
    dev->set_bytes_read(static_cast<uint64_t>(d.Int(12)));
    dev->set_bytes_received(static_cast<uint64_t>(d.Int(13)));
    dev->set_index_sha256(d.Blob(14));
  }
  return b;
}

absl::StatusOr<v1::Backup> SqliteCatalog::GetBackup(const std::string& id) {
  auto n = ParseId(id);
  if (!n) return absl::InvalidArgumentError(absl::StrCat("malformed backup id '", id, "'"));
  absl::MutexLock l(&mu_);
  return LoadBackup(*n);
}

absl::StatusOr<std::vector<v1::Backup>> SqliteCatalog::ListBackups(const std::string& host,
                                                                    const PageRequest& page) {
  absl::MutexLock l(&mu_);
  std::vector<int64_t> ids;
  {
    Stmt s(db_,
           "SELECT id FROM backups WHERE (?1 = '' OR host = ?1) ORDER BY id DESC LIMIT ?2 "
           "OFFSET ?3");
    s.Bind(1, host).Bind(2, page.limit).Bind(3, page.offset);
    while (true) {
      BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ids.push_back(s.Int(0));
    }
  }
  std::vector<v1::Backup> out;
  for (int64_t id : ids) {
    BLKFLEET_ASSIGN_OR_RETURN(v1::Backup b, LoadBackup(id));
    out.push_back(std::move(b));
  }
  return out;
}

absl::StatusOr<Sha256Digest> SqliteCatalog::GetManifestSha256(const std::string& id) {
  auto n = ParseId(id);
  if (!n) return absl::InvalidArgumentError(absl::StrCat("malformed backup id '", id, "'"));
  absl::MutexLock l(&mu_);
  Stmt s(db_, "SELECT manifest_sha256 FROM backups WHERE id = ?");
  s.Bind(1, *n);
  BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("backup ", id, " not found"));
  auto d = DigestFromBytes(s.Blob(0));
  if (!d) return absl::DataLossError(absl::StrCat("catalog: manifest digest of backup ", id, " is malformed"));
  return *d;
}

absl::StatusOr<v1::Backup> SqliteCatalog::SetBackupProtected(const std::string& id, bool on) {
  auto n = ParseId(id);
  if (!n) return absl::InvalidArgumentError(absl::StrCat("malformed backup id '", id, "'"));
  absl::MutexLock l(&mu_);
  Stmt s(db_, "UPDATE backups SET protected = ? WHERE id = ?");
  s.Bind(1, on ? 1 : 0).Bind(2, *n);
  BLKFLEET_RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("backup ", id, " not found"));
  return LoadBackup(*n);
}

absl::Status SqliteCatalog::DeleteBackup(const std::string& id) {
  auto n = ParseId(id);
  if (!n) return absl::InvalidArgumentError(absl::StrCat("malformed backup id '", id, "'"));
  absl::MutexLock l(&mu_);
  BLKFLEET_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> absl::Status {
    // One statement: the protection check and the removal cannot interleave
    // with a ProtectBackup; backup_devices go with it (ON DELETE CASCADE).
    Stmt s(db_, "DELETE FROM backups WHERE id = ? AND protected = 0");
    s.Bind(1, *n);
    BLKFLEET_RETURN_IF_ERROR(s.Run());
    if (sqlite3_changes(db_) == 1) {
      // In the same transaction: the files still to remove.
      Stmt r(db_, "INSERT OR REPLACE INTO backup_removals (id, remove_time_us) VALUES (?, ?)");
      r.Bind(1, *n).Bind(2, absl::ToUnixMicros(absl::Now()));
      BLKFLEET_RETURN_IF_ERROR(r.Run());
      return Exec("COMMIT");
    }
    Stmt q(db_, "SELECT protected FROM backups WHERE id = ?");
    q.Bind(1, *n);
    BLKFLEET_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("backup ", id, " not found"));
    return absl::FailedPreconditionError(absl::StrCat("backup ", id, " is protected"));
  };
  absl::Status st = body();
  if (!st.ok()) Exec("ROLLBACK").IgnoreError();
  return st;
}

absl::StatusOr<std::vector<std::string>> SqliteCatalog::ListBackupRemovals() {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "SELECT id FROM backup_removals ORDER BY id");
  std::vector<std::string> out;
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(std::to_string(s.Int(0)));
  }
  return out;
}

absl::Status SqliteCatalog::ForgetBackupRemoval(const std::string& id) {
  auto n = ParseId(id);
  if (!n) return absl::InvalidArgumentError(absl::StrCat("malformed backup id '", id, "'"));
  absl::MutexLock l(&mu_);
  Stmt s(db_, "DELETE FROM backup_removals WHERE id = ?");
  s.Bind(1, *n);
  return s.Run();
}

absl::Status SqliteCatalog::RecordHeldSnapshot(const HeldSnapshot& h) {
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO held_snapshots (snapshot_id, job_id, host, agent_address, "
         "lease_ms) VALUES (?, ?, ?, ?, ?)");
  s.Bind(1, h.snapshot_id).Bind(2, h.job_id).Bind(3, h.host).Bind(4, h.agent_address);
  s.Bind(5, h.lease_ms);
  return s.Run();
}

absl::Status SqliteCatalog::ForgetHeldSnapshot(const std::string& snapshot_id) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "DELETE FROM held_snapshots WHERE snapshot_id = ?");
  s.Bind(1, snapshot_id);
  return s.Run();
}

absl::StatusOr<std::vector<HeldSnapshot>> SqliteCatalog::ListHeldSnapshots() {
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         "SELECT snapshot_id, job_id, host, agent_address, lease_ms FROM held_snapshots "
         "ORDER BY job_id, snapshot_id");
  std::vector<HeldSnapshot> out;
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Text(1), s.Text(2), s.Text(3), s.Int(4)});
  }
  return out;
}

absl::StatusOr<std::optional<DeviceBackupRef>> SqliteCatalog::LatestDeviceBackup(
    const std::string& host, const std::string& device) {
  absl::MutexLock l(&mu_);
  int64_t id = 0;
  int64_t ordinal = 0;
  {
    Stmt s(db_,
           "SELECT b.id, d.ordinal FROM backup_devices d JOIN backups b ON b.id = d.backup_id "
           "WHERE b.host = ? AND d.device = ? ORDER BY b.id DESC LIMIT 1");
    s.Bind(1, host).Bind(2, device);
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::optional<DeviceBackupRef>();
    id = s.Int(0);
    ordinal = s.Int(1);
  }
  BLKFLEET_ASSIGN_OR_RETURN(v1::Backup b, LoadBackup(id));
  if (ordinal >= b.devices_size()) return absl::InternalError("catalog: device ordinal out of range");
  DeviceBackupRef ref;
  ref.backup_id = b.id();
  ref.ordinal = static_cast<int>(ordinal);
  ref.device = b.devices(static_cast<int>(ordinal));
  return std::optional<DeviceBackupRef>(std::move(ref));
}

absl::StatusOr<v1::Job> SqliteCatalog::CreateJob(const v1::Job& job) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "INSERT INTO jobs (kind, state, host, create_time_us) VALUES (?, ?, ?, ?)");
  s.Bind(1, job.kind()).Bind(2, job.state()).Bind(3, job.host());
  s.Bind(4, ToMicros(job.create_time()));
  BLKFLEET_RETURN_IF_ERROR(s.Run());
  v1::Job out = job;
  out.set_id(std::to_string(sqlite3_last_insert_rowid(db_)));
  return out;
}

absl::Status SqliteCatalog::UpdateJob(const v1::Job& job) {
  auto id = ParseId(job.id());
  if (!id) return absl::InvalidArgumentError(absl::StrCat("malformed job id '", job.id(), "'"));
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         "UPDATE jobs SET state = ?, start_time_us = ?, end_time_us = ?, bytes_done = ?, "
         "bytes_total = ?, chunks_done = ?, chunks_total = ?, phase = ?, error = ?, "
         "backup_id = ?, attempts = ?, summary = ?, prune_result = ? WHERE id = ?");
  const auto& p = job.progress();
  s.Bind(1, job.state());
  s.Bind(2, job.has_start_time() ? ToMicros(job.start_time()) : 0);
  s.Bind(3, job.has_end_time() ? ToMicros(job.end_time()) : 0);
  s.Bind(4, static_cast<int64_t>(p.bytes_done())).Bind(5, static_cast<int64_t>(p.bytes_total()));
  s.Bind(6, static_cast<int64_t>(p.chunks_done())).Bind(7, static_cast<int64_t>(p.chunks_total()));
  s.Bind(8, p.phase()).Bind(9, job.error()).Bind(10, job.backup_id());
  s.Bind(11, job.attempts()).Bind(12, job.summary());
  s.BindBlob(13, job.has_prune_result() ? job.prune_result().SerializeAsString() : std::string());
  s.Bind(14, *id);
  BLKFLEET_RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("job ", job.id(), " not found"));
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> SqliteCatalog::GetJob(const std::string& id) {
  auto n = ParseId(id);
  if (!n) return absl::InvalidArgumentError(absl::StrCat("malformed job id '", id, "'"));
  absl::MutexLock l(&mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?").c_str());
  s.Bind(1, *n);
  BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return ReadJob(s);
}

absl::StatusOr<std::vector<v1::Job>> SqliteCatalog::ListJobs(const std::string& host,
                                                              const PageRequest& page) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kJobColumns,
                           " FROM jobs WHERE (?1 = '' OR host = ?1) ORDER BY id DESC LIMIT ?2 "
                           "OFFSET ?3")
                  .c_str());
  s.Bind(1, host).Bind(2, page.limit).Bind(3, page.offset);
  std::vector<v1::Job> out;
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ReadJob(s));
  }
  return out;
}

absl::StatusOr<int> SqliteCatalog::FailUnfinishedJobs(const std::string& reason) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "UPDATE jobs SET state = ?, error = ? WHERE state IN (?, ?)");
  s.Bind(1, v1::JOB_STATE_FAILED).Bind(2, reason);
  s.Bind(3, v1::JOB_STATE_PENDING).Bind(4, v1::JOB_STATE_RUNNING);
  BLKFLEET_RETURN_IF_ERROR(s.Run());
  return sqlite3_changes(db_);
}

absl::Status SqliteCatalog::SavePolicyDocument(const std::string& document) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "INSERT OR REPLACE INTO policy_document (id, document) VALUES (1, ?)");
  s.Bind(1, document);
  return s.Run();
}

absl::StatusOr<std::optional<std::string>> SqliteCatalog::LoadPolicyDocument() {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "SELECT document FROM policy_document WHERE id = 1");
  BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(s.Text(0));
}

absl::Status SqliteCatalog::PutScheduleState(const ScheduleState& st) {
  return PutScheduleStates({st});
}

absl::Status SqliteCatalog::PutScheduleStates(const std::vector<ScheduleState>& states) {
  if (states.empty()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  BLKFLEET_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status result;
  for (const ScheduleState& st : states) {
    Stmt s(db_,
           "INSERT OR REPLACE INTO schedule_state (policy, host, next_slot_us, last_slot_us, "
           "last_start_us, retry_at_us, job_id, running, attempt, last_lag_ms, missed_slots, "
           "last_result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    s.Bind(1, st.policy).Bind(2, st.host).Bind(3, st.next_slot_us).Bind(4, st.last_slot_us);
    s.Bind(5, st.last_start_us).Bind(6, st.retry_at_us).Bind(7, st.job_id);
    s.Bind(8, int64_t{st.running}).Bind(9, int64_t{st.attempt}).Bind(10, st.last_lag_ms);
    s.Bind(11, int64_t{st.missed_slots}).Bind(12, st.last_result);
    result = s.Run();
    if (!result.ok()) break;
  }
  if (result.ok()) result = Exec("COMMIT");
  if (!result.ok()) Exec("ROLLBACK").IgnoreError();
  return result;
}

absl::StatusOr<std::vector<ScheduleState>> SqliteCatalog::ListScheduleStates() {
  absl::MutexLock l(&mu_);
  Stmt s(db_,
         "SELECT policy, host, next_slot_us, last_slot_us, last_start_us, retry_at_us, job_id, "
         "running, attempt, last_lag_ms, missed_slots, last_result FROM schedule_state "
         "ORDER BY policy, host");
  std::vector<ScheduleState> out;
  while (true) {
    BLKFLEET_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ScheduleState st;
    st.policy = s.Text(0);
    st.host = s.Text(1);
    st.next_slot_us = s.Int(2);
    st.last_slot_us = s.Int(3);
    st.last_start_us = s.Int(4);
    st.retry_at_us = s.Int(5);
    st.job_id = s.Text(6);
    st.running = s.Int(7) != 0;
    st.attempt = static_cast<int>(s.Int(8));
    st.last_lag_ms = s.Int(9);
    st.missed_slots = static_cast<int>(s.Int(10));
    st.last_result = s.Text(11);
    out.push_back(std::move(st));
  }
  return out;
}

absl::Status SqliteCatalog::DeleteScheduleState(const std::string& policy,
                                                const std::string& host) {
  absl::MutexLock l(&mu_);
  Stmt s(db_, "DELETE FROM schedule_state WHERE policy = ? AND host = ?");
  s.Bind(1, policy).Bind(2, host);
  return s.Run();
}

}  // namespace blkfleet::catalog
