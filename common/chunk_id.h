// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_CHUNK_ID_H_
#define BLKFLEET_COMMON_CHUNK_ID_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/sha256.h"

namespace blkfleet {

// How a chunk's id is computed from its plain data: SHA-256 (a plain
// repository) or HMAC-SHA256 under the repository's 32-byte chunk id key
// (an encrypted repository, docs/formats.md). Ids of both kinds are 32 bytes
// and travel in the same protobuf `sha256` fields. Cheap to copy.
class ChunkIdFn {
 public:
  static constexpr size_t kKeySize = 32;

  ChunkIdFn() = default;  // SHA-256
  // INVALID_ARGUMENT naming `field` unless `key` is exactly 32 bytes.
  static absl::StatusOr<ChunkIdFn> Keyed(std::string_view key, const std::string& field);

  Sha256Digest operator()(std::string_view data) const;
  bool keyed() const { return key_.has_value(); }
  // The key as bytes (for the StreamImage start message); empty for SHA-256.
  std::string KeyBytes() const;

 private:
  std::optional<std::array<uint8_t, kKeySize>> key_;
};

// HMAC-SHA256 of `data` under `key` (any length).
Sha256Digest HmacSha256(std::string_view key, std::string_view data);

// Compares two byte strings in time independent of where they differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_CHUNK_ID_H_
