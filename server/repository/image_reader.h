// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_REPOSITORY_IMAGE_READER_H_
#define BLKFLEET_SERVER_REPOSITORY_IMAGE_READER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "blkfleet/server/v1/server.pb.h"
#include "server/repository/repository.h"

namespace blkfleet::repo {

// A read-only view of one device image of one backup, read at any offset.
// This is the one seam between "how a backup's image is laid out in the
// repository" and everything that reads images by offset: the NBD export
// (server/nbd), file-level restore and drills on top of it, and later the
// hash-tree index of format 2 and object-store repositories, which add
// implementations below this interface without changing its users.
//
// Every implementation checks what it returns: bytes of a chunk that fails
// its checksum, its GCM tag or its id are never returned; the read fails
// with DATA_LOSS (NOT_FOUND for a missing chunk), and the message names the
// device range and the chunk. Thread-safe: many readers may call ReadAt at
// once.
class DeviceImageReader {
 public:
  virtual ~DeviceImageReader() = default;

  // The image's size in bytes (the device's size at the snapshot).
  virtual uint64_t size_bytes() const = 0;
  // The unit the image is stored in: a read aligned to it fetches whole
  // stored units only once each.
  virtual uint32_t block_size_bytes() const = 0;

  // Reads [offset, offset + out.size()) into `out`. OUT_OF_RANGE when the
  // range does not lie inside the image; on any error `out` holds nothing
  // meaningful.
  virtual absl::Status ReadAt(uint64_t offset, std::span<char> out) = 0;

  // Whether [offset, offset + length) is known to read as zeros without
  // reading it (it lies within chunks whose id is that of an all-zero
  // chunk). false means "not known", not "non-zero". For sparse copies and
  // NBD block status.
  virtual bool KnownZero(uint64_t offset, uint64_t length) const = 0;
};

struct ImageReaderOptions {
  // Decoded chunks kept in memory, least recently used dropped first. At
  // least one chunk is always cached (the one being read).
  uint64_t cache_bytes = 64ull << 20;
};

// Opens device `ordinal` of `backup` (as the catalog or the manifest holds
// it: its devices carry their index digests). The index is read and checked
// against that digest; chunks are read on demand. INVALID_ARGUMENT for an
// ordinal outside the backup; DATA_LOSS for a malformed digest or index.
// `repo` must outlive the reader.
absl::StatusOr<std::unique_ptr<DeviceImageReader>> OpenDeviceImage(
    Repository* repo, const blkfleet::server::v1::Backup& backup, int ordinal,
    const ImageReaderOptions& options = {});

}  // namespace blkfleet::repo

#endif  // BLKFLEET_SERVER_REPOSITORY_IMAGE_READER_H_
