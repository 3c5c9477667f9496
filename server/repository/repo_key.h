// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_REPOSITORY_REPO_KEY_H_
#define BLKFLEET_SERVER_REPOSITORY_REPO_KEY_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/chunk_id.h"

namespace blkfleet::repo {

// The 32-byte master key of an encrypted repository (docs/formats.md, "Key
// file"). Never stored in the repository directory.
struct RepoKey {
  std::string bytes;  // 32 bytes
};

// Reads a key file: 64 hex digits (optionally followed by one newline) or
// exactly 32 raw bytes. FAILED_PRECONDITION when group or others have any
// permission on the file; INVALID_ARGUMENT for other content. Messages name
// `flag` and the path.
absl::StatusOr<RepoKey> LoadRepoKeyFile(const std::string& path, const std::string& flag);

// Writes a new random key (OpenSSL RAND_bytes) as 64 hex digits and a
// newline to `path`, mode 0400. ALREADY_EXISTS when the file exists (a key
// is never overwritten).
absl::Status GenerateRepoKeyFile(const std::string& path);

// The keys derived from the master key with HKDF-SHA256 (salt: the
// repository id; info: one label per key, docs/formats.md).
struct RepoSubkeys {
  ChunkIdFn chunk_id;        // HMAC-SHA256 chunk ids
  std::string chunk_enc;     // AES-256-GCM key of chunk payloads
  std::string metadata_mac;  // HMAC-SHA256 key of manifests
  std::string key_check;     // hex HMAC-SHA256 recorded in repo.json
};
RepoSubkeys DeriveRepoSubkeys(const RepoKey& key, std::string_view repo_id);

// AES-256-GCM with a random 96-bit nonce: `sealed` = nonce (12) ||
// ciphertext || tag (16). Thread-safe (a fresh cipher context per call).
class ChunkCipher {
 public:
  static constexpr size_t kNonceSize = 12;
  static constexpr size_t kTagSize = 16;
  static constexpr size_t kOverhead = kNonceSize + kTagSize;

  explicit ChunkCipher(std::string key) : key_(std::move(key)) {}
  absl::Status Seal(std::string_view aad, std::string_view plain, std::string* sealed) const;
  // DATA_LOSS when the tag does not authenticate `sealed` and `aad`.
  absl::Status Open(std::string_view aad, std::string_view sealed, std::string* plain) const;

 private:
  const std::string key_;
};

}  // namespace blkfleet::repo

#endif  // BLKFLEET_SERVER_REPOSITORY_REPO_KEY_H_
