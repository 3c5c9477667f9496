// SPDX-License-Identifier: Apache-2.0
// The backend conformance suite run on the kernel backend (the blksnap
// module), inside the test VM (tests/conformance/vm/run). The target comes
// from the environment:
//
//   BLKFLEET_CONFORMANCE_BACKEND=kernel       (anything else: no instance)
//   BLKFLEET_CONFORMANCE_DEVICES=/dev/vda,/dev/vdb   two scratch devices
//   BLKFLEET_CONFORMANCE_DIFF_DIR=/ds         difference storage folder on a
//                                             file system of its own
//
// Without BLKFLEET_CONFORMANCE_BACKEND=kernel the parameterised suite has
// no instance and only the kernel-free checks in this file run.

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "agent/kernel_backend.h"
#include "common/unique_fd.h"
#include "tests/conformance/backend_conformance.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::conformance {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

class KernelTarget final : public ConformanceTarget {
 public:
  static absl::StatusOr<std::unique_ptr<ConformanceTarget>> Make() {
    const std::string devices = Env("BLKFLEET_CONFORMANCE_DEVICES");
    const std::string diff_dir = Env("BLKFLEET_CONFORMANCE_DIFF_DIR");
    if (devices.empty() || diff_dir.empty()) {
      return absl::InvalidArgumentError(
          "set BLKFLEET_CONFORMANCE_DEVICES and BLKFLEET_CONFORMANCE_DIFF_DIR");
    }
    auto target = std::unique_ptr<KernelTarget>(new KernelTarget);
    target->devices_ = absl::StrSplit(devices, ',', absl::SkipEmpty());
    target->diff_dir_ = diff_dir;
    agent::KernelBackendOptions o;
    o.devices = target->devices_;
    auto backend = agent::KernelBackend::Open(o);
    if (!backend.ok()) return backend.status();
    target->backend_ = std::move(backend).value();
    // A failed earlier case may have left snapshots and filters behind.
    auto leftovers = target->backend_->ListSnapshots();
    if (!leftovers.ok()) return leftovers.status();
    for (const Uuid& id : *leftovers) {
      if (absl::Status st = target->backend_->DestroySnapshot(id); !st.ok()) return st;
    }
    for (const std::string& d : target->devices_) {
      absl::Status st = target->backend_->Detach(d);
      if (!st.ok() && !absl::IsNotFound(st)) return st;
      UniqueFd fd(::open(d.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
      if (!fd.valid()) return agent::KernelErrnoStatus(errno, "open O_DIRECT", d);
      target->io_.push_back(std::move(fd));
    }
    return target;
  }

  agent::Backend& backend() override { return *backend_; }
  std::vector<std::string> devices() override { return devices_; }
  absl::Status Write(const std::string& device, uint64_t offset,
                     std::span<const uint8_t> data) override {
    // O_DIRECT: the write has passed the filter when pwrite returns.
    return agent::DirectWrite(Fd(device), offset, data, device);
  }
  absl::Status Read(const std::string& device, uint64_t offset, std::span<uint8_t> out) override {
    return agent::DirectRead(Fd(device), offset, out, device);
  }
  std::string diff_storage_dir() override { return diff_dir_; }

 private:
  KernelTarget() = default;
  int Fd(const std::string& device) {
    for (size_t i = 0; i < devices_.size(); ++i) {
      if (devices_[i] == device) return io_[i].get();
    }
    return -1;
  }

  std::vector<std::string> devices_;
  std::string diff_dir_;
  std::unique_ptr<agent::KernelBackend> backend_;
  std::vector<UniqueFd> io_;
};

std::vector<TargetFactory> KernelFactories() {
  if (Env("BLKFLEET_CONFORMANCE_BACKEND") != "kernel") return {};
  return {TargetFactory{"kernel", &KernelTarget::Make}};
}

INSTANTIATE_TEST_SUITE_P(Kernel, BackendConformance, ::testing::ValuesIn(KernelFactories()),
                         TargetFactoryName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BackendConformance);

// Kernel-backend checks beyond the shared contract, run in the VM with the
// suite: they need the module.
class KernelOnly : public ::testing::TestWithParam<int> {};

std::vector<int> KernelOnlyInstances() {
  if (Env("BLKFLEET_CONFORMANCE_BACKEND") != "kernel") return {};
  return {0};
}

// The patched kernel lets a filter go while its device is in a snapshot;
// the backend must refuse, also when the snapshot belongs to another
// process (here: another backend instance, which shares nothing in memory).
TEST_P(KernelOnly, DetachIsRefusedWhileAnotherProcessHoldsTheDeviceInASnapshot) {
  auto owner_target = KernelTarget::Make();
  ASSERT_TRUE(owner_target.ok()) << owner_target.status();
  auto other_target = KernelTarget::Make();
  ASSERT_TRUE(other_target.ok()) << other_target.status();
  agent::Backend& owner = (*owner_target)->backend();
  agent::Backend& other = (*other_target)->backend();
  const std::string dev = (*owner_target)->devices().at(0);

  ASSERT_TRUE(owner.Attach(dev).ok());
  auto id = owner.CreateSnapshot({(*owner_target)->diff_storage_dir(), 64 << 20});
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(owner.AddDevice(*id, dev).ok());
  EXPECT_EQ(other.Detach(dev).code(), absl::StatusCode::kFailedPrecondition)
      << "detached a device added to a snapshot that is not taken yet";
  ASSERT_TRUE(owner.TakeSnapshot(*id).ok());
  absl::Status st = other.Detach(dev);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("blksnap-"), std::string::npos) << "names the image: " << st;
  ASSERT_TRUE(owner.GetCbtInfo(dev).ok()) << "the filter went away";
  // The other instance sees the snapshot and may destroy it; then the
  // detach is allowed.
  auto ids = other.ListSnapshots();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<Uuid>{*id});
  ASSERT_TRUE(other.DestroySnapshot(*id).ok());
  EXPECT_TRUE(other.Detach(dev).ok());
  EXPECT_EQ(owner.GetCbtInfo(dev).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Messages name the ioctl and the device.
TEST_P(KernelOnly, ErrorsNameTheIoctlAndTheDevice) {
  auto target = KernelTarget::Make();
  ASSERT_TRUE(target.ok()) << target.status();
  agent::Backend& b = (*target)->backend();
  const std::string dev = (*target)->devices().at(1);
  ASSERT_TRUE(b.Attach(dev).ok());
  absl::Status st = b.Attach(dev);
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(st.message().find("BLKFILTER_ATTACH on " + dev), std::string::npos) << st;
  ASSERT_TRUE(b.Detach(dev).ok());
  st = b.GetCbtInfo(dev).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("CBTINFO on " + dev), std::string::npos) << st;
  st = b.CreateSnapshot({"/nonexistent-diff-dir", 1 << 20}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_EQ(b.ListSnapshots()->size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Kernel, KernelOnly, ::testing::ValuesIn(KernelOnlyInstances()));
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(KernelOnly);

// Kernel-free checks of the backend's pieces.

TEST(KernelErrnoStatus, NamesTheCallAndTheDeviceAndFollowsErrno) {
  absl::Status st = agent::KernelErrnoStatus(EALREADY, "BLKFILTER_ATTACH", "/dev/vdb");
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(st.message().find("BLKFILTER_ATTACH"), std::string::npos) << st;
  EXPECT_NE(st.message().find("/dev/vdb"), std::string::npos) << st;
  EXPECT_EQ(agent::KernelErrnoStatus(ENOENT, "x", "y").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(agent::KernelErrnoStatus(ESRCH, "x", "y").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(agent::KernelErrnoStatus(EBUSY, "x", "y").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(agent::KernelErrnoStatus(EINVAL, "x", "y").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agent::KernelErrnoStatus(ENOSPC, "x", "y").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(agent::KernelErrnoStatus(ERANGE, "x", "y").code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(agent::KernelErrnoStatus(EIO, "x", "y").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(agent::KernelErrnoStatus(ENOTTY, "x", "y").code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(agent::KernelErrnoStatus(EDOM, "x", "y").code(), absl::StatusCode::kInternal);
}

// DirectRead/DirectWrite on a plain file (no O_DIRECT needed to check the
// bounce-buffer arithmetic): unaligned offsets and lengths across several
// bounce buffers keep the bytes around them.
TEST(DirectIo, UnalignedWritesAndReadsKeepTheNeighbours) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/dev";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid());
  const size_t size = 3 << 20;
  std::vector<uint8_t> model(size);
  for (size_t i = 0; i < size; ++i) model[i] = static_cast<uint8_t>(i * 7 + 3);
  ASSERT_TRUE(agent::DirectWrite(fd.get(), 0, model, path).ok());
  struct Case {
    uint64_t offset;
    size_t len;
  };
  for (const Case c : {Case{1, 10}, Case{4095, 2}, Case{4096, 4096}, Case{123 * 1024, 300 * 1024},
                       Case{(1 << 20) - 7, (1 << 20) + 100}, Case{size - 5, 5}}) {
    std::vector<uint8_t> patch(c.len);
    for (size_t i = 0; i < c.len; ++i) patch[i] = static_cast<uint8_t>(c.offset + i * 13);
    ASSERT_TRUE(agent::DirectWrite(fd.get(), c.offset, patch, path).ok());
    std::copy(patch.begin(), patch.end(), model.begin() + static_cast<ptrdiff_t>(c.offset));
    std::vector<uint8_t> got(size);
    ASSERT_TRUE(agent::DirectRead(fd.get(), 0, got, path).ok());
    ASSERT_TRUE(got == model) << "after writing " << c.len << " bytes at " << c.offset;
    std::vector<uint8_t> part(c.len + 3);
    const uint64_t from = c.offset >= 1 ? c.offset - 1 : 0;
    if (from + part.size() <= size) {
      ASSERT_TRUE(agent::DirectRead(fd.get(), from, part, path).ok());
      EXPECT_TRUE(std::equal(part.begin(), part.end(),
                             model.begin() + static_cast<ptrdiff_t>(from)));
    }
  }
  std::vector<uint8_t> beyond(10);
  EXPECT_EQ(agent::DirectRead(fd.get(), size - 5, beyond, path).code(),
            absl::StatusCode::kDataLoss);
}

TEST(KernelBackendOpen, RefusesNoDevicesAndAMissingModule) {
  agent::KernelBackendOptions o;
  EXPECT_EQ(agent::KernelBackend::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.devices = {"/dev/null"};
  o.control_path = "/nonexistent/blksnap-control";
  absl::Status st = agent::KernelBackend::Open(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(st.message().find("module"), std::string::npos) << st;
}

}  // namespace
}  // namespace blkfleet::conformance
