// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_BACKEND_H_
#define BLKFLEET_AGENT_BACKEND_H_

// The snapshot backend of blkfleet-agent: the blksnap semantics (UAPI.md)
// behind a small interface with two implementations:
//   - `sim`: a user-space emulation over regular files (sim_backend.h);
//   - `kernel`: the blksnap module through /dev/blksnap-control and the
//     BLKFILTER_* ioctls (a later issue).
// The conformance suite (tests/conformance/) holds both to the same contract.
//
// Each method maps to one UAPI operation, so the kernel backend is a thin
// translation of errno values into the status codes documented here:
//   ListDevices              -> /sys/block enumeration
//   Attach / Detach          -> BLKFILTER_ATTACH / BLKFILTER_DETACH
//   GetCbtInfo               -> BLKFILTER_CTL CBTINFO
//   ReadCbtMap               -> BLKFILTER_CTL CBTMAP
//   CreateSnapshot           -> IOCTL_BLKSNAP_SNAPSHOT_CREATE
//   AddDevice                -> BLKFILTER_CTL SNAPSHOTADD
//   TakeSnapshot             -> IOCTL_BLKSNAP_SNAPSHOT_TAKE
//   DestroySnapshot          -> IOCTL_BLKSNAP_SNAPSHOT_DESTROY
//   ListSnapshots            -> IOCTL_BLKSNAP_SNAPSHOT_COLLECT
//   GetSnapshotStatus        -> BLKFILTER_CTL SNAPSHOTINFO of its devices
//   OpenImage                -> open("/dev/blksnap-<MAJ>-<MIN>")
//   SetEventHandler          -> one IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT loop
//                               per snapshot
//
// Every method is thread-safe. No method throws.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/uuid.h"

namespace blkfleet::agent {

// A block device the backend can snapshot.
struct DeviceInfo {
  std::string name;  // path (kernel) or simulated device name (sim)
  uint64_t size_bytes = 0;
  uint32_t sector_size_bytes = 512;
  bool tracked = false;             // blksnap filter attached (CBT running)
  std::optional<Uuid> snapshot_id;  // snapshot holding the device, if any
};

// Change block tracking state of one device (UAPI CBTINFO).
//
// `generation_id` and `change_number` describe the frozen map, i.e. the last
// take that included the device: before any take they are the current
// generation and 0. A take that wraps the change number (255 -> new
// generation) still reports the generation it was taken in and 255.
struct CbtInfo {
  uint64_t capacity_bytes = 0;
  uint32_t block_size_bytes = 0;  // power of two, 64 KiB .. 64 MiB
  uint32_t block_count = 0;       // ceil(capacity / block size), <= 2,097,152
  Uuid generation_id;
  uint8_t change_number = 0;
};

// Where a snapshot keeps the old data of changed chunks.
struct DiffStorageSpec {
  // A directory (an unnamed temporary file is made there and vanishes with
  // the snapshot), a regular file (used from offset 0, truncated to zero on
  // destroy) or, for the kernel backend only, a block device. It must not lie
  // on a device of the snapshot.
  std::string path;
  // Most bytes the storage may grow to; must be > 0.
  uint64_t limit_bytes = 0;
};

// State of one device inside a snapshot (UAPI SNAPSHOTINFO).
struct SnapshotDeviceStatus {
  std::string device;
  // Name of the image ("blksnap-<MAJ>-<MIN>" for the kernel); empty until
  // the snapshot is taken.
  std::string image_name;
  // 0, or the negative errno that corrupted the snapshot for this device.
  int32_t error_code = 0;
};

struct SnapshotStatus {
  Uuid id;
  std::vector<SnapshotDeviceStatus> devices;  // in the order they were added
  bool taken = false;
  // Set once the snapshot is corrupted (overflow, I/O error); it never
  // becomes healthy again.
  bool corrupted = false;
  // Negative errno of the corruption (-ENOSPC after overflow), 0 otherwise.
  int32_t error_code = 0;
  // Human-readable cause of the corruption; empty while healthy.
  std::string error;
  uint64_t diff_storage_limit_bytes = 0;
  // Bytes the difference storage holds now; 0 when the backend cannot tell.
  uint64_t diff_storage_used_bytes = 0;
};

// An event of a snapshot (UAPI WAIT_EVENT codes).
struct BackendEvent {
  // An overflow gives kNoSpace then kCorrupted; other failures kCorrupted.
  enum class Kind {
    kCorrupted,  // the snapshot broke: `device` and `error_code` are set
    kNoSpace,    // difference storage hit its limit: `requested_bytes` is set
  };
  Uuid snapshot_id;
  Kind kind = Kind::kCorrupted;
  absl::Time time;
  std::string device;
  int32_t error_code = 0;
  uint64_t requested_bytes = 0;
  std::string message;
};

// The image of one device of a taken snapshot: the device content at the
// instant of the take, plus whatever was written to the image since.
// Thread-safe; concurrent ReadAt calls run in parallel. An image must not
// outlive the backend that opened it.
class SnapshotImage {
 public:
  virtual ~SnapshotImage() = default;

