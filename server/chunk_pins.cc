// SPDX-License-Identifier: Apache-2.0
#include "server/chunk_pins.h"

namespace blkfleet::server {

ChunkPins::Holder ChunkPins::Hold(ChunkPins* pins) {
  return Holder(pins, pins ? pins->NewHolder() : 0);
}

uint64_t ChunkPins::NewHolder() {
  absl::MutexLock l(&mu_);
  uint64_t id = next_holder_++;
  held_[id];
  return id;
}

void ChunkPins::Pin(uint64_t holder, std::span<const Sha256Digest> ds) {
  absl::MutexLock l(&mu_);
  auto settled = [this, ds]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (removing_.empty()) return true;
    for (const auto& d : ds) {
      if (removing_.count(d) != 0) return false;
    }
    return true;
  };
  mu_.Await(absl::Condition(&settled));
  DigestSet& set = held_[holder];
  for (const auto& d : ds) {
    set.insert(d);
    if (sweeping_) seen_in_sweep_.insert(d);
  }
}

void ChunkPins::Release(uint64_t holder) {
  absl::MutexLock l(&mu_);
  held_.erase(holder);
}

void ChunkPins::BeginSweep() {
  absl::MutexLock l(&mu_);
  sweeping_ = true;
  seen_in_sweep_.clear();
  for (const auto& [id, set] : held_) seen_in_sweep_.insert(set.begin(), set.end());
}

void ChunkPins::EndSweep() {
  absl::MutexLock l(&mu_);
  sweeping_ = false;
  DigestSet().swap(seen_in_sweep_);
}

bool ChunkPins::RemoveUnlessPinned(const Sha256Digest& d, const std::function<void()>& remove) {
  {
    absl::MutexLock l(&mu_);
    if (seen_in_sweep_.count(d) != 0 || removing_.count(d) != 0) return false;
    // Outside a sweep (not how the collector calls it), the live pins decide.
    for (const auto& [id, set] : held_) {
      if (set.count(d) != 0) return false;
    }
    removing_.insert(d);
  }
  remove();
  absl::MutexLock l(&mu_);
  removing_.erase(d);
  return true;
}

size_t ChunkPins::pinned() const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [id, set] : held_) n += set.size();
  return n;
}

}  // namespace blkfleet::server
