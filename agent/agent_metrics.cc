// SPDX-License-Identifier: Apache-2.0
#include "agent/agent_metrics.h"

#include "common/metrics.h"

namespace blkfleet::agent::metrics {
namespace {
namespace m = ::blkfleet::metrics;

struct Handles {
  m::Counter no_space = m::GetCounter(
      "blkfleet_agent_snapshot_events_total",
      "Snapshot events from the backend: no_space (the difference storage overflowed) and "
      "corrupted (the snapshot became unusable)",
      {{"kind", "no_space"}});
  m::Counter corrupted =
      m::GetCounter("blkfleet_agent_snapshot_events_total", "", {{"kind", "corrupted"}});
  m::Counter lease_expiries = m::GetCounter(
      "blkfleet_agent_lease_expiries_total",
      "Snapshots the agent destroyed because their lease ran out without renewal");
  m::Counter read = m::GetCounter("blkfleet_agent_image_read_bytes_total",
                                  "Bytes of snapshot images read for StreamImage");
  m::Counter sent = m::GetCounter(
      "blkfleet_agent_image_sent_bytes_total",
      "Chunk payload bytes sent by StreamImage (after compression; digest-only chunks send none)");
  m::Counter chunks = m::GetCounter("blkfleet_agent_image_chunks_read_total",
                                    "Chunks of snapshot images read for StreamImage");
  // 1 MiB/s .. 4 GiB/s
  m::Histogram throughput = m::GetHistogram(
      "blkfleet_agent_stream_throughput_bytes_per_second",
      "Image bytes read per second of each completed StreamImage",
      m::ExponentialBuckets(1 << 20, 2, 13));
  // 10 ms .. ~45 min
  m::Histogram stream_duration =
      m::GetHistogram("blkfleet_agent_stream_duration_seconds",
                      "Duration of each completed StreamImage", m::ExponentialBuckets(0.01, 4, 10));
  // 100 us .. ~6 s
  m::Histogram cbt = m::GetHistogram(
      "blkfleet_agent_cbt_map_read_duration_seconds",
      "Duration of ReadCbtMap calls (the CBT map of one device of a snapshot)",
      m::ExponentialBuckets(0.0001, 3, 11));
  m::Gauge held = m::GetGauge("blkfleet_agent_snapshots", "Snapshots the agent holds now");
  m::Gauge used = m::GetGauge("blkfleet_agent_diff_storage_used_bytes",
                              "Difference storage used by the snapshots held now (sum)");
  m::Gauge limit = m::GetGauge("blkfleet_agent_diff_storage_limit_bytes",
                               "Difference storage limit of the snapshots held now (sum)");
};

const Handles& H() {
  static const Handles* h = new Handles;
  return *h;
}

}  // namespace

void Init() { H(); }

void SnapshotEvent(bool overflow) { (overflow ? H().no_space : H().corrupted).Increment(); }

void LeaseExpired() { H().lease_expiries.Increment(); }

void ChunkStreamed(uint64_t bytes_read, uint64_t bytes_sent) {
  H().read.Increment(static_cast<double>(bytes_read));
  H().sent.Increment(static_cast<double>(bytes_sent));
  H().chunks.Increment();
}

void StreamFinished(uint64_t bytes_read, double seconds) {
  if (seconds > 0) H().throughput.Observe(static_cast<double>(bytes_read) / seconds);
  H().stream_duration.Observe(seconds);
}

void CbtMapRead(double seconds) { H().cbt.Observe(seconds); }

void SetSnapshotUsage(const SnapshotUsage& usage) {
  H().held.Set(usage.snapshots);
  H().used.Set(static_cast<double>(usage.diff_storage_used_bytes));
  H().limit.Set(static_cast<double>(usage.diff_storage_limit_bytes));
}

}  // namespace blkfleet::agent::metrics
