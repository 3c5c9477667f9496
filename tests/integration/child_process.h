// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_INTEGRATION_CHILD_PROCESS_H_
#define BLKFLEET_TESTS_INTEGRATION_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace blkfleet::testing {

// A real daemon process started by a test. Output goes to a log file so a
// failing test can show it. The process is killed (SIGKILL) when the object
// dies, so a failed assertion never leaves a daemon behind.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] (a path) with the arguments; stdout and stderr go to
  // `log_path`.
  absl::Status Start(const std::vector<std::string>& argv, const std::string& log_path);

  // Waits until the daemon wrote "host:port" into `port_file` (the
  // daemons' --port-file flag) and returns it; fails if the process exits
  // first or `timeout` passes.
  absl::StatusOr<std::string> WaitForAddress(const std::string& port_file, absl::Duration timeout);

  // Sends `sig` and reaps the process. Returns the wait status.
  int Kill(int sig);
  // Waits for the process to exit on its own within `timeout`; returns the
  // exit code, or an error on timeout (the process is then killed).
  absl::StatusOr<int> Wait(absl::Duration timeout);

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // The last `max_bytes` of the log, for failure messages.
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// Runs a command to completion, capturing stdout (stderr is appended when
// `merge_stderr`). Returns the exit code and the output.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunCommand(const std::vector<std::string>& argv, bool merge_stderr = true);

}  // namespace blkfleet::testing

#endif  // BLKFLEET_TESTS_INTEGRATION_CHILD_PROCESS_H_
