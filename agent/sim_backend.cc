// SPDX-License-Identifier: Apache-2.0
#include "agent/sim_backend.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "agent/fd_io.h"
#include "common/durable_file.h"
#include "common/status_util.h"

namespace blkfleet::agent {
namespace {

constexpr uint64_t kMinCbtBlock = uint64_t{64} << 10;
constexpr uint64_t kMaxCbtBlock = uint64_t{64} << 20;
constexpr uint64_t kMaxCbtBlocks = 2'097'152;
constexpr uint64_t kMinChunk = uint64_t{256} << 10;
constexpr uint64_t kMaxChunk = uint64_t{64} << 20;
constexpr uint64_t kMaxChunks = 2'097'152;
constexpr uint8_t kMaxChangeNumber = 255;

uint32_t PowerOfTwoFor(uint64_t size, uint64_t min, uint64_t max, uint64_t max_count) {
  uint64_t s = min;
  while (s < max && (size + s - 1) / s > max_count) s <<= 1;
  return static_cast<uint32_t>(s);
}

bool ValidDeviceName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

// Sets the map bytes of the blocks overlapping [offset, offset + length).
void MarkBlocks(std::vector<uint8_t>& map, uint32_t block_size, uint64_t offset, uint64_t length,
                uint8_t value) {
  if (length == 0) return;
  std::fill(map.begin() + static_cast<ptrdiff_t>(offset / block_size),
            map.begin() + static_cast<ptrdiff_t>((offset + length - 1) / block_size + 1), value);
}

absl::Status CheckRange(const std::string& what, uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", +", length, ") is beyond ",
                                              what, " of ", size, " bytes"));
  }
  return absl::OkStatus();
}

// An unnamed file in `dir` that vanishes when closed.
absl::StatusOr<UniqueFd> OpenTempFile(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd.valid()) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return ErrnoStatus(errno, absl::StrCat("difference storage in ", dir));
  }
  // File systems without O_TMPFILE: create, then unlink at once.
  std::string tmpl = dir + "/.blkfleet-diff-XXXXXX";
  fd.Reset(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("difference storage in ", dir));
  ::unlink(tmpl.c_str());
  return fd;
}

}  // namespace

struct SimBackend::Tracker {
  Uuid generation;
  uint8_t active = 1;
  std::vector<uint8_t> map;
  // State of the last take.
  std::vector<uint8_t> frozen;
  Uuid frozen_generation;
  uint8_t frozen_change = 0;
};

struct SimBackend::Device {
  std::string name;
  std::string path;
  uint64_t size = 0;
  uint32_t block_size = 0;
  uint32_t block_count = 0;
  uint32_t chunk_size = 0;
  UniqueFd fd;
  dev_t st_dev = 0;
  ino_t st_ino = 0;
  std::optional<Tracker> tracker;
  std::optional<Uuid> snapshot;
  // A RestoreTarget is open on the device: no second one.
  bool restoring = false;
};

struct SimBackend::SnapshotDevice {
  Device* device = nullptr;  // devices_ never drops a Device
  // Chunk index -> offset in the difference storage; only saved chunks.
  absl::flat_hash_map<uint64_t, uint64_t> saved;
};

struct SimBackend::Snapshot {
  Uuid id;
  std::vector<SnapshotDevice> devices;
  bool taken = false;
  bool corrupted = false;
  bool destroyed = false;
  int32_t error_code = 0;
  std::string error;
  UniqueFd storage;
  bool storage_is_file = false;  // a named regular file: truncated on destroy
  dev_t storage_dev = 0;
  ino_t storage_ino = 0;
  uint64_t limit = 0;
  uint64_t used = 0;
};

class SimBackend::Image final : public SnapshotImage {
 public:
  Image(SimBackend* backend, std::shared_ptr<Snapshot> snap, size_t index, uint64_t size)
      : backend_(backend), snap_(std::move(snap)), index_(index), size_(size) {}
  uint64_t size_bytes() const override { return size_; }
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    return backend_->ImageRead(snap_, index_, offset, out);
  }
  absl::Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    return backend_->ImageWrite(snap_, index_, offset, data);
  }

 private:
  SimBackend* const backend_;
  const std::shared_ptr<Snapshot> snap_;
  const size_t index_;
  const uint64_t size_;
};

