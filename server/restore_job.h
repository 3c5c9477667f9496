// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_RESTORE_JOB_H_
#define BLKFLEET_SERVER_RESTORE_JOB_H_

#include <string>

#include "server/agent_client.h"

#include "absl/status/status.h"
#include "server/catalog/catalog.h"
#include "server/job_manager.h"
#include "server/repository/repository.h"

namespace blkfleet::server {

struct RestoreFileRequest {
  v1::Backup backup;     // from the catalog
  int device_ordinal = 0;
  std::string file_path;  // absolute
  bool overwrite = false;
  int reader_threads = 3;
};

// The body of a restore job to a file on the server: reads the device's
// index (checked against the catalog), then reads, verifies and writes the
// chunks with several threads in parallel into a temporary file beside the
// target, fsyncs it and renames it into place (without replacing an existing
// file unless `overwrite`). A missing or corrupt chunk fails the job with
// its digest and path, and the temporary file is removed.
absl::Status RunRestoreToFile(repo::Repository* repo, const RestoreFileRequest& request,
                              JobContext& ctx);

struct RestoreHostRequest {
  v1::Backup backup;  // from the catalog
  int device_ordinal = 0;
  std::string host;            // for messages
  std::string agent_address;   // of the host
  std::string target_device;   // path (kernel agent) or name (sim agent)
  int reader_threads = 3;
  // Chunks read and checked ahead of the one being sent (memory bound:
  // about this many chunks, plain plus compressed).
  int window_chunks = 8;
  int zstd_level = 1;
};

// The body of a restore job onto a device of a host: reads the device's
// index, reads and checks chunks with several threads ahead of the sender
// (each chunk's SHA-256 is checked by the repository), compresses them when
// that saves bytes, and streams them in order to the agent's WriteImage,
// which checks every digest again before writing and flushes the device at
// the end. A missing or damaged chunk, a refusal of the agent (allowlist,
// mounted, in a snapshot, too small) or a short answer fails the job with
// the cause; success is claimed only when the agent answers every byte
// written.
absl::Status RunRestoreToHostDevice(repo::Repository* repo, AgentConnector* agents,
                                    const RestoreHostRequest& request, JobContext& ctx);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_RESTORE_JOB_H_
