// SPDX-License-Identifier: Apache-2.0
#include "server/repository/device_index.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/repository/byte_order.h"

namespace blkfleet::repo {
namespace {

constexpr char kMagic[8] = {'B', 'L', 'K', 'F', 'I', 'N', 'D', 'X'};
constexpr uint16_t kVersion = 1;
constexpr uint32_t kHeaderSize = 88;
constexpr size_t kTrailerSize = 32;

}  // namespace

std::string EncodeDeviceIndex(const DeviceIndex& index) {
  const size_t n = index.digests.size();
  std::string out(kHeaderSize + n * 32 + kTrailerSize, '\0');
  uint8_t* h = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(h, kMagic, sizeof(kMagic));
  PutLe<uint16_t>(h + 8, kVersion);
  PutLe<uint16_t>(h + 10, 0);
  PutLe<uint32_t>(h + 12, kHeaderSize);
  PutLe<uint64_t>(h + 16, index.device_size_bytes);
  PutLe<uint32_t>(h + 24, index.chunk_size_bytes);
  PutLe<uint32_t>(h + 28, index.cbt.change_number);
  std::memcpy(h + 32, index.cbt.generation.bytes.data(), 16);
  PutLe<uint32_t>(h + 48, index.cbt.block_size_bytes);
  PutLe<uint32_t>(h + 52, index.cbt.block_count);
  PutLe<int64_t>(h + 56, index.create_time_unix_micros);
  PutLe<uint64_t>(h + 64, n);
  PutLe<uint32_t>(h + 72, index.digest_algorithm);
  // 76..87 reserved, zero.
  for (size_t i = 0; i < n; ++i) std::memcpy(h + kHeaderSize + i * 32, index.digests[i].data(), 32);
  Sha256Digest trailer =
      Sha256(std::string_view(out.data(), out.size() - kTrailerSize));
  std::memcpy(h + out.size() - kTrailerSize, trailer.data(), kTrailerSize);
  return out;
}

absl::StatusOr<DeviceIndex> DecodeDeviceIndex(std::string_view bytes) {
  auto bad = [](const std::string& why) {
    return absl::DataLossError(absl::StrCat("index file is damaged: ", why));
  };
  if (bytes.size() < kHeaderSize + kTrailerSize) return bad("too short");
  const uint8_t* h = reinterpret_cast<const uint8_t*>(bytes.data());
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) return bad("bad magic");
  Sha256Digest trailer = Sha256(bytes.substr(0, bytes.size() - kTrailerSize));
  if (std::memcmp(trailer.data(), h + bytes.size() - kTrailerSize, kTrailerSize) != 0) {
    return bad("checksum mismatch");
  }
  if (GetLe<uint16_t>(h + 8) != kVersion) {
    return bad(absl::StrCat("unknown version ", GetLe<uint16_t>(h + 8)));
  }
  if (GetLe<uint32_t>(h + 12) != kHeaderSize) return bad("unexpected header size");
  DeviceIndex index;
  index.digest_algorithm = GetLe<uint32_t>(h + 72);
  if (index.digest_algorithm != kIndexDigestSha256 &&
      index.digest_algorithm != kIndexDigestHmacSha256) {
    return bad("unknown digest algorithm");
  }
  index.device_size_bytes = GetLe<uint64_t>(h + 16);
  index.chunk_size_bytes = GetLe<uint32_t>(h + 24);
  index.cbt.change_number = GetLe<uint32_t>(h + 28);
  std::memcpy(index.cbt.generation.bytes.data(), h + 32, 16);
  index.cbt.block_size_bytes = GetLe<uint32_t>(h + 48);
  index.cbt.block_count = GetLe<uint32_t>(h + 52);
  index.create_time_unix_micros = GetLe<int64_t>(h + 56);
  const uint64_t n = GetLe<uint64_t>(h + 64);
  if (index.chunk_size_bytes == 0) return bad("chunk size is 0");
  if (n != ChunkCount(index.device_size_bytes, index.chunk_size_bytes)) {
    return bad("digest count does not match device and chunk size");
  }
  if (bytes.size() != kHeaderSize + n * 32 + kTrailerSize) return bad("length mismatch");
  index.digests.resize(n);
  for (uint64_t i = 0; i < n; ++i) std::memcpy(index.digests[i].data(), h + kHeaderSize + i * 32, 32);
  return index;
}

}  // namespace blkfleet::repo
