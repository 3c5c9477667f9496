// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_REPOSITORY_DEVICE_INDEX_H_
#define BLKFLEET_SERVER_REPOSITORY_DEVICE_INDEX_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cbt_delta.h"
#include "common/sha256.h"

namespace blkfleet::repo {

// Index header field "digest algorithm" (docs/formats.md).
constexpr uint32_t kIndexDigestSha256 = 1;      // SHA-256 of the plain chunk
constexpr uint32_t kIndexDigestHmacSha256 = 2;  // HMAC-SHA256 (encrypted repository)

// The fixed index of one device in one backup: chunk i of the device image
// ([i * chunk size, min((i+1) * chunk size, device size))) is the chunk whose
// digest is digests[i]. Every index is complete (a logically full image),
// whether the backup read every chunk or only the changed ones.
struct DeviceIndex {
  uint64_t device_size_bytes = 0;
  uint32_t chunk_size_bytes = 0;
  // CBT state of the snapshot the backup was read from.
  CbtPoint cbt;
  int64_t create_time_unix_micros = 0;
  // How the digests were computed: kIndexDigestSha256 or kIndexDigestHmacSha256.
  uint32_t digest_algorithm = kIndexDigestSha256;
  std::vector<Sha256Digest> digests;

  // The view the CBT arithmetic needs to use this index as a base.
  CbtDeviceView View() const { return {device_size_bytes, chunk_size_bytes, cbt}; }
};

// Serializes to the on-disk format (docs/formats.md: header, digest array,
// SHA-256 trailer over everything before it).
std::string EncodeDeviceIndex(const DeviceIndex& index);

// Parses and checks the format: DATA_LOSS on a bad magic, version, length,
// trailer checksum, or a digest count that does not match the sizes.
absl::StatusOr<DeviceIndex> DecodeDeviceIndex(std::string_view bytes);

}  // namespace blkfleet::repo

#endif  // BLKFLEET_SERVER_REPOSITORY_DEVICE_INDEX_H_
