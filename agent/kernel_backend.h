// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_KERNEL_BACKEND_H_
#define BLKFLEET_AGENT_KERNEL_BACKEND_H_

// The `kernel` backend: the Backend contract (backend.h) over the blksnap
// module's user-space interface (/work/shared/UAPI.md, the headers in
// kmod/include/uapi/linux/): /dev/blksnap-control for the snapshot life
// cycle and events, BLKFILTER_* ioctls on the block devices for the filter,
// CBT and the membership of a device in a snapshot.
//
// The kernel knows snapshots by id only; which devices a snapshot holds and
// whether it was taken are remembered here, for the snapshots this backend
// made. Snapshots made by another process show in ListSnapshots and can be
// destroyed, nothing more.
//
// Images and the test workload use O_DIRECT with an aligned bounce buffer:
// the page cache of an image would keep serving data after the snapshot is
// corrupted or destroyed, and a device write must have passed the filter
// (copy-on-write done) when it returns.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "common/unique_fd.h"

namespace blkfleet::agent {

struct KernelBackendOptions {
  // Block device paths the agent exposes (the allowlist); anything else is
  // NOT_FOUND. Each must be a block device that can be opened read-write.
  std::vector<std::string> devices;
  // The module's control device.
  std::string control_path = "/dev/blksnap-control";
  // Where the image nodes appear (devtmpfs).
  std::string dev_dir = "/dev";
  // The module's sysfs folder: parameters/intercept tells the interception
  // mode.
  std::string sys_module_dir = "/sys/module/blksnap";
  // Without a usable module (no control device, or a module version this
  // agent does not speak) Open fails, unless this is set: then the backend
  // opens anyway (the agent starts and reports why), lists its devices and
  // restores onto them, and everything that needs the module fails with
  // FAILED_PRECONDITION naming the cause (Usable()).
  bool start_without_module = false;
  // Where the installed kernels' modules are, to name the cause: "no
  // blksnap module for <release>" when <modules_dir>/<release> holds none.
  std::string modules_dir = "/lib/modules";
  // Release of the running kernel; empty: uname.
  std::string running_release;
};

// Status of a failed ioctl or system call: `op` names the call ("BLKFILTER_CTL
// CBTINFO"), `object` the device or path it was made on. Codes follow the
// errno (ENOENT/ENODEV/ENXIO/ESRCH -> NOT_FOUND, EEXIST/EALREADY ->
// ALREADY_EXISTS, EBUSY -> FAILED_PRECONDITION, EINVAL -> INVALID_ARGUMENT,
// ENOSPC/ENOMEM -> RESOURCE_EXHAUSTED, EACCES/EPERM -> PERMISSION_DENIED,
// ERANGE/E2BIG -> OUT_OF_RANGE, EIO -> DATA_LOSS, ENOTTY -> UNIMPLEMENTED
// (no module or no filter support), anything else INTERNAL).
absl::Status KernelErrnoStatus(int err, absl::string_view op, absl::string_view object);

// Reads exactly `out.size()` bytes at `offset` from an O_DIRECT descriptor,
// through a bounce buffer aligned to `align` (a power of two; offsets and
// lengths need no alignment). Short reads are DATA_LOSS.
absl::Status DirectRead(int fd, uint64_t offset, std::span<uint8_t> out, absl::string_view what,
                        size_t align = 4096);
// Writes `data` at `offset` to an O_DIRECT descriptor; partial alignment
// units at either end are read, patched and written back (the caller
// serialises writers that may share a unit).
absl::Status DirectWrite(int fd, uint64_t offset, std::span<const uint8_t> data,
                         absl::string_view what, size_t align = 4096);

class KernelBackend final : public Backend {
 public:
  // Opens the control device, checks the module version (2.x) and opens
  // every allowlisted device. Errors: NOT_FOUND (no control device: module
  // not loaded; a device missing); INVALID_ARGUMENT (not a block device, a
  // device listed twice, no devices); FAILED_PRECONDITION (module version).
  // With start_without_module, a missing or unusable module is no error
  // (see KernelBackendOptions).
  static absl::StatusOr<std::unique_ptr<KernelBackend>> Open(const KernelBackendOptions& options);

  // Stops the event threads. Snapshots stay in the kernel.
  ~KernelBackend() override;

  std::string name() const override { return "kernel"; }
  std::string module_version() const override { return version_; }
  std::string intercept_mode() const override { return intercept_mode_; }
  absl::Status Usable() const override { return unusable_; }
  absl::StatusOr<std::vector<DeviceInfo>> ListDevices() override;
  absl::Status Attach(const std::string& device) override;
  absl::Status Detach(const std::string& device) override;
  absl::StatusOr<CbtInfo> GetCbtInfo(const std::string& device) override;
  absl::Status ReadCbtMap(const std::string& device, uint32_t first_block,
                          std::span<uint8_t> out) override;
  absl::StatusOr<Uuid> CreateSnapshot(const DiffStorageSpec& storage) override;
  absl::Status AddDevice(const Uuid& snapshot, const std::string& device) override;
  absl::Status TakeSnapshot(const Uuid& snapshot) override;
  absl::Status DestroySnapshot(const Uuid& snapshot) override;
  absl::StatusOr<std::vector<Uuid>> ListSnapshots() override;
  absl::StatusOr<SnapshotStatus> GetSnapshotStatus(const Uuid& snapshot) override;
  absl::StatusOr<std::unique_ptr<SnapshotImage>> OpenImage(const Uuid& snapshot,
                                                           const std::string& device) override;
  void SetEventHandler(EventHandler handler) override;
  // Any block device path: O_RDWR | O_DIRECT | O_EXCL (EBUSY while mounted
  // or claimed), after the mount, holder and snapshot checks.
  absl::StatusOr<std::unique_ptr<RestoreTarget>> OpenRestoreTarget(
      const std::string& device) override;

  // Shared between a snapshot, its event thread and its open images.
  struct SnapshotShared;

 private:
  struct Device {
    std::string path;
    UniqueFd fd;
    dev_t rdev = 0;
  };
  struct Snapshot;

  KernelBackend() = default;

  Device* FindDevice(const std::string& name);
  // BLKFILTER_CTL with the blksnap filter's name.
  absl::Status FilterCtl(const Device& d, uint32_t cmd, void* buf, uint32_t len,
                         absl::string_view op);
  absl::StatusOr<CbtInfo> CbtInfoOf(const Device& d);
  void WaitEvents(std::shared_ptr<SnapshotShared> shared);
  void Deliver(const BackendEvent& event);

  // Opens and checks the control device; the cause (FAILED_PRECONDITION)
  // when the module is missing or unusable.
  absl::Status OpenControl(const KernelBackendOptions& options);

  std::string version_;
  std::string intercept_mode_;
  // OK, or why the module cannot be used (fixed after Open).
  absl::Status unusable_;
  UniqueFd control_;
  std::string dev_dir_;
  // Fixed after Open: safe to read without a lock.
  std::vector<std::unique_ptr<Device>> devices_;

  absl::Mutex mu_;
  std::map<Uuid, std::unique_ptr<Snapshot>> snapshots_ ABSL_GUARDED_BY(mu_);

  absl::Mutex handler_mu_;
  EventHandler handler_ ABSL_GUARDED_BY(handler_mu_);
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_KERNEL_BACKEND_H_
