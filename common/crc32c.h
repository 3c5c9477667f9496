// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_CRC32C_H_
#define BLKFLEET_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace blkfleet {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and
// final xor 0xFFFFFFFF: the iSCSI / ext4 / SSE4.2 `crc32` variant).
// Crc32c("123456789") == 0xE3069283.
//
// Uses the SSE4.2 instruction when the CPU has it (checked once at run
// time), otherwise a table-driven loop giving the same values.
uint32_t Crc32c(const void* data, size_t n);
inline uint32_t Crc32c(std::string_view s) { return Crc32c(s.data(), s.size()); }

// Continues a CRC over more bytes: Crc32cExtend(Crc32c(a), b) == Crc32c(a + b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// The portable implementation, exposed so tests can compare both paths.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);
// Whether Crc32c uses the hardware instruction on this CPU.
bool Crc32cIsHardware();

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_CRC32C_H_
