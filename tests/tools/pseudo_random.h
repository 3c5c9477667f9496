// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_TOOLS_PSEUDO_RANDOM_H_
#define BLKFLEET_TESTS_TOOLS_PSEUDO_RANDOM_H_

#include <cstring>
#include <random>
#include <string>

namespace blkfleet::testing {

// Overwrites *buf with incompressible bytes from `rng` (a whole number of
// 8-byte words; a tail shorter than 8 bytes keeps its old contents).
inline void FillPseudoRandom(std::mt19937_64& rng, std::string* buf) {
  for (size_t i = 0; i + 8 <= buf->size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(buf->data() + i, &v, 8);
  }
}

}  // namespace blkfleet::testing

#endif  // BLKFLEET_TESTS_TOOLS_PSEUDO_RANDOM_H_
