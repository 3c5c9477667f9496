// SPDX-License-Identifier: Apache-2.0
// Unit tests of blkfleet-agent's flag value parsers.

#include "agent/flags.h"

#include "gtest/gtest.h"

namespace blkfleet::agent {
namespace {

TEST(ParseByteSize, AcceptsBinaryUnits) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("64KiB"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("64MiB"), 64u << 20);
  EXPECT_EQ(*ParseByteSize("2g"), 2ull << 30);
  EXPECT_EQ(*ParseByteSize("1TiB"), 1ull << 40);
}

TEST(ParseByteSize, RefusesGarbageAndOverflow) {
  for (const char* bad :
       {"", "MiB", "12XB", "-1", "1.5GiB", "99999999999999999999", "20000000TiB"}) {
    EXPECT_EQ(ParseByteSize(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseSimDevice, SplitsNameAndSize) {
  auto spec = ParseSimDevice("vda=64MiB");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->name, "vda");
  EXPECT_EQ(spec->size_bytes, 64u << 20);
  EXPECT_FALSE(ParseSimDevice("vda").ok());
  EXPECT_FALSE(ParseSimDevice("=1MiB").ok());
  EXPECT_FALSE(ParseSimDevice("vda=big").ok());
}

}  // namespace
}  // namespace blkfleet::agent
