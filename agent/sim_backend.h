// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_SIM_BACKEND_H_
#define BLKFLEET_AGENT_SIM_BACKEND_H_

// The `sim` backend: the blksnap semantics emulated in user space over
// regular files, for tests, demos and fleet simulations.
//
// Each simulated device is a file `<dir>/<name>.img` of a fixed size. A
// workload writes to devices through Write(), which does what the module's
// bio interception does: mark the active CBT map, then, if the device is in a taken
// snapshot, copy the old content of every chunk not yet saved into the
// snapshot's difference storage before the new data lands (synchronous
// copy-on-write). Chunk records exist only for chunks that differ. Images
// read saved chunks from the difference storage and the rest from the
// device; image writes go to the difference storage only and mark the
// active CBT map and, with the snapshot's own change number, the frozen one
// (the snapshot's content changed: its backup must read those blocks).
//
// Overflow of the difference-storage limit (or an I/O error on it) marks the
// snapshot corrupted and emits a no-space event (overflow only) and a
// corrupted event; the device write still lands, so the device never loses
// data.
//
// Locking: one reader/writer mutex. Image and device reads share it (several
// chunk reads of a StreamImage run in parallel); writes, takes and
// lifecycle changes hold it exclusively, which also makes a take one instant
// for all of its devices.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/backend.h"
#include "common/clock.h"
#include "common/sha256.h"
#include "common/unique_fd.h"

namespace blkfleet::agent {

struct SimDeviceSpec {
  // [A-Za-z0-9_.-]{1,64}, not starting with '.'.
  std::string name;
  // A positive multiple of 512.
  uint64_t size_bytes = 0;
};

struct SimOptions {
  // Folder of the device files; created when missing.
  std::string dir;
  // A missing device file is created full of zeros; an existing one keeps its
  // data and must have the given size.
  std::vector<SimDeviceSpec> devices;
  // Test oracle: when set, every take writes the frozen content of each of
  // its devices to `<oracle_dir>/<snapshot-id>-<device>.img`.
  std::string oracle_dir;
  // Time stamps of events.
  Clock* clock = Clock::Real();
};

class SimBackend final : public Backend {
 public:
  // Sizes derived from the device size, as the module does with its
  // default parameters: the smallest power of two >= 64 KiB that keeps the
  // block count <= 2,097,152 (at most 64 MiB); the chunk: the smallest power
  // of two >= 256 KiB that keeps the chunk count <= 2,097,152 (at most
  // 64 MiB).
  static uint32_t CbtBlockSizeFor(uint64_t device_size);
  static uint32_t ChunkSizeFor(uint64_t device_size);

  // Errors: INVALID_ARGUMENT (bad name or size, duplicate name);
  // FAILED_PRECONDITION (an existing file has another size); others from
  // the file system.
  static absl::StatusOr<std::unique_ptr<SimBackend>> Open(const SimOptions& options);

  ~SimBackend() override;

  // Backend.
  std::string name() const override { return "sim"; }
  std::string module_version() const override { return ""; }
  std::string intercept_mode() const override { return "sim"; }
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
  absl::StatusOr<std::unique_ptr<RestoreTarget>> OpenRestoreTarget(
      const std::string& device) override;

  // Workload API. Errors: NOT_FOUND (unknown device); OUT_OF_RANGE (beyond
  // the device). A device write never fails because of a snapshot.
  absl::Status Write(const std::string& device, uint64_t offset, std::span<const uint8_t> data);
  absl::Status Read(const std::string& device, uint64_t offset, std::span<uint8_t> out);
  // SHA-256 of the whole device, read under one lock (a consistent instant).
  absl::StatusOr<Sha256Digest> DeviceDigest(const std::string& device);
  // The copy-on-write chunk size of a device.
  absl::StatusOr<uint32_t> ChunkSize(const std::string& device);
  absl::StatusOr<uint64_t> DeviceSize(const std::string& device);
  // Path of a device's backing file.
  absl::StatusOr<std::string> DevicePath(const std::string& device);

 private:
  class Image;
  class Restore;
  struct Tracker;
  struct Device;
  struct SnapshotDevice;
  struct Snapshot;

  explicit SimBackend(const SimOptions& options);

  Device* FindDevice(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Device*> GetDevice(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Snapshot*> GetSnapshot(const Uuid& id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Marks blocks [offset, offset + length) of the device with the active
  // change number.
  void MarkCbt(Device& dev, uint64_t offset, uint64_t length) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Saves the old content of every unsaved chunk of `sd` overlapping the
  // range. Returns false when the snapshot is (or became) corrupted; new
  // events are appended to `events`.
  bool CopyOnWrite(Snapshot& snap, SnapshotDevice& sd, uint64_t offset, uint64_t length,
                   std::vector<BackendEvent>* events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Corrupt(Snapshot& snap, const std::string& device, int32_t error_code,
               BackendEvent::Kind kind, uint64_t requested_bytes, std::string error,
               std::vector<BackendEvent>* events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteOracle(const Snapshot& snap) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Image I/O, called by Image.
  absl::Status ImageRead(const std::shared_ptr<Snapshot>& snap, size_t device_index,
                         uint64_t offset, std::span<uint8_t> out);
  absl::Status ImageWrite(const std::shared_ptr<Snapshot>& snap, size_t device_index,
                          uint64_t offset, std::span<const uint8_t> data);
  void Dispatch(const std::vector<BackendEvent>& events);

  const std::string dir_;
  const std::string oracle_dir_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  // Sorted by name; Device objects never move (the map owns them by pointer).
  std::map<std::string, std::unique_ptr<Device>> devices_ ABSL_GUARDED_BY(mu_);
  std::map<Uuid, std::shared_ptr<Snapshot>> snapshots_ ABSL_GUARDED_BY(mu_);

  absl::Mutex handler_mu_;
  EventHandler handler_ ABSL_GUARDED_BY(handler_mu_);
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_SIM_BACKEND_H_