uint32_t SimBackend::CbtBlockSizeFor(uint64_t device_size) {
  return PowerOfTwoFor(device_size, kMinCbtBlock, kMaxCbtBlock, kMaxCbtBlocks);
}

uint32_t SimBackend::ChunkSizeFor(uint64_t device_size) {
  return PowerOfTwoFor(device_size, kMinChunk, kMaxChunk, kMaxChunks);
}

SimBackend::SimBackend(const SimOptions& options)
    : dir_(options.dir), oracle_dir_(options.oracle_dir), clock_(options.clock) {}

SimBackend::~SimBackend() = default;

absl::StatusOr<std::unique_ptr<SimBackend>> SimBackend::Open(const SimOptions& options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("sim: the device folder is empty");
  if (options.clock == nullptr) return absl::InvalidArgumentError("sim: no clock");
  // Check everything before creating anything.
  std::set<std::string> names;
  for (const SimDeviceSpec& spec : options.devices) {
    if (!ValidDeviceName(spec.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sim device name \"", spec.name,
                       "\": use 1-64 of [A-Za-z0-9_.-], not starting with '.'"));
    }
    if (spec.size_bytes == 0 || spec.size_bytes % 512 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("sim device ", spec.name, ": size ",
                                                     spec.size_bytes,
                                                     " is not a positive multiple of 512"));
    }
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("sim device ", spec.name, " given twice"));
    }
    struct stat st;
    std::string path = absl::StrCat(options.dir, "/", spec.name, ".img");
    if (::stat(path.c_str(), &st) == 0) {
      if (!S_ISREG(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
      }
      if (static_cast<uint64_t>(st.st_size) != spec.size_bytes) {
        return absl::FailedPreconditionError(
            absl::StrCat("sim device ", spec.name, ": ", path, " holds ", st.st_size,
                         " bytes, not the requested ", spec.size_bytes));
      }
    } else if (errno != ENOENT) {
      return ErrnoStatus(errno, path);
    }
  }
  BLKFLEET_RETURN_IF_ERROR(MakeDirectories(options.dir));
  if (!options.oracle_dir.empty()) BLKFLEET_RETURN_IF_ERROR(MakeDirectories(options.oracle_dir));

  std::unique_ptr<SimBackend> sim(new SimBackend(options));
  absl::MutexLock lock(&sim->mu_);
  for (const SimDeviceSpec& spec : options.devices) {
    auto dev = std::make_unique<Device>();
    dev->name = spec.name;
    dev->path = absl::StrCat(options.dir, "/", spec.name, ".img");
    dev->size = spec.size_bytes;
    dev->block_size = CbtBlockSizeFor(spec.size_bytes);
    dev->block_count =
        static_cast<uint32_t>((spec.size_bytes + dev->block_size - 1) / dev->block_size);
    dev->chunk_size = ChunkSizeFor(spec.size_bytes);
    dev->fd.Reset(::open(dev->path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!dev->fd.valid()) return ErrnoStatus(errno, dev->path);
    struct stat st;
    if (::fstat(dev->fd.get(), &st) != 0) return ErrnoStatus(errno, dev->path);
    if (static_cast<uint64_t>(st.st_size) != spec.size_bytes) {
      if (st.st_size != 0) {
        return absl::FailedPreconditionError(
            absl::StrCat(dev->path, " changed size while opening"));
      }
      if (::ftruncate(dev->fd.get(), static_cast<off_t>(spec.size_bytes)) != 0) {
        return ErrnoStatus(errno, dev->path);
      }
    }
    dev->st_dev = st.st_dev;
    dev->st_ino = st.st_ino;
    sim->devices_.emplace(spec.name, std::move(dev));
  }
  return sim;
}

SimBackend::Device* SimBackend::FindDevice(const std::string& name) const {
  auto it = devices_.find(name);
  return it == devices_.end() ? nullptr : it->second.get();
}

