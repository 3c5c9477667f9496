#ifndef BLKFLEET_SERVER_RESTORE_JOB_H_
#define BLKFLEET_SERVER_RESTORE_JOB_H_

#include <string>

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

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_RESTORE_JOB_H_
