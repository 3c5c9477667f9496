// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_CHUNK_PINS_H_
#define BLKFLEET_SERVER_CHUNK_PINS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/sha256.h"

namespace blkfleet::server {

// The chunks that running jobs rely on but that no committed index names yet:
// what garbage collection must not delete although its mark phase did not see
// them (docs/server.md, "Garbage collection").
//
// A backup pins its base index's digests after reading it, and each received
// digest before it stores (or finds) the chunk file; it releases its pins
// once it has committed or failed. A sweep starts with BeginSweep() before
// the collector reads the catalog; from then on every digest pinned (then or
// later, even if released in between) is kept until EndSweep(). The
// collector removes a file only through RemoveUnlessPinned(), which holds the
// removal ordered with Pin(): a Pin() either comes first (the file stays) or
// waits for the removal to finish (the file is gone, so the backup sees it
// missing and writes it again). Thread-safe.
class ChunkPins {
 public:
  // One job's pins; released by the destructor.
  class Holder {
   public:
    Holder(ChunkPins* pins, uint64_t id) : pins_(pins), id_(id) {}
    ~Holder() {
      if (pins_) pins_->Release(id_);
    }
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;

    void Pin(const Sha256Digest& d) {
      if (pins_) pins_->Pin(id_, {&d, 1});
    }
    void PinAll(std::span<const Sha256Digest> ds) {
      if (pins_) pins_->Pin(id_, ds);
    }

   private:
    ChunkPins* const pins_;
    const uint64_t id_;
  };

  // `pins` may be null: a holder that pins nothing (no collector runs).
  static Holder Hold(ChunkPins* pins);

  // At most one sweep at a time (the collector job is exclusive).
  void BeginSweep();
  void EndSweep();
  // Runs `remove` unless `d` is pinned now or was since BeginSweep. Returns
  // whether it ran `remove`. `remove` runs outside the lock (removals run in
  // parallel); a Pin() of `d` meanwhile waits until it returned.
  bool RemoveUnlessPinned(const Sha256Digest& d, const std::function<void()>& remove);
  // Digests pinned now (tests, metrics).
  size_t pinned() const;

 private:
  uint64_t NewHolder();
  void Pin(uint64_t holder, std::span<const Sha256Digest> ds);
  void Release(uint64_t holder);

  using DigestSet = std::unordered_set<Sha256Digest, Sha256DigestHash>;
  mutable absl::Mutex mu_;
  uint64_t next_holder_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, DigestSet> held_ ABSL_GUARDED_BY(mu_);
  bool sweeping_ ABSL_GUARDED_BY(mu_) = false;
  DigestSet seen_in_sweep_ ABSL_GUARDED_BY(mu_);
  DigestSet removing_ ABSL_GUARDED_BY(mu_);
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_CHUNK_PINS_H_
