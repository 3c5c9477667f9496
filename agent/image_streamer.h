// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_IMAGE_STREAMER_H_
#define BLKFLEET_AGENT_IMAGE_STREAMER_H_

// The sending side of StreamImage, apart from gRPC: reads the chunks of a
// snapshot image on a thread pool (read, SHA-256, zstd per chunk, several
// chunks in flight) and hands them to `send` in index order.
//
// Memory bound: chunks are admitted while the plain bytes in flight stay
// within `window_bytes` (at least one chunk is always admitted). A chunk in
// flight holds at most its plain buffer and its encoded payload, so a stream
// holds about 2 x window_bytes plus the one message gRPC is sending.

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "agent/backend.h"
#include "agent/thread_pool.h"
#include "blkfleet/agent/v1/agent.pb.h"
#include "common/chunk_id.h"
#include "common/sha256.h"

namespace blkfleet::agent {

struct ImageStreamPlan {
  SnapshotImage* image = nullptr;
  uint32_t chunk_size = 0;
  // Ascending, non-overlapping, inside the image; resume already applied.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [first, first + count)
  // Chunk ids: SHA-256, or HMAC-SHA256 under the stream's chunk id key.
  ChunkIdFn id_fn;
  // Digests the receiver has: such chunks go as DIGEST_ONLY.
  absl::flat_hash_set<Sha256Digest, Sha256DigestHash> known;
  bool compress = true;
  int zstd_level = 1;
  uint64_t window_bytes = 32ull << 20;
};

// Streams the planned chunks. `send` returns false when the receiver is
// gone (the stream then ends with CANCELLED); `cancelled` is polled between
// chunks. Errors of image reads end the stream with their status (ABORTED
// for a corrupted snapshot, DATA_LOSS for I/O errors). Every chunk with
// data is sent before any DIGEST_ONLY reference to it on the same stream.
absl::StatusOr<v1::StreamImageSummary> StreamImageChunks(
    const ImageStreamPlan& plan, ThreadPool* pool,
    const std::function<bool(v1::StreamImageResponse&)>& send,
    const std::function<bool()>& cancelled);

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_IMAGE_STREAMER_H_