absl::StatusOr<SimBackend::Device*> SimBackend::GetDevice(const std::string& name) const {
  Device* dev = FindDevice(name);
  if (dev == nullptr) return absl::NotFoundError(absl::StrCat("no device named \"", name, "\""));
  return dev;
}

absl::StatusOr<SimBackend::Snapshot*> SimBackend::GetSnapshot(const Uuid& id) const {
  auto it = snapshots_.find(id);
  if (it == snapshots_.end()) {
    return absl::NotFoundError(absl::StrCat("no snapshot ", id.ToString()));
  }
  return it->second.get();
}

absl::StatusOr<std::vector<DeviceInfo>> SimBackend::ListDevices() {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<DeviceInfo> out;
  for (const auto& [name, dev] : devices_) {
    DeviceInfo info;
    info.name = name;
    info.size_bytes = dev->size;
    info.tracked = dev->tracker.has_value();
    info.snapshot_id = dev->snapshot;
    out.push_back(std::move(info));
  }
  return out;
}

absl::Status SimBackend::Attach(const std::string& device) {
  absl::MutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  if (dev->tracker) {
    return absl::AlreadyExistsError(absl::StrCat("blksnap is already attached to ", device));
  }
  Tracker& t = dev->tracker.emplace();
  t.generation = Uuid::Random();
  t.active = 1;
  t.map.assign(dev->block_count, 0);
  t.frozen.assign(dev->block_count, 0);
  t.frozen_generation = t.generation;
  t.frozen_change = 0;
  return absl::OkStatus();
}

absl::Status SimBackend::Detach(const std::string& device) {
  absl::MutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  if (!dev->tracker) {
    return absl::NotFoundError(absl::StrCat("blksnap is not attached to ", device));
  }
  if (dev->snapshot) {
    return absl::FailedPreconditionError(
        absl::StrCat(device, " is in snapshot ", dev->snapshot->ToString()));
  }
  dev->tracker.reset();
  return absl::OkStatus();
}

absl::StatusOr<CbtInfo> SimBackend::GetCbtInfo(const std::string& device) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  if (!dev->tracker) {
    return absl::FailedPreconditionError(absl::StrCat("blksnap is not attached to ", device));
  }
  CbtInfo info;
  info.capacity_bytes = dev->size;
  info.block_size_bytes = dev->block_size;
  info.block_count = dev->block_count;
  info.generation_id = dev->tracker->frozen_generation;
  info.change_number = dev->tracker->frozen_change;
  return info;
}

absl::Status SimBackend::ReadCbtMap(const std::string& device, uint32_t first_block,
                                    std::span<uint8_t> out) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  if (!dev->tracker) {
    return absl::FailedPreconditionError(absl::StrCat("blksnap is not attached to ", device));
  }
  BLKFLEET_RETURN_IF_ERROR(CheckRange(absl::StrCat("the CBT map of ", device), first_block,
                                      out.size(), dev->block_count));
  std::copy_n(dev->tracker->frozen.begin() + first_block, out.size(), out.begin());
  return absl::OkStatus();
}

absl::StatusOr<Uuid> SimBackend::CreateSnapshot(const DiffStorageSpec& storage) {
  if (storage.limit_bytes == 0) {
    return absl::InvalidArgumentError("difference storage limit must be greater than 0");
  }
  struct stat st;
  if (storage.path.empty() || ::stat(storage.path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("difference storage path \"", storage.path, "\" does not exist"));
  }
  auto snap = std::make_shared<Snapshot>();
  if (S_ISDIR(st.st_mode)) {
    absl::StatusOr<UniqueFd> fd = OpenTempFile(storage.path);
    if (!fd.ok()) return absl::ResourceExhaustedError(fd.status().message());
    snap->storage = std::move(fd).value();
  } else if (S_ISREG(st.st_mode)) {
    snap->storage.Reset(::open(storage.path.c_str(), O_RDWR | O_CLOEXEC));
    if (!snap->storage.valid() || ::ftruncate(snap->storage.get(), 0) != 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("difference storage ", storage.path, ": ", strerror(errno)));
    }
    snap->storage_is_file = true;
  } else if (S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("difference storage ", storage.path,
                                                   ": the sim backend cannot use a block device"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("difference storage ", storage.path,
                                                   " is neither a directory nor a regular file"));
  }
  if (::fstat(snap->storage.get(), &st) == 0) {
    snap->storage_dev = st.st_dev;
    snap->storage_ino = st.st_ino;
  }
  snap->limit = storage.limit_bytes;
  snap->id = Uuid::Random();
  absl::MutexLock lock(&mu_);
  snapshots_.emplace(snap->id, snap);
  return snap->id;
}

