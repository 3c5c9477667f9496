// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_CBT_DELTA_H_
#define BLKFLEET_COMMON_CBT_DELTA_H_

// The arithmetic of incremental backups from change block tracking (CBT).
//
// A snapshot reports, per device, its CBT state (generation id, change number
// c, block size, block count) and a frozen map with one byte per CBT block:
// the change number of the snapshot after which the block last changed. A
// backup based on a snapshot taken at (G, c) may read only the chunks that
// cover a block whose byte is greater than c, provided the new snapshot is of
// the same generation with a larger change number and the geometry matches.
// Anything else (no base, new generation, c' <= c, unusable geometry) means
// every chunk must be read. Shared by the server and by the sim backend's
// tests so that both use one definition.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/uuid.h"

namespace blkfleet {

// CBT state of one device at one snapshot (mirror of blkfleet.type.v1.CbtState).
struct CbtPoint {
  Uuid generation;
  uint32_t change_number = 0;
  uint32_t block_size_bytes = 0;
  uint32_t block_count = 0;
};

// A device as backed up: its size, the chunk size of its index and the CBT
// state of the snapshot it was read from.
struct CbtDeviceView {
  uint64_t device_size_bytes = 0;
  uint32_t chunk_size_bytes = 0;
  CbtPoint cbt;
};

// A half-open range of chunk indexes [first, first + count).
struct ChunkSpan {
  uint64_t first = 0;
  uint64_t count = 0;
  friend bool operator==(const ChunkSpan&, const ChunkSpan&) = default;
};

// Number of chunks of `chunk_size` covering `device_size` (the last one may
// be shorter). chunk_size must be non-zero.
uint64_t ChunkCount(uint64_t device_size, uint32_t chunk_size);

// Why a backup of `now` cannot be an incremental of `base`, or nullopt when
// the frozen map of `now` tells exactly what changed since `base`. The reason
// is text for operators ("CBT generation changed").
std::optional<std::string> FullReadReason(const std::optional<CbtDeviceView>& base,
                                          const CbtDeviceView& now);

// The chunks covering every block whose map byte is greater than
// `base_change_number`, ascending, merged into maximal ranges. A CBT block may
// span several chunks and a chunk may span several blocks; the last block and
// the last chunk may be partial. Fails with INVALID_ARGUMENT when the map does
// not have one byte per block of `now` or the geometry is degenerate; call it
// only when FullReadReason() returned nullopt.
absl::StatusOr<std::vector<ChunkSpan>> ChangedChunks(std::span<const uint8_t> frozen_map,
                                                     const CbtDeviceView& now,
                                                     uint32_t base_change_number);

// Total number of chunks in `spans`.
uint64_t CountChunks(std::span<const ChunkSpan> spans);

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_CBT_DELTA_H_
