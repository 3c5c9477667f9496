// SPDX-License-Identifier: Apache-2.0
// The backend conformance suite run on the sim backend.

#include <unistd.h>

#include "agent/sim_backend.h"
#include "tests/conformance/backend_conformance.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::conformance {
namespace {

class SimTarget final : public ConformanceTarget {
 public:
  static absl::StatusOr<std::unique_ptr<ConformanceTarget>> Make() {
    auto target = std::unique_ptr<SimTarget>(new SimTarget);
    agent::SimOptions o;
    o.dir = target->dir_.Sub("devices");
    o.devices = {{"sim0", 32 << 20}, {"sim1", 48 << 20}};
    auto sim = agent::SimBackend::Open(o);
    if (!sim.ok()) return sim.status();
    target->sim_ = std::move(sim).value();
    return target;
  }

  agent::Backend& backend() override { return *sim_; }
  std::vector<std::string> devices() override { return {"sim0", "sim1"}; }
  absl::Status Write(const std::string& device, uint64_t offset,
                     std::span<const uint8_t> data) override {
    return sim_->Write(device, offset, data);
  }
  absl::Status Read(const std::string& device, uint64_t offset, std::span<uint8_t> out) override {
    return sim_->Read(device, offset, out);
  }
  std::string diff_storage_dir() override { return diff_dir_->path(); }

 private:
  SimTarget() {
    // tmpfs when there is one: its used space moves only with our files.
    if (::access("/dev/shm", W_OK) == 0) ::setenv("TMPDIR", "/dev/shm", 0);
    diff_dir_ = std::make_unique<testing::TempDir>();
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::TempDir> diff_dir_;
  std::unique_ptr<agent::SimBackend> sim_;
};

INSTANTIATE_TEST_SUITE_P(Sim, BackendConformance,
                         ::testing::Values(TargetFactory{"sim", &SimTarget::Make}),
                         TargetFactoryName);

}  // namespace
}  // namespace blkfleet::conformance
