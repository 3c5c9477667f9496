// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_TOOLS_REPO_BUILDER_H_
#define BLKFLEET_TESTS_TOOLS_REPO_BUILDER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "blkfleet/server/v1/server.pb.h"
#include "server/repository/repository.h"

namespace blkfleet::testing {

// Writes a full backup of one device straight into a repository, the way the
// server's backup job lays it out (chunks, index, manifest), from an image
// file: so tests and benchmarks of what reads backups (the image reader, the
// NBD export) get a backup of any size without an agent. Holes of a sparse
// image are not read (SEEK_DATA); they become all-zero chunks.
struct BackupSpec {
  std::string backup_id = "1";
  std::string host = "test-host";
  std::string device = "/dev/vdb";
  uint32_t chunk_size_bytes = 4u << 20;
};
absl::StatusOr<blkfleet::server::v1::Backup> WriteBackupFromImage(repo::Repository* repo,
                                                                  const std::string& image_path,
                                                                  const BackupSpec& spec);

}  // namespace blkfleet::testing

#endif  // BLKFLEET_TESTS_TOOLS_REPO_BUILDER_H_
