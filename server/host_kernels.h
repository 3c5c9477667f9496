// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_HOST_KERNELS_H_
#define BLKFLEET_SERVER_HOST_KERNELS_H_

// What agents report of their kernel and blksnap module (AgentInfo.kernel),
// kept per host: in the catalog (Host.kernel) and in the metrics
// (blkfleet_host_module_ready, blkfleet_host_module_loaded).

#include <vector>

#include "absl/status/status.h"
#include "server/catalog/catalog.h"

namespace blkfleet::server {

// Stores the reports (one transaction) and updates each host's metrics.
// Reports of agents that send none (older agents: no running release) are
// skipped.
absl::Status RecordHostKernels(catalog::Catalog* catalog,
                               std::vector<catalog::HostKernelReport> reports);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_HOST_KERNELS_H_
