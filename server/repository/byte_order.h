// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_REPOSITORY_BYTE_ORDER_H_
#define BLKFLEET_SERVER_REPOSITORY_BYTE_ORDER_H_

// Little-endian field access for the on-disk formats (docs/formats.md).

#include <cstdint>
#include <cstring>

namespace blkfleet::repo {

template <typename T>
inline void PutLe(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

template <typename T>
inline T GetLe(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

}  // namespace blkfleet::repo

#endif  // BLKFLEET_SERVER_REPOSITORY_BYTE_ORDER_H_
