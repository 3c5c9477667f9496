// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_REPOSITORY_CHUNK_STORE_H_
#define BLKFLEET_SERVER_REPOSITORY_CHUNK_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/chunk_id.h"
#include "common/sha256.h"
#include "common/zstd_codec.h"
#include "server/repository/repo_key.h"

namespace blkfleet::repo {

// How the stored bytes of a chunk encode its plain data.
enum class StoredEncoding : uint16_t {
  kRaw = 0,   // the plain data itself
  kZstd = 1,  // one zstd frame with the content size
};

// Content-addressed store of chunks on a local filesystem: one file per chunk
// at <dir>/<first two hex digits>/<64 hex digits>, a 32-byte header (magic,
// version, flags, plain length, stored length, CRC-32C of the stored bytes
// and of the header; docs/formats.md) followed by the stored bytes.
//
// In an encrypted repository (a `cipher` given) the chunk id is
// HMAC-SHA256(id key, plain data) and the stored bytes are sealed with
// AES-256-GCM (nonce || ciphertext || tag) with header bytes 0..15 and the
// chunk id as associated data, so a chunk renamed to another id fails.
//
// A chunk file is written once (temporary file in the same directory, fsync,
// rename without replace) and never rewritten. Directory entries of new
// chunks become durable at SyncDirectories(); a backup calls it before its
// index refers to them. Thread-safe.
class ChunkStore {
 public:
  explicit ChunkStore(std::string dir, ChunkIdFn id_fn = {},
                      std::shared_ptr<const ChunkCipher> cipher = nullptr);

  // Creates the fan-out directories when missing.
  absl::Status Init();

  // How chunk ids of this store are computed from plain data.
  const ChunkIdFn& id_fn() const { return id_fn_; }
  bool encrypted() const { return cipher_ != nullptr; }

  // Whether a chunk file of this digest exists (its content is not checked).
  bool Contains(const Sha256Digest& digest) const;

  // Stores `stored` (the plain data encoded as `encoding`, holding
  // `plain_length` bytes) as the chunk `digest`, encrypting it in an
  // encrypted store. The caller has verified that id_fn() of the data is
  // `digest`. Returns true when it wrote a new file, false
  // when the chunk was already present (the existing file is kept).
  absl::StatusOr<bool> Put(const Sha256Digest& digest, uint32_t plain_length,
                           StoredEncoding encoding, std::string_view stored);

  // Reads the chunk `digest` into *plain, checking the header, the stored
  // bytes' checksum, the GCM tag (encrypted store), the decoded length and
  // the id of the plain data. NOT_FOUND when missing; DATA_LOSS when any
  // check fails; FAILED_PRECONDITION for an encrypted chunk in a store
  // without a key.
  absl::Status Get(const Sha256Digest& digest, ZstdCodec* codec, std::string* plain) const;

  // Makes the directory entries of every chunk written since the last call
  // durable (fsync of each directory touched).
  absl::Status SyncDirectories();

  std::string PathOf(const Sha256Digest& digest) const;

  // A file in a fan-out directory: a chunk file or a temporary file
  // (".tmp-*") of a Put in progress or of one that crashed.
  struct FileEntry {
    std::string path;
    std::optional<Sha256Digest> digest;  // nullopt: a temporary file
  };
  // Calls `fn` for every chunk file and temporary file, one fan-out
  // directory after the other; other names are skipped. Stops at the first
  // error of `fn` and returns it.
  absl::Status ListFiles(const std::function<absl::Status(const FileEntry&)>& fn) const;

  static constexpr size_t kHeaderSize = 32;
  // Written: 2 (CRC-32C). Read: 1 (zlib CRC-32) and 2.
  static constexpr uint16_t kVersion = 2;
  static constexpr uint16_t kOldestReadableVersion = 1;

 private:
  std::string DirOf(const Sha256Digest& digest) const;

  const std::string dir_;
  const ChunkIdFn id_fn_;
  const std::shared_ptr<const ChunkCipher> cipher_;
  absl::Mutex mu_;
  std::set<std::string> dirty_dirs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace blkfleet::repo

#endif  // BLKFLEET_SERVER_REPOSITORY_CHUNK_STORE_H_
