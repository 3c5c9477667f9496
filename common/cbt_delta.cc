// SPDX-License-Identifier: Apache-2.0
#include "common/cbt_delta.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace blkfleet {

uint64_t ChunkCount(uint64_t device_size, uint32_t chunk_size) {
  return device_size / chunk_size + (device_size % chunk_size != 0 ? 1 : 0);
}

namespace {

// Why the map of `v` cannot describe its device, or nullopt.
std::optional<std::string> GeometryProblem(const CbtDeviceView& v) {
  if (v.chunk_size_bytes == 0) return "chunk size is 0";
  if (v.cbt.block_size_bytes == 0) return "CBT block size is 0";
  uint64_t needed = ChunkCount(v.device_size_bytes, v.cbt.block_size_bytes);
  if (needed != v.cbt.block_count) {
    return absl::StrCat("CBT map has ", v.cbt.block_count, " blocks of ", v.cbt.block_size_bytes,
                        " bytes, the device of ", v.device_size_bytes, " bytes needs ", needed);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> FullReadReason(const std::optional<CbtDeviceView>& base,
                                          const CbtDeviceView& now) {
  if (!base.has_value()) return "no previous backup";
  if (now.cbt.generation.IsNil()) return "device reports no CBT generation";
  if (base->cbt.generation != now.cbt.generation) return "CBT generation changed";
  if (now.cbt.change_number <= base->cbt.change_number) {
    return absl::StrCat("CBT change number did not advance (", base->cbt.change_number, " -> ",
                        now.cbt.change_number, ")");
  }
  if (base->device_size_bytes != now.device_size_bytes) {
    return absl::StrCat("device size changed (", base->device_size_bytes, " -> ",
                        now.device_size_bytes, " bytes)");
  }
  if (base->chunk_size_bytes != now.chunk_size_bytes) {
    return absl::StrCat("chunk size changed (", base->chunk_size_bytes, " -> ",
                        now.chunk_size_bytes, " bytes)");
  }
  if (base->cbt.block_size_bytes != now.cbt.block_size_bytes) {
    return absl::StrCat("CBT block size changed (", base->cbt.block_size_bytes, " -> ",
                        now.cbt.block_size_bytes, " bytes)");
  }
  if (auto p = GeometryProblem(now)) return *p;
  return std::nullopt;
}

absl::StatusOr<std::vector<ChunkSpan>> ChangedChunks(std::span<const uint8_t> frozen_map,
                                                     const CbtDeviceView& now,
                                                     uint32_t base_change_number) {
  if (auto p = GeometryProblem(now)) return absl::InvalidArgumentError(*p);
  if (frozen_map.size() != now.cbt.block_count) {
    return absl::InvalidArgumentError(absl::StrCat("CBT map holds ", frozen_map.size(),
                                                   " bytes, expected ", now.cbt.block_count));
  }
  const uint64_t bs = now.cbt.block_size_bytes;
  const uint64_t cs = now.chunk_size_bytes;
  const uint64_t dev = now.device_size_bytes;
  std::vector<ChunkSpan> spans;
  for (uint64_t b = 0; b < frozen_map.size(); ++b) {
    if (frozen_map[b] <= base_change_number) continue;
    const uint64_t begin = b * bs;
    const uint64_t end = std::min(begin + bs, dev);  // exclusive, > begin
    const uint64_t first = begin / cs;
    const uint64_t last = (end - 1) / cs;  // inclusive
    if (!spans.empty() && spans.back().first + spans.back().count >= first) {
      // Blocks come in ascending order: extend the open range.
      uint64_t new_end = std::max(spans.back().first + spans.back().count, last + 1);
      spans.back().count = new_end - spans.back().first;
    } else {
      spans.push_back(ChunkSpan{first, last + 1 - first});
    }
  }
  return spans;
}

uint64_t CountChunks(std::span<const ChunkSpan> spans) {
  uint64_t n = 0;
  for (const auto& s : spans) n += s.count;
  return n;
}

}  // namespace blkfleet
