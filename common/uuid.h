// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_UUID_H_
#define BLKFLEET_COMMON_UUID_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace blkfleet {

// A 16-byte id (blksnap snapshot ids, CBT generation ids).
struct Uuid {
  std::array<uint8_t, 16> bytes{};

  // Random version-4 UUID from OpenSSL's CSPRNG.
  static Uuid Random();
  // Parses the 36-character text form (any case); nullopt otherwise.
  static std::optional<Uuid> Parse(std::string_view text);
  // From 16 raw bytes (protobuf `bytes`); nullopt when the size is wrong.
  static std::optional<Uuid> FromBytes(std::string_view raw);

  // Lower-case 8-4-4-4-12 text.
  std::string ToString() const;
  std::string ToBytes() const {
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  bool IsNil() const;

  friend bool operator==(const Uuid&, const Uuid&) = default;
  friend auto operator<=>(const Uuid&, const Uuid&) = default;
};

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_UUID_H_
