// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_EVENT_HUB_H_
#define BLKFLEET_AGENT_EVENT_HUB_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blkfleet/agent/v1/agent.pb.h"

namespace blkfleet::agent {

// Fans snapshot events out to WatchSnapshotEvents streams. Each subscriber
// has its own bounded queue; a subscriber too slow to keep up loses its
// oldest events rather than growing the agent's memory without bound.
class EventHub {
 public:
  class Subscription {
   public:
    // The next event, or nullopt after `timeout` or once the hub shuts down.
    std::optional<v1::SnapshotEvent> Next(absl::Duration timeout);
    // Events dropped because the queue was full.
    size_t dropped() const;

   private:
    friend class EventHub;
    explicit Subscription(std::string snapshot_id) : snapshot_id_(std::move(snapshot_id)) {}
    void Push(const v1::SnapshotEvent& e, size_t limit);
    void Close();

    const std::string snapshot_id_;  // empty: every snapshot
    mutable absl::Mutex mu_;
    std::deque<v1::SnapshotEvent> queue_ ABSL_GUARDED_BY(mu_);
    size_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
  };

  explicit EventHub(size_t queue_limit = 1024) : queue_limit_(queue_limit) {}

  // Events of `snapshot_id` (empty: of every snapshot) published from now on.
  std::shared_ptr<Subscription> Subscribe(const std::string& snapshot_id);
  void Unsubscribe(const std::shared_ptr<Subscription>& sub);
  void Publish(const v1::SnapshotEvent& event);
  // Wakes every subscriber for good (server shutdown).
  void Shutdown();

 private:
  const size_t queue_limit_;
  absl::Mutex mu_;
  std::vector<std::shared_ptr<Subscription>> subs_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_EVENT_HUB_H_
