// SPDX-License-Identifier: Apache-2.0
#include "agent/event_hub.h"

#include <algorithm>

namespace blkfleet::agent {

std::optional<v1::SnapshotEvent> EventHub::Subscription::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(
                           +[](Subscription* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
                             return s->closed_ || !s->queue_.empty();
                           },
                           this),
                       timeout);
  if (queue_.empty()) return std::nullopt;
  v1::SnapshotEvent e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

size_t EventHub::Subscription::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

void EventHub::Subscription::Push(const v1::SnapshotEvent& e, size_t limit) {
  if (!snapshot_id_.empty() && e.snapshot_id() != snapshot_id_) return;
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= limit) {
    queue_.pop_front();
    ++dropped_;
  }
  queue_.push_back(e);
}

void EventHub::Subscription::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

std::shared_ptr<EventHub::Subscription> EventHub::Subscribe(const std::string& snapshot_id) {
  std::shared_ptr<Subscription> sub(new Subscription(snapshot_id));
  absl::MutexLock lock(&mu_);
  if (shutdown_) sub->Close();
  subs_.push_back(sub);
  return sub;
}

void EventHub::Unsubscribe(const std::shared_ptr<Subscription>& sub) {
  absl::MutexLock lock(&mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), sub), subs_.end());
}

void EventHub::Publish(const v1::SnapshotEvent& event) {
  absl::MutexLock lock(&mu_);
  for (const auto& sub : subs_) sub->Push(event, queue_limit_);
}

void EventHub::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  for (const auto& sub : subs_) sub->Close();
}

}  // namespace blkfleet::agent