  virtual uint64_t size_bytes() const = 0;

  // Reads exactly `out.size()` bytes at `offset`.
  // Errors: OUT_OF_RANGE (range beyond the image); ABORTED (the snapshot is
  // corrupted: the message names the cause, e.g. difference storage
  // overflow); NOT_FOUND (the snapshot was destroyed); DATA_LOSS (I/O error).
  virtual absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) = 0;

  // Writes `data` at `offset` into the image (its difference storage; the
  // original device is never touched). The written blocks are marked in the
  // device's active CBT map with the active change number and in the frozen
  // map with this snapshot's change number, so that a backup of this
  // snapshot reads them. Errors as ReadAt; a write that overflows the
  // difference storage corrupts the snapshot and fails with ABORTED.
  virtual absl::Status WriteAt(uint64_t offset, std::span<const uint8_t> data) = 0;
};

// A device opened for restore (WriteImage): exclusive while it lives, so
// that nothing else (a mount, a second restore) claims it meanwhile.
// Not thread-safe: one writer per restore stream.
class RestoreTarget {
 public:
  virtual ~RestoreTarget() = default;

  virtual uint64_t size_bytes() const = 0;

  // Writes `data` at `offset`. Offsets and lengths that are multiples of
  // 4096 go straight to the device (O_DIRECT where it applies); others are
  // read-modify-written. Errors: OUT_OF_RANGE (beyond the device);
  // DATA_LOSS (I/O error).
  virtual absl::Status WriteAt(uint64_t offset, std::span<const uint8_t> data) = 0;

  // Makes every write so far durable (fsync of the device).
  // Errors: DATA_LOSS.
  virtual absl::Status Flush() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "sim" or "kernel".
  virtual std::string name() const = 0;
  // blksnap module version ("2.0.0.0"); empty for the sim.
  virtual std::string module_version() const = 0;
  // How bios reach the filter: "ftrace" or "native" (kernel), "sim"; empty
  // when unknown (module not loaded).
  virtual std::string intercept_mode() const = 0;
  // OK when the backend can make snapshots. Otherwise FAILED_PRECONDITION
  // whose message names the cause (the kernel backend without a usable
  // blksnap module): then every method needing the module fails with it,
  // ListSnapshots is empty, and ListDevices and OpenRestoreTarget still work.
  virtual absl::Status Usable() const { return absl::OkStatus(); }

  // Devices this backend may snapshot, sorted by name.
  // Errors: INTERNAL when they cannot be enumerated.
  virtual absl::StatusOr<std::vector<DeviceInfo>> ListDevices() = 0;

  // Attaches the blksnap filter: CBT starts with an all-zero map, a new
  // random generation id, active change number 1, and reported change
  // number 0. Errors: NOT_FOUND (unknown device); ALREADY_EXISTS (already
  // attached).
  virtual absl::Status Attach(const std::string& device) = 0;

  // Detaches the filter: CBT stops and its state is dropped.
  // Errors: NOT_FOUND (unknown device, or not attached);
  // FAILED_PRECONDITION (the device is in a snapshot).
  virtual absl::Status Detach(const std::string& device) = 0;

