// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_AGENT_METRICS_H_
#define BLKFLEET_AGENT_AGENT_METRICS_H_

// The agent's metrics (docs/operations.md, "Monitoring"): one function per
// recording point, so that the names and help texts live here only.

#include <cstdint>

namespace blkfleet::agent::metrics {

// Registers every agent metric, so that all series exist (at zero) from the
// first scrape on: rate() and increase() need the zero.
void Init();

// A no-space (overflow) or corrupted event of a snapshot.
void SnapshotEvent(bool overflow);
void LeaseExpired();
// One chunk of a StreamImage: plain bytes read from the image, payload
// bytes sent (0 for a digest-only reference).
void ChunkStreamed(uint64_t bytes_read, uint64_t bytes_sent);
// A StreamImage that ended successfully.
void StreamFinished(uint64_t bytes_read, double seconds);
// A ReadCbtMap call (successful or not).
void CbtMapRead(double seconds);

// The state the scrape reads: snapshots held and their difference storage.
struct SnapshotUsage {
  int snapshots = 0;
  uint64_t diff_storage_used_bytes = 0;
  uint64_t diff_storage_limit_bytes = 0;
};
void SetSnapshotUsage(const SnapshotUsage& usage);

}  // namespace blkfleet::agent::metrics

#endif  // BLKFLEET_AGENT_AGENT_METRICS_H_
