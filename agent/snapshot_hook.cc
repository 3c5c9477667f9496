// SPDX-License-Identifier: Apache-2.0
#include "agent/snapshot_hook.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace blkfleet::agent {

absl::StatusOr<HookProcess> HookProcess::Start(const std::string& program,
                                               const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int err = ::posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), environ);
  if (err != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot hook ", program, ": cannot start: ", std::strerror(err)));
  }
  return HookProcess(pid);
}

HookProcess::HookProcess(HookProcess&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }

HookProcess& HookProcess::operator=(HookProcess&& other) noexcept {
  if (this != &other) {
    (void)Wait(absl::ZeroDuration());
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}

HookProcess::~HookProcess() { (void)Wait(absl::ZeroDuration()); }

absl::Status HookProcess::Wait(absl::Duration timeout) {
  if (pid_ < 0) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  bool killed = false;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, killed ? 0 : WNOHANG);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) {
      const int err = errno;
      pid_ = -1;
      return absl::InternalError(absl::StrCat("snapshot hook: waitpid: ", std::strerror(err)));
    }
    if (r == 0) {
      if (absl::Now() >= deadline) {
        ::kill(pid_, SIGKILL);
        killed = true;
        continue;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  const pid_t pid = pid_;
  pid_ = -1;
  if (killed) {
    return absl::DeadlineExceededError(
        absl::StrCat("snapshot hook (pid ", pid, ") ran past ", absl::FormatDuration(timeout),
                     " and was killed"));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (WIFEXITED(status)) {
    return absl::AbortedError(absl::StrCat("snapshot hook exited with status ",
                                           WEXITSTATUS(status)));
  }
  return absl::AbortedError(
      absl::StrCat("snapshot hook ended by signal ", WIFSIGNALED(status) ? WTERMSIG(status) : 0));
}

}  // namespace blkfleet::agent
