// SPDX-License-Identifier: Apache-2.0
// blkfleet-repo-bench: figures of the server's repository code that need no
// agent. Prints "name value unit" lines:
//   checksum_crc32_zlib_mb_s / checksum_crc32c_mb_s   4 MiB buffers, one core
//   repo_ingest_mb_s / repo_ingest_vs_sha256   the server's chunk intake
//                     (SHA-256 verify of each received chunk + durable store,
//                     the backup job's thread and queue settings) over 256 MiB
//                     of distinct incompressible 4 MiB chunks, and its ratio
//                     to single-core SHA-256 of the same buffers in this run
//   repo_ingest_encrypted_mb_s / repo_ingest_encrypted_vs_sha256   the same
//                     into an encrypted repository (HMAC-SHA256 id verify,
//                     AES-256-GCM seal, store)
//   gc_chunks_per_s   a garbage collection over N chunk files (half of them
//                     named by a committed backup's index, half unreferenced
//                     and past the grace period)
// The collector reads only names and mtimes, so the chunk files are written
// without fsync to set up fast; their contents are not read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/sha256.h"
#include "server/catalog/sqlite_catalog.h"
#include "server/backup_job.h"
#include "server/chunk_intake.h"
#include "server/gc_job.h"
#include "server/repository/repo_key.h"

namespace {

using blkfleet::Sha256Digest;
namespace v1 = blkfleet::server::v1;

class BenchContext : public blkfleet::server::JobContext {
 public:
  const std::string& id() const override { return id_; }
  bool cancelled() const override { return false; }
  void SetCancelHook(std::function<void()>) override {}
  void SetPhase(const std::string&) override {}
  void SetTotals(uint64_t, uint64_t) override {}
  void AddDone(uint64_t, uint64_t) override {}
  void AddAttempt() override {}
  void SetBackupId(const std::string&) override {}
  void SetSummary(const std::string& s) override { summary = s; }
  std::string summary;

 private:
  std::string id_ = "bench";
};

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void ChecksumFigures() {
  std::string buf(4 << 20, '\0');
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 2654435761u >> 13);
  const int rounds = 256;  // 1 GiB
  volatile uint32_t sink = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < rounds; ++r) {
    sink = sink + static_cast<uint32_t>(
                      crc32_z(0, reinterpret_cast<const Bytef*>(buf.data()), buf.size()));
  }
  std::printf("checksum_crc32_zlib_mb_s %.0f MB/s\n", rounds * 4.194304 / Seconds(t0));
  t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < rounds; ++r) sink = sink + blkfleet::Crc32c(buf);
  std::printf("checksum_crc32c_mb_s %.0f MB/s (hardware %d)\n", rounds * 4.194304 / Seconds(t0),
              blkfleet::Crc32cIsHardware() ? 1 : 0);
}

// `name`: the figure's prefix; `key`: null for a plain repository.
int IngestFigure(const std::string& dir, const std::string& name,
                 const blkfleet::repo::RepoKey* key) {
  auto repo = blkfleet::repo::Repository::Open(dir + "/" + name, key);
  if (!repo.ok()) return std::cerr << repo.status() << "\n", 1;
  constexpr int kChunks = 64;
  constexpr size_t kChunkSize = 4 << 20;
  // Distinct incompressible chunks (xorshift), sent raw as an agent sends
  // data zstd does not shrink.
  std::vector<blkfleet::server::ReceivedChunk> chunks(kChunks);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < kChunks; ++i) {
    auto& c = chunks[i];
    c.index = static_cast<uint64_t>(i);
    c.length = kChunkSize;
    c.encoding = blkfleet::type::v1::CHUNK_ENCODING_RAW;
    c.data.resize(kChunkSize);
    for (size_t o = 0; o < kChunkSize; o += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(c.data.data() + o, &x, 8);
    }
  }
  // The physical limit: single-core SHA-256 of the same bytes.
  auto t0 = std::chrono::steady_clock::now();
  for (auto& c : chunks) c.digest = blkfleet::Sha256(c.data);
  const double sha_s = Seconds(t0);
  // An encrypted repository names chunks by HMAC: the ids the agent would send.
  if ((*repo)->encrypted()) {
    for (auto& c : chunks) c.digest = (*repo)->chunks().id_fn()(c.data);
  }
  const double mb = kChunks * kChunkSize / 1e6;
  const blkfleet::server::BackupOptions defaults;
  t0 = std::chrono::steady_clock::now();
  {
    blkfleet::server::ChunkIntake intake(&(*repo)->chunks(), defaults.intake_threads,
                                         static_cast<size_t>(defaults.intake_queue));
    for (auto& c : chunks) {
      if (absl::Status s = intake.Submit(std::move(c)); !s.ok()) {
        return std::cerr << s << "\n", 1;
      }
    }
    if (absl::Status s = intake.Drain(); !s.ok()) return std::cerr << s << "\n", 1;
    if (intake.chunks_stored() != kChunks) {
      return std::cerr << "stored " << intake.chunks_stored() << " of " << kChunks << "\n", 1;
    }
  }
  if (absl::Status s = (*repo)->chunks().SyncDirectories(); !s.ok()) {
    return std::cerr << s << "\n", 1;
  }
  const double ingest_s = Seconds(t0);
  if (!key) std::printf("sha256_single_core_same_run_mb_s %.0f MB/s\n", mb / sha_s);
  std::printf("%s_mb_s %.0f MB/s (%d threads)\n", name.c_str(), mb / ingest_s,
              defaults.intake_threads);
  std::printf("%s_vs_sha256 %.2f ratio\n", name.c_str(), sha_s / ingest_s);
  return 0;
}

