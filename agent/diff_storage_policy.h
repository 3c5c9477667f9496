// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_DIFF_STORAGE_POLICY_H_
#define BLKFLEET_AGENT_DIFF_STORAGE_POLICY_H_

// Where a CreateSnapshot may put its difference storage, decided by the
// agent's own configuration and never by the caller (docs/security.md,
// "Trust boundaries"). The agent runs as root and the backends write
// copy-on-write data onto whatever path they are handed (the sim backend
// truncates a named file at once, the kernel module claims a named block
// device), so a request path is only ever a name *below* the configured
// folder, resolved one component at a time without following symlinks, or
// one of the block devices the operator listed.
//
// Shared by both backends: the check runs in AgentService before any
// backend call, so a refusal creates, truncates and attaches nothing.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/backend.h"

namespace blkfleet::agent {

struct DiffStorageConfig {
  // The agent's difference storage folder (--diff-storage-dir): the default
  // storage, and the only tree a request may name a folder or file in.
  std::string dir;
  // Block devices a request may name, exactly as configured
  // (--diff-storage-device, kernel backend); empty: none.
  std::vector<std::string> devices;
  // Used when the request's limit is 0 (--diff-storage-limit).
  uint64_t default_limit_bytes = 1ull << 30;
  // Largest limit a request may ask for (--diff-storage-max-limit); 0: the
  // default limit.
  uint64_t max_limit_bytes = 0;
};

// The storage to hand to the backend for a request's `diff_storage_path`
// and `diff_storage_limit_bytes`:
//  - path empty: `config.dir`;
//  - one of `config.devices`, spelled as configured: that device;
//  - otherwise a path relative to `config.dir`, or absolute and starting
//    with it (as configured or as its real path), naming an existing folder
//    or regular file (one link only) below it. No component may be "..",
//    or a symlink; the returned path is the folder's real path joined with
//    the checked components, so the backend opens what was checked.
// Errors: INVALID_ARGUMENT naming diff_storage_path (NUL byte, too long,
// missing, neither folder nor regular file) or diff_storage_limit_bytes
// (above the maximum); PERMISSION_DENIED naming diff_storage_path and the
// configured places (outside the folder, "..", a symlink, a hard link, a
// block device not listed).
absl::StatusOr<DiffStorageSpec> ResolveDiffStorage(const DiffStorageConfig& config,
                                                   const std::string& requested_path,
                                                   uint64_t requested_limit_bytes);

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_DIFF_STORAGE_POLICY_H_
