// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_VERIFY_JOB_H_
#define BLKFLEET_SERVER_VERIFY_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/catalog/catalog.h"
#include "server/job_manager.h"
#include "server/repository/repository.h"

namespace blkfleet::server {

struct VerifyOptions {
  // Chunks read and checked at once: the reads of some overlap the hashing
  // of others.
  int threads = 4;
  // Bad chunks named in the job's error; the count covers all of them.
  size_t max_reported = 10;
};

// Where a chunk is used in one backup: device name and chunk positions.
struct ChunkUse {
  std::string device;
  std::vector<uint64_t> chunk_indexes;
};

// "3, 7-9, 12" (at most `max_ranges` ranges, then "...").
std::string FormatIndexes(const std::vector<uint64_t>& sorted, size_t max_ranges = 8);

// The body of a verify job (docs/server.md, "Verify"): checks the manifest
// against its catalog digest and the catalog's devices, every index against
// its digest and checksum, then reads every distinct chunk of the backup
// (several at once) and checks its header, stored-bytes checksum, decoding
// and SHA-256. Fails with DATA_LOSS naming each bad chunk (digest, device,
// chunk indexes) and the other backups that use it. The summary counts what
// was checked.
absl::Status RunVerify(catalog::Catalog* catalog, repo::Repository* repo,
                       const std::string& backup_id, const VerifyOptions& options,
                       JobContext& ctx);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_VERIFY_JOB_H_