absl::Status SimBackend::AddDevice(const Uuid& snapshot, const std::string& device) {
  absl::MutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Snapshot * snap, GetSnapshot(snapshot));
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  if (dev->snapshot == snapshot) {
    return absl::AlreadyExistsError(
        absl::StrCat(device, " is already in snapshot ", snapshot.ToString()));
  }
  if (dev->snapshot) {
    return absl::FailedPreconditionError(
        absl::StrCat(device, " is already in another snapshot, ", dev->snapshot->ToString()));
  }
  if (snap->taken) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot.ToString(), " is already taken"));
  }
  if (!dev->tracker) {
    return absl::FailedPreconditionError(absl::StrCat("blksnap is not attached to ", device));
  }
  if (snap->storage_dev == dev->st_dev && snap->storage_ino == dev->st_ino) {
    return absl::FailedPreconditionError(absl::StrCat("the difference storage of snapshot ",
                                                      snapshot.ToString(), " lies on ", device));
  }
  snap->devices.push_back(SnapshotDevice{dev, {}});
  dev->snapshot = snapshot;
  return absl::OkStatus();
}

absl::Status SimBackend::WriteOracle(const Snapshot& snap) {
  for (const SnapshotDevice& sd : snap.devices) {
    std::string path =
        absl::StrCat(oracle_dir_, "/", snap.id.ToString(), "-", sd.device->name, ".img");
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out.valid()) return ErrnoStatus(errno, path);
    BLKFLEET_RETURN_IF_ERROR(CopyFileRange(sd.device->fd.get(), out.get(), sd.device->size, path));
  }
  return absl::OkStatus();
}

absl::Status SimBackend::TakeSnapshot(const Uuid& snapshot) {
  absl::MutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Snapshot * snap, GetSnapshot(snapshot));
  if (snap->taken) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot.ToString(), " is already taken"));
  }
  if (snap->devices.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot.ToString(), " has no devices"));
  }
  // Before any state changes: a failed oracle leaves the snapshot untaken.
  if (!oracle_dir_.empty()) BLKFLEET_RETURN_IF_ERROR(WriteOracle(*snap));
  for (SnapshotDevice& sd : snap->devices) {
    Tracker& t = *sd.device->tracker;
    t.frozen = t.map;
    t.frozen_generation = t.generation;
    t.frozen_change = t.active;
    if (t.active == kMaxChangeNumber) {
      std::fill(t.map.begin(), t.map.end(), 0);
      t.generation = Uuid::Random();
      t.active = 1;
    } else {
      ++t.active;
    }
  }
  snap->taken = true;
  return absl::OkStatus();
}

absl::Status SimBackend::DestroySnapshot(const Uuid& snapshot) {
  absl::MutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Snapshot * snap, GetSnapshot(snapshot));
  for (SnapshotDevice& sd : snap->devices) {
    sd.device->snapshot.reset();
    sd.saved = {};
  }
  snap->destroyed = true;
  if (snap->storage_is_file) (void)::ftruncate(snap->storage.get(), 0);
  snap->storage.Reset();
  snap->used = 0;
  snapshots_.erase(snapshot);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Uuid>> SimBackend::ListSnapshots() {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<Uuid> ids;
  for (const auto& [id, snap] : snapshots_) ids.push_back(id);
  return ids;
}