int GcFigure(const std::string& dir, int chunks) {
  auto repo = blkfleet::repo::Repository::Open(dir + "/repo");
  if (!repo.ok()) return std::cerr << repo.status() << "\n", 1;
  auto cat = blkfleet::catalog::SqliteCatalog::Open(dir + "/catalog.db");
  if (!cat.ok()) return std::cerr << cat.status() << "\n", 1;
  blkfleet::repo::DeviceIndex index;
  index.chunk_size_bytes = 64 << 10;
  const int referenced = chunks / 2;
  index.device_size_bytes = static_cast<uint64_t>(referenced) * index.chunk_size_bytes;
  const std::string body(512, 'c');
  const struct timespec old[2] = {{time(nullptr) - 3 * 86400, 0}, {time(nullptr) - 3 * 86400, 0}};
  for (int i = 0; i < chunks; ++i) {
    Sha256Digest d = blkfleet::Sha256(absl::StrCat("chunk ", i));
    const std::string path = (*repo)->chunks().PathOf(d);
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0444);
    if (fd < 0 || ::write(fd, body.data(), body.size()) != static_cast<ssize_t>(body.size())) {
      return std::perror(path.c_str()), 1;
    }
    ::futimens(fd, old);
    ::close(fd);
    if (i < referenced) index.digests.push_back(d);
  }
  auto id = (*cat)->AllocateBackupId();
  auto sha = (*repo)->WriteIndex(*id, 0, index);
  v1::Backup b;
  b.set_id(*id);
  b.set_host("bench");
  auto* dev = b.add_devices();
  dev->set_device("vda");
  dev->set_size_bytes(index.device_size_bytes);
  dev->set_chunk_size_bytes(index.chunk_size_bytes);
  dev->set_index_sha256(blkfleet::DigestToBytes(*sha));
  auto msha = (*repo)->WriteManifest(b);
  if (absl::Status s = (*cat)->CommitBackup(b, *msha); !s.ok()) return std::cerr << s << "\n", 1;

  blkfleet::server::ChunkPins pins;
  BenchContext ctx;
  blkfleet::server::GcOptions opt;
  blkfleet::server::GcCounts counts;
  ::sync();
  auto t0 = std::chrono::steady_clock::now();
  absl::Status s = blkfleet::server::RunGc(cat->get(), repo->get(), &pins,
                                           blkfleet::Clock::Real(), opt, ctx, &counts);
  const double secs = Seconds(t0);
  if (!s.ok()) return std::cerr << s << "\n", 1;
  if (counts.removed != static_cast<uint64_t>(chunks - referenced)) {
    std::cerr << "unexpected result: " << ctx.summary << "\n";
    return 1;
  }
  std::printf("gc_chunks_per_s %.0f chunks/s (%d chunk files, %.2f s; %s)\n", chunks / secs,
              chunks, secs, ctx.summary.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: blkfleet-repo-bench SCRATCH_DIR [CHUNKS (default 100000)]\n";
    return 2;
  }
  const int chunks = argc > 2 ? std::atoi(argv[2]) : 100000;
  if (chunks < 2) return std::cerr << "CHUNKS must be at least 2\n", 2;
  ChecksumFigures();
  if (int rc = IngestFigure(argv[1], "repo_ingest", nullptr); rc != 0) return rc;
  const blkfleet::repo::RepoKey key{std::string(32, '\x5a')};  // a bench key, not secret
  if (int rc = IngestFigure(argv[1], "repo_ingest_encrypted", &key); rc != 0) return rc;
  return GcFigure(argv[1], chunks);
}
