// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_CLIENT_CLI_H_
#define BLKFLEET_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace blkfleet::cli {

// Where the CLI writes, and whether progress lines may redraw (a terminal).
struct CliIo {
  std::ostream& out;
  std::ostream& err;
  bool progress_tty = false;
};

// Runs `blkfleet <args...>` (args without the program name) and returns the
// exit code: 0 on success; 1 when the server refused a call, could not be
// reached, or a waited-for job did not succeed; CLI11's codes for usage
// errors. The server address comes from --server, else $BLKFLEET_SERVER,
// else 127.0.0.1:7480.
int RunCli(const std::vector<std::string>& args, CliIo io);

}  // namespace blkfleet::cli

#endif  // BLKFLEET_CLIENT_CLI_H_