absl::StatusOr<SnapshotStatus> SimBackend::GetSnapshotStatus(const Uuid& snapshot) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Snapshot * snap, GetSnapshot(snapshot));
  SnapshotStatus status;
  status.id = snap->id;
  for (const SnapshotDevice& sd : snap->devices) {
    SnapshotDeviceStatus ds;
    ds.device = sd.device->name;
    if (snap->taken) ds.image_name = absl::StrCat("blksnap-sim-", sd.device->name);
    ds.error_code = snap->error_code;
    status.devices.push_back(std::move(ds));
  }
  status.taken = snap->taken;
  status.corrupted = snap->corrupted;
  status.error_code = snap->error_code;
  status.error = snap->error;
  status.diff_storage_limit_bytes = snap->limit;
  status.diff_storage_used_bytes = snap->used;
  return status;
}

absl::StatusOr<std::unique_ptr<SnapshotImage>> SimBackend::OpenImage(const Uuid& snapshot,
                                                                     const std::string& device) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = snapshots_.find(snapshot);
  if (it == snapshots_.end()) {
    return absl::NotFoundError(absl::StrCat("no snapshot ", snapshot.ToString()));
  }
  const std::shared_ptr<Snapshot>& snap = it->second;
  for (size_t i = 0; i < snap->devices.size(); ++i) {
    if (snap->devices[i].device->name != device) continue;
    if (!snap->taken) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot ", snapshot.ToString(), " is not taken yet"));
    }
    return std::make_unique<Image>(this, snap, i, snap->devices[i].device->size);
  }
  return absl::NotFoundError(
      absl::StrCat("device \"", device, "\" is not in snapshot ", snapshot.ToString()));
}

void SimBackend::SetEventHandler(EventHandler handler) {
  absl::MutexLock lock(&handler_mu_);
  handler_ = std::move(handler);
}

void SimBackend::Dispatch(const std::vector<BackendEvent>& events) {
  if (events.empty()) return;
  EventHandler handler;
  {
    absl::MutexLock lock(&handler_mu_);
    handler = handler_;
  }
  if (!handler) return;
  for (const BackendEvent& e : events) handler(e);
}

void SimBackend::MarkCbt(Device& dev, uint64_t offset, uint64_t length) {
  if (!dev.tracker) return;
  MarkBlocks(dev.tracker->map, dev.block_size, offset, length, dev.tracker->active);
}

void SimBackend::Corrupt(Snapshot& snap, const std::string& device, int32_t error_code,
                         BackendEvent::Kind kind, uint64_t requested_bytes, std::string error,
                         std::vector<BackendEvent>* events) {
  if (snap.corrupted) return;  // the first error wins
  snap.corrupted = true;
  snap.error_code = error_code;
  snap.error = error;
  // As the module: a lack of room gives a no-space event, and any
  // corruption a corrupted event naming the device and the error.
  BackendEvent e;
  e.snapshot_id = snap.id;
  e.time = clock_->Now();
  e.device = device;
  e.error_code = error_code;
  e.message = std::move(error);
  if (kind == BackendEvent::Kind::kNoSpace) {
    e.kind = BackendEvent::Kind::kNoSpace;
    e.requested_bytes = requested_bytes;
    events->push_back(e);
  }
  e.kind = BackendEvent::Kind::kCorrupted;
  e.requested_bytes = 0;
  events->push_back(std::move(e));
}

bool SimBackend::CopyOnWrite(Snapshot& snap, SnapshotDevice& sd, uint64_t offset, uint64_t length,
                             std::vector<BackendEvent>* events) {
  if (snap.corrupted) return false;
  const Device& dev = *sd.device;
  const uint64_t cs = dev.chunk_size;
  std::vector<uint8_t> buf;
  for (uint64_t c = offset / cs; c <= (offset + length - 1) / cs; ++c) {
    if (sd.saved.contains(c)) continue;
    const uint64_t start = c * cs;
    const uint64_t len = std::min(cs, dev.size - start);
    if (len > snap.limit - snap.used) {
      // As the module: the event names the total size asked for.
      Corrupt(snap, dev.name, -ENOSPC, BackendEvent::Kind::kNoSpace, snap.used + len,
              absl::StrCat("difference storage overflow: the limit of ", snap.limit,
                           " bytes is reached (", snap.used, " used, ", len,
                           " more needed to save a chunk of ", dev.name, ")"),
              events);
      return false;
    }
    buf.resize(len);
    absl::Status st = PreadFull(dev.fd.get(), buf.data(), len, start, dev.path);
    if (st.ok()) st = PwriteFull(snap.storage.get(), buf.data(), len, snap.used, "diff storage");
    if (!st.ok()) {
      Corrupt(snap, dev.name, -EIO, BackendEvent::Kind::kCorrupted, 0,
              absl::StrCat("I/O error saving a chunk of ", dev.name, ": ", st.message()), events);
      return false;
    }
    sd.saved.emplace(c, snap.used);
    snap.used += len;
  }
  return true;
}

