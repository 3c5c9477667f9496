// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_CLOCK_H_
#define BLKFLEET_COMMON_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace blkfleet {

// The time source of leases, schedules and job timings, behind an interface
// so that tests can drive time (see tests/ for a FakeClock).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // The process-wide real clock.
  static Clock* Real();
};

}  // namespace blkfleet

#endif  // BLKFLEET_COMMON_CLOCK_H_
