// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_SNAPSHOT_RELEASE_H_
#define BLKFLEET_SERVER_SNAPSHOT_RELEASE_H_

#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/agent_client.h"
#include "server/catalog/catalog.h"

namespace blkfleet::server {

// Releases the snapshots that backup jobs of an earlier server process held
// when it died (Catalog::ListHeldSnapshots, read before any job of this
// process starts): each is destroyed on its agent (allow_missing, so one
// the lease already ended counts as released) and then forgotten. An agent
// that does not answer is asked again every `retry` until the snapshot's
// lease must have ended (lease_ms after the release began, since a job may
// have renewed it just before the crash); then it is forgotten with a log
// line. The work runs on its own thread; the destructor stops it.
class SnapshotReleaser {
 public:
  SnapshotReleaser(catalog::Catalog* catalog, AgentConnector* agents,
                   std::vector<catalog::HeldSnapshot> held, absl::Duration retry = absl::Seconds(5));
  ~SnapshotReleaser();

  // Blocks until every snapshot was released or given up (tests).
  void WaitDone() { done_.WaitForNotification(); }

 private:
  void Run();
  // One attempt; true once the snapshot is gone from the agent.
  bool Release(const catalog::HeldSnapshot& h);

  catalog::Catalog* const catalog_;
  AgentConnector* const agents_;
  std::vector<catalog::HeldSnapshot> held_;
  const absl::Duration retry_;
  absl::Notification stop_;
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_SNAPSHOT_RELEASE_H_