absl::Status SimBackend::Write(const std::string& device, uint64_t offset,
                               std::span<const uint8_t> data) {
  std::vector<BackendEvent> events;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
    BLKFLEET_RETURN_IF_ERROR(CheckRange(device, offset, data.size(), dev->size));
    if (data.empty()) return absl::OkStatus();
    MarkCbt(*dev, offset, data.size());
    if (dev->snapshot) {
      Snapshot& snap = *snapshots_.at(*dev->snapshot);
      if (snap.taken) {
        for (SnapshotDevice& sd : snap.devices) {
          if (sd.device == dev) CopyOnWrite(snap, sd, offset, data.size(), &events);
        }
      }
    }
    // Whatever happened to the snapshot, the device gets its data.
    status = PwriteFull(dev->fd.get(), data.data(), data.size(), offset, dev->path);
  }
  Dispatch(events);
  return status;
}

absl::Status SimBackend::Read(const std::string& device, uint64_t offset, std::span<uint8_t> out) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  BLKFLEET_RETURN_IF_ERROR(CheckRange(device, offset, out.size(), dev->size));
  return PreadFull(dev->fd.get(), out.data(), out.size(), offset, dev->path);
}

absl::StatusOr<Sha256Digest> SimBackend::DeviceDigest(const std::string& device) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("sha256: cannot initialise");
  }
  std::vector<uint8_t> buf(4 << 20);
  for (uint64_t off = 0; off < dev->size; off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), dev->size - off));
    BLKFLEET_RETURN_IF_ERROR(PreadFull(dev->fd.get(), buf.data(), n, off, dev->path));
    EVP_DigestUpdate(ctx.get(), buf.data(), n);
  }
  Sha256Digest d;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), d.data(), &len) != 1 || len != d.size()) {
    return absl::InternalError("sha256: cannot finish");
  }
  return d;
}

absl::StatusOr<uint32_t> SimBackend::ChunkSize(const std::string& device) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  return dev->chunk_size;
}

absl::StatusOr<uint64_t> SimBackend::DeviceSize(const std::string& device) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  return dev->size;
}

absl::StatusOr<std::string> SimBackend::DevicePath(const std::string& device) {
  absl::ReaderMutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  return dev->path;
}

absl::Status SimBackend::ImageRead(const std::shared_ptr<Snapshot>& snap, size_t device_index,
                                   uint64_t offset, std::span<uint8_t> out) {
  absl::ReaderMutexLock lock(&mu_);
  if (snap->destroyed) {
    return absl::NotFoundError(absl::StrCat("snapshot ", snap->id.ToString(), " was destroyed"));
  }
  if (snap->corrupted) {
    return absl::AbortedError(
        absl::StrCat("snapshot ", snap->id.ToString(), " is corrupted: ", snap->error));
  }
  const SnapshotDevice& sd = snap->devices[device_index];
  const Device& dev = *sd.device;
  BLKFLEET_RETURN_IF_ERROR(
      CheckRange(absl::StrCat("the image of ", dev.name), offset, out.size(), dev.size));
  const uint64_t cs = dev.chunk_size;
  uint64_t pos = offset;
  uint8_t* dst = out.data();
  const uint64_t end = offset + out.size();
  while (pos < end) {
    const uint64_t c = pos / cs;
    const uint64_t n = std::min(end, (c + 1) * cs) - pos;
    auto it = sd.saved.find(c);
    absl::Status st = it == sd.saved.end() ? PreadFull(dev.fd.get(), dst, n, pos, dev.path)
                                           : PreadFull(snap->storage.get(), dst, n,
                                                       it->second + (pos - c * cs), "diff storage");
    if (!st.ok()) {
      return absl::DataLossError(absl::StrCat("image of ", dev.name, ": ", st.message()));
    }
    pos += n;
    dst += n;
  }
  return absl::OkStatus();
}