  // Errors: NOT_FOUND (unknown device); FAILED_PRECONDITION (not attached).
  virtual absl::StatusOr<CbtInfo> GetCbtInfo(const std::string& device) = 0;

  // Copies `out.size()` bytes of the frozen CBT map (the copy made by the
  // device's last take) starting at block `first_block`. Before any take the
  // frozen map is all zero.
  // Errors: NOT_FOUND (unknown device); FAILED_PRECONDITION (not attached);
  // OUT_OF_RANGE (range beyond the map).
  virtual absl::Status ReadCbtMap(const std::string& device, uint32_t first_block,
                                  std::span<uint8_t> out) = 0;

  // Creates an empty snapshot (no devices, not taken) with its difference
  // storage. Errors: INVALID_ARGUMENT (limit 0, path neither a directory nor
  // a regular file nor a block device); NOT_FOUND (path does not exist);
  // RESOURCE_EXHAUSTED (storage cannot be allocated).
  virtual absl::StatusOr<Uuid> CreateSnapshot(const DiffStorageSpec& storage) = 0;

  // Adds an attached device to a snapshot that is not taken yet.
  // Errors: NOT_FOUND (unknown snapshot or device); FAILED_PRECONDITION
  // (device not attached, snapshot already taken, device in another
  // snapshot, or the difference storage lies on this device);
  // ALREADY_EXISTS (device already in this snapshot).
  virtual absl::Status AddDevice(const Uuid& snapshot, const std::string& device) = 0;

  // Takes the snapshot: every device's content is frozen at one instant;
  // copy-on-write starts; for each device the active CBT map is copied to the
  // frozen map, the snapshot's change number c = active, then active += 1
  // (past 255: the map is cleared, a new generation id is made, active = 1).
  // With an oracle (sim only) the frozen content is also written out.
  // Errors: NOT_FOUND (unknown snapshot); FAILED_PRECONDITION (already taken,
  // or no devices).
  virtual absl::Status TakeSnapshot(const Uuid& snapshot) = 0;

  // Destroys a snapshot (taken or not): images vanish, open SnapshotImage
  // objects fail with NOT_FOUND, the difference storage is freed, devices
  // leave the snapshot. CBT continues.
  // Errors: NOT_FOUND (unknown snapshot).
  virtual absl::Status DestroySnapshot(const Uuid& snapshot) = 0;

  // Ids of all snapshots, sorted.
  virtual absl::StatusOr<std::vector<Uuid>> ListSnapshots() = 0;

  // Errors: NOT_FOUND (unknown snapshot).
  virtual absl::StatusOr<SnapshotStatus> GetSnapshotStatus(const Uuid& snapshot) = 0;

  // Opens the image of `device` in a taken snapshot.
  // Errors: NOT_FOUND (unknown snapshot or device not in it);
  // FAILED_PRECONDITION (not taken yet).
  virtual absl::StatusOr<std::unique_ptr<SnapshotImage>> OpenImage(const Uuid& snapshot,
                                                                   const std::string& device) = 0;

  // Opens `device` for writing a restored image onto it. The kernel backend
  // takes any block device path (the agent's restore allowlist is checked
  // by the caller), the sim backend one of its devices. Refused while the
  // device is in use: FAILED_PRECONDITION when it is in a snapshot, mounted
  // (itself, or a partition of it: /proc/self/mountinfo), held by another
  // device (/sys/class/block/*/holders, e.g. device-mapper or md), or opened
  // exclusively by someone else (EBUSY of O_EXCL). NOT_FOUND (no such
  // device); INVALID_ARGUMENT (not a block device).
  virtual absl::StatusOr<std::unique_ptr<RestoreTarget>> OpenRestoreTarget(
      const std::string& device) = 0;

  // Where events go. The handler is called from a backend thread or from the
  // thread whose I/O caused the event, never with a backend lock held, so it
  // may call back into the backend; it should return quickly. Set it before
  // creating snapshots; events without a handler are dropped.
  using EventHandler = std::function<void(const BackendEvent&)>;
  virtual void SetEventHandler(EventHandler handler) = 0;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_BACKEND_H_
