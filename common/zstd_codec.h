// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_ZSTD_CODEC_H_
#define BLKFLEET_COMMON_ZSTD_CODEC_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace blkfleet {

// One-shot zstd compression of chunk-sized buffers. A ZstdCodec keeps its
// compression and decompression contexts between calls, so reuse one per
// thread; it is not thread-safe.
class ZstdCodec {
 public:
  ZstdCodec();
  ~ZstdCodec();
  ZstdCodec(const ZstdCodec&) = delete;
  ZstdCodec& operator=(const ZstdCodec&) = delete;

  // Replaces *out with one zstd frame holding `in` (with its content size).
  absl::Status Compress(std::span<const uint8_t> in, int level, std::string* out);

  // Replaces *out with the decompressed frame. Fails with DATA_LOSS when the
  // frame is corrupt or does not hold exactly `expected_size` bytes, so a
  // damaged chunk can never pass for a shorter or longer one.
  absl::Status Decompress(std::string_view frame, size_t expected_size, std::string* out);

 private:
  struct Contexts;
  Contexts* ctx_;  // owned
};

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_ZSTD_CODEC_H_
