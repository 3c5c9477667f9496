// SPDX-License-Identifier: Apache-2.0
#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace blkfleet {
namespace {

struct KnownAnswer {
  std::string data;
  uint32_t crc;
};

std::vector<KnownAnswer> KnownAnswers() {
  std::string ascending(32, '\0');
  std::string descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  // "123456789" is the usual check value; the 32-byte vectors are those of
  // RFC 3720 (iSCSI) appendix B.4.
  return {{"", 0x00000000u},
          {"123456789", 0xE3069283u},
          {std::string(32, '\0'), 0x8A9136AAu},
          {std::string(32, '\xff'), 0x62A8AB43u},
          {ascending, 0x46DD794Eu},
          {descending, 0x113FDB5Cu}};
}

TEST(Crc32cTest, MatchesKnownAnswers) {
  for (const auto& ka : KnownAnswers()) {
    EXPECT_EQ(Crc32c(ka.data), ka.crc) << "size " << ka.data.size();
    EXPECT_EQ(Crc32cExtendPortable(0, ka.data.data(), ka.data.size()), ka.crc)
        << "portable, size " << ka.data.size();
  }
}

TEST(Crc32cTest, HardwareAndPortablePathsAgreeAtEveryAlignmentAndLength) {
  std::mt19937 rng(7);
  std::string buf(4096 + 16, '\0');
  for (auto& c : buf) c = static_cast<char>(rng());
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{63},
                       size_t{1000}, size_t{4096}}) {
      const char* p = buf.data() + offset;
      EXPECT_EQ(Crc32c(p, len), Crc32cExtendPortable(0, p, len))
          << "offset " << offset << " len " << len << " hardware " << Crc32cIsHardware();
    }
  }
}

TEST(Crc32cTest, ExtendEqualsOneShot) {
  const std::string a = "block-level ";
  const std::string b = "incremental backup";
  EXPECT_EQ(Crc32cExtend(Crc32c(a), b.data(), b.size()), Crc32c(a + b));
}

TEST(Crc32cTest, DetectsASingleFlippedBit) {
  std::string data(1 << 20, 'x');
  const uint32_t good = Crc32c(data);
  data[12345] ^= 0x10;
  EXPECT_NE(Crc32c(data), good);
}

}  // namespace
}  // namespace blkfleet
