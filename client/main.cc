// SPDX-License-Identifier: Apache-2.0
// blkfleet: the operators' command line tool (see `blkfleet --help`).
#include <unistd.h>

#include <iostream>

#include "client/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  blkfleet::cli::CliIo io{std::cout, std::cerr, ::isatty(STDERR_FILENO) == 1};
  return blkfleet::cli::RunCli(args, io);
}
