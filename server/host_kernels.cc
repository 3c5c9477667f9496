// SPDX-License-Identifier: Apache-2.0
#include "server/host_kernels.h"

#include <algorithm>

#include "server/server_metrics.h"

namespace blkfleet::server {

absl::Status RecordHostKernels(catalog::Catalog* catalog,
                               std::vector<catalog::HostKernelReport> reports) {
  reports.erase(std::remove_if(reports.begin(), reports.end(),
                               [](const catalog::HostKernelReport& r) {
                                 return r.report.running_release().empty();
                               }),
                reports.end());
  if (absl::Status st = catalog->PutHostKernels(reports); !st.ok()) return st;
  for (const catalog::HostKernelReport& r : reports) metrics::SetHostKernel(r.host, r.report);
  return absl::OkStatus();
}

}  // namespace blkfleet::server
