// SPDX-License-Identifier: Apache-2.0
#include "server/snapshot_release.h"

#include <chrono>
#include <iostream>

namespace blkfleet::server {

namespace av1 = ::blkfleet::agent::v1;

SnapshotReleaser::SnapshotReleaser(catalog::Catalog* catalog, AgentConnector* agents,
                                   std::vector<catalog::HeldSnapshot> held, absl::Duration retry)
    : catalog_(catalog), agents_(agents), held_(std::move(held)), retry_(retry) {
  if (held_.empty()) {
    done_.Notify();
    return;
  }
  thread_ = std::thread([this] { Run(); });
}

SnapshotReleaser::~SnapshotReleaser() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

bool SnapshotReleaser::Release(const catalog::HeldSnapshot& h) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  av1::DestroySnapshotRequest req;
  req.set_id(h.snapshot_id);
  req.set_allow_missing(true);
  av1::DestroySnapshotResponse resp;
  grpc::Status s = agents_->Stub(h.agent_address)->DestroySnapshot(&ctx, req, &resp);
  if (!s.ok()) {
    std::cerr << "blkfleet-server: release snapshot " << h.snapshot_id << " of job " << h.job_id
              << " on host " << h.host << " (" << h.agent_address
              << "): " << s.error_message() << "; retrying\n";
    return false;
  }
  std::cerr << "blkfleet-server: released snapshot " << h.snapshot_id << " on host " << h.host
            << ", held by job " << h.job_id << " when the server stopped\n";
  return true;
}

void SnapshotReleaser::Run() {
  const absl::Time begin = absl::Now();
  std::vector<catalog::HeldSnapshot> pending = held_;
  while (!pending.empty()) {
    std::vector<catalog::HeldSnapshot> again;
    for (const auto& h : pending) {
      bool forget = Release(h);
      if (!forget && absl::Now() >= begin + absl::Milliseconds(h.lease_ms)) {
        std::cerr << "blkfleet-server: gave up releasing snapshot " << h.snapshot_id
                  << " on host " << h.host << ": its lease has ended by now\n";
        forget = true;
      }
      if (!forget) {
        again.push_back(h);
      } else if (absl::Status f = catalog_->ForgetHeldSnapshot(h.snapshot_id); !f.ok()) {
        std::cerr << "blkfleet-server: forget held snapshot " << h.snapshot_id << ": " << f
                  << "\n";
      }
    }
    pending.swap(again);
    if (!pending.empty() && stop_.WaitForNotificationWithTimeout(retry_)) break;
  }
  done_.Notify();
}

}  // namespace blkfleet::server