absl::Status SimBackend::ImageWrite(const std::shared_ptr<Snapshot>& snap, size_t device_index,
                                    uint64_t offset, std::span<const uint8_t> data) {
  std::vector<BackendEvent> events;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (snap->destroyed) {
      return absl::NotFoundError(absl::StrCat("snapshot ", snap->id.ToString(), " was destroyed"));
    }
    SnapshotDevice& sd = snap->devices[device_index];
    Device& dev = *sd.device;
    BLKFLEET_RETURN_IF_ERROR(
        CheckRange(absl::StrCat("the image of ", dev.name), offset, data.size(), dev.size));
    if (!snap->corrupted && !data.empty()) {
      MarkCbt(dev, offset, data.size());
      // The write changes what the snapshot holds: its own frozen map shows
      // the blocks with its change number, so a backup of this snapshot
      // reads them.
      MarkBlocks(dev.tracker->frozen, dev.block_size, offset, data.size(),
                 dev.tracker->frozen_change);
      if (CopyOnWrite(*snap, sd, offset, data.size(), &events)) {
        const uint64_t cs = dev.chunk_size;
        const uint8_t* src = data.data();
        const uint64_t end = offset + data.size();
        for (uint64_t pos = offset; pos < end && status.ok();) {
          const uint64_t c = pos / cs;
          const uint64_t n = std::min(end, (c + 1) * cs) - pos;
          status = PwriteFull(snap->storage.get(), src, n, sd.saved.at(c) + (pos - c * cs),
                              "diff storage");
          pos += n;
          src += n;
        }
        if (!status.ok()) {
          Corrupt(*snap, dev.name, -EIO, BackendEvent::Kind::kCorrupted, 0,
                  absl::StrCat("I/O error writing the image of ", dev.name, ": ", status.message()),
                  &events);
        }
      }
    }
    if (snap->corrupted) {
      status = absl::AbortedError(
          absl::StrCat("snapshot ", snap->id.ToString(), " is corrupted: ", snap->error));
    }
  }
  Dispatch(events);
  return status;
}

}  // namespace blkfleet::agent

namespace blkfleet::agent {

// Writes go through Write(), so a restore marks CBT like any other write.
class SimBackend::Restore final : public RestoreTarget {
 public:
  Restore(SimBackend* backend, std::string device, uint64_t size, int fd)
      : backend_(backend), device_(std::move(device)), size_(size), fd_(fd) {}
  ~Restore() override {
    absl::MutexLock lock(&backend_->mu_);
    if (Device* dev = backend_->FindDevice(device_)) dev->restoring = false;
  }
  uint64_t size_bytes() const override { return size_; }
  absl::Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    absl::Status st = backend_->Write(device_, offset, data);
    return st;
  }
  absl::Status Flush() override {
    if (::fdatasync(fd_) != 0) return ErrnoStatus(errno, absl::StrCat("fdatasync ", device_));
    return absl::OkStatus();
  }

 private:
  SimBackend* const backend_;
  const std::string device_;
  const uint64_t size_;
  const int fd_;  // the device's own descriptor, owned by the backend
};

absl::StatusOr<std::unique_ptr<RestoreTarget>> SimBackend::OpenRestoreTarget(
    const std::string& device) {
  absl::MutexLock lock(&mu_);
  BLKFLEET_ASSIGN_OR_RETURN(Device * dev, GetDevice(device));
  if (dev->snapshot) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device, " is in snapshot ", dev->snapshot->ToString(),
        ": destroy the snapshot before restoring onto it"));
  }
  if (dev->restoring) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device, " is being restored by another stream"));
  }
  dev->restoring = true;
  return std::unique_ptr<RestoreTarget>(
      std::make_unique<Restore>(this, device, dev->size, dev->fd.get()));
}

}  // namespace blkfleet::agent
