// SPDX-License-Identifier: Apache-2.0
#include "common/clock.h"

namespace blkfleet {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace

Clock* Clock::Real() {
  static RealClock clock;
  return &clock;
}

}  // namespace blkfleet
