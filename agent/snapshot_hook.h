// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_SNAPSHOT_HOOK_H_
#define BLKFLEET_AGENT_SNAPSHOT_HOOK_H_

// A program the agent runs after each take, beside the backup that reads the
// snapshot: for example an independent checksum of every snapshot image, or
// an application's "thaw" step. The snapshot stays until the program ends (or
// its time runs out): destroying a snapshot waits for its hook.

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace blkfleet::agent {

class HookProcess {
 public:
  // Starts `program` with `args` (argv[1..]); its stdout and stderr are the
  // agent's. INVALID_ARGUMENT when the program cannot be started.
  static absl::StatusOr<HookProcess> Start(const std::string& program,
                                           const std::vector<std::string>& args);

  HookProcess(HookProcess&& other) noexcept;
  HookProcess& operator=(HookProcess&& other) noexcept;
  HookProcess(const HookProcess&) = delete;
  HookProcess& operator=(const HookProcess&) = delete;
  // Kills and reaps a hook nobody waited for.
  ~HookProcess();

  // Waits up to `timeout` for the program to end; past that kills it.
  // OK on exit status 0; otherwise an error naming the status or signal, or
  // DEADLINE_EXCEEDED when it was killed for running too long.
  absl::Status Wait(absl::Duration timeout);

 private:
  explicit HookProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_SNAPSHOT_HOOK_H_
