// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_SHA256_H_
#define BLKFLEET_COMMON_SHA256_H_

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace blkfleet {

// A SHA-256 digest: the identity of a chunk in an unencrypted repository.
using Sha256Digest = std::array<uint8_t, 32>;

// Hashes `data` with OpenSSL (SHA-NI where the CPU has it).
Sha256Digest Sha256(std::span<const uint8_t> data);
Sha256Digest Sha256(std::string_view data);

// Lower-case hex, 64 characters.
std::string DigestToHex(const Sha256Digest& digest);
// Parses 64 hex characters; nullopt for anything else.
std::optional<Sha256Digest> DigestFromHex(std::string_view hex);
// Interprets a 32-byte binary string (as carried in protobuf `bytes`);
// nullopt when the size is wrong.
std::optional<Sha256Digest> DigestFromBytes(std::string_view bytes);
inline std::string DigestToBytes(const Sha256Digest& d) {
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

struct Sha256DigestHash {
  size_t operator()(const Sha256Digest& d) const noexcept {
    // The digest is uniformly distributed: its first bytes are a fine hash.
    size_t h;
    static_assert(sizeof(h) <= sizeof(Sha256Digest));
    __builtin_memcpy(&h, d.data(), sizeof(h));
    return h;
  }
};

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_SHA256_H_
