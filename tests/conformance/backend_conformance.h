// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_CONFORMANCE_BACKEND_CONFORMANCE_H_
#define BLKFLEET_TESTS_CONFORMANCE_BACKEND_CONFORMANCE_H_

// The backend conformance suite: the blksnap semantics every agent Backend
// must show, written against the Backend interface only. A backend joins by
// providing a ConformanceTarget factory and instantiating the suite:
//
//   INSTANTIATE_TEST_SUITE_P(Kernel, BackendConformance,
//                            ::testing::Values(TargetFactory{"kernel", MakeKernelTarget}),
//                            TargetFactoryName);
//
// The sim instantiates it in sim_conformance_test.cc; the kernel backend
// will, inside the test VM.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/backend.h"
#include "gtest/gtest.h"

namespace blkfleet::conformance {

// A backend under test with what the suite needs around it.
class ConformanceTarget {
 public:
  virtual ~ConformanceTarget() = default;

  virtual agent::Backend& backend() = 0;

  // Two devices of at least 32 MiB each, whose content the suite may
  // overwrite; not attached and in no snapshot when the target is made.
  virtual std::vector<std::string> devices() = 0;

  // A workload's writes and reads of a device (the block device for the
  // kernel, SimBackend::Write for the sim). Write returns once the data has
  // passed the blksnap filter (copy-on-write done, CBT marked).
  virtual absl::Status Write(const std::string& device, uint64_t offset,
                             std::span<const uint8_t> data) = 0;
  virtual absl::Status Read(const std::string& device, uint64_t offset, std::span<uint8_t> out) = 0;

  // A directory for difference storage, on a file system of its own or at
  // least a quiet one: the suite measures its used space.
  virtual std::string diff_storage_dir() = 0;
};

struct TargetFactory {
  std::string name;
  std::function<absl::StatusOr<std::unique_ptr<ConformanceTarget>>()> make;
};

inline void PrintTo(const TargetFactory& f, std::ostream* os) { *os << f.name; }

inline std::string TargetFactoryName(const ::testing::TestParamInfo<TargetFactory>& info) {
  return info.param.name;
}

class BackendConformance : public ::testing::TestWithParam<TargetFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;

  agent::Backend& backend() { return target_->backend(); }
  const std::string& dev(int i) const { return devices_.at(i); }

  // Attaches where needed, creates, adds and takes; fails the test on error.
  Uuid TakeSnapshot(const std::vector<std::string>& devices, uint64_t limit = 256ull << 20);
  std::vector<uint8_t> FrozenMap(const std::string& device);
  void WriteOrFail(const std::string& device, uint64_t offset, std::span<const uint8_t> data);
  // Waits up to `timeout` for an event of `kind` (the kernel delivers
  // events from another thread) and returns it.
  std::optional<agent::BackendEvent> WaitForEvent(agent::BackendEvent::Kind kind,
                                                  absl::Duration timeout = absl::Seconds(10));
  size_t EventCount();

  std::unique_ptr<ConformanceTarget> target_;
  std::vector<std::string> devices_;
  absl::Mutex events_mu_;
  std::vector<agent::BackendEvent> events_ ABSL_GUARDED_BY(events_mu_);
};

}  // namespace blkfleet::conformance

#endif  // BLKFLEET_TESTS_CONFORMANCE_BACKEND_CONFORMANCE_H_
