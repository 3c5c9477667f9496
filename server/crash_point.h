// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_CRASH_POINT_H_
#define BLKFLEET_SERVER_CRASH_POINT_H_

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>

namespace blkfleet::server {

// A test hook for crash-safety tests: with BLKFLEET_CRASH_POINT=NAME[:N] in
// the environment, the N-th (default first) pass through CrashPoint("NAME")
// kills the process with SIGKILL, as a power cut or kill -9 would, with no
// destructor or flush running. Unset, it costs one load of a cached flag.
inline void CrashPoint(std::string_view name) {
  struct Config {
    std::string name;
    long nth = 1;
  };
  static const Config* config = [] {
    const char* v = std::getenv("BLKFLEET_CRASH_POINT");
    if (v == nullptr || *v == '\0') return static_cast<Config*>(nullptr);
    auto* c = new Config;
    std::string s(v);
    if (auto colon = s.find(':'); colon != std::string::npos) {
      c->nth = std::strtol(s.c_str() + colon + 1, nullptr, 10);
      s.resize(colon);
    }
    c->name = s;
    return c;
  }();
  static std::atomic<long> hits{0};
  if (config == nullptr || name != config->name) return;
  if (hits.fetch_add(1) + 1 == config->nth) ::kill(::getpid(), SIGKILL);
}

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_CRASH_POINT_H_
