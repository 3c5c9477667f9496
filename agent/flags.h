// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_FLAGS_H_
#define BLKFLEET_AGENT_FLAGS_H_

// Parsers of blkfleet-agent's command-line values.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "agent/sim_backend.h"

namespace blkfleet::agent {

// "4096", "64KiB", "64MiB", "2GiB", "1TiB" (binary units; also K/M/G/T and
// KB/MB/GB/TB as binary, any case). INVALID_ARGUMENT otherwise or on overflow.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text);

// "NAME=SIZE", e.g. "vda=64MiB".
absl::StatusOr<SimDeviceSpec> ParseSimDevice(const std::string& text);

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_FLAGS_H_
