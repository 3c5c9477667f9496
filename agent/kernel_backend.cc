// SPDX-License-Identifier: Apache-2.0
#include "agent/kernel_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/blk-filter.h>
#include <linux/blksnap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_util.h"
#include "agent/block_use.h"
#include "agent/kernel_probe.h"

namespace blkfleet::agent {

struct KernelBackend::SnapshotShared {
  Uuid id;
  std::atomic<bool> destroyed{false};
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  int32_t error_code ABSL_GUARDED_BY(mu) = 0;
  std::string error ABSL_GUARDED_BY(mu);
};

struct KernelBackend::Snapshot {
  std::shared_ptr<SnapshotShared> shared;
  std::vector<std::string> devices;  // in the order they were added
  bool taken = false;
  uint64_t limit_bytes = 0;
  // Device the difference storage lies on (st_dev of a file or folder,
  // st_rdev of a block device): no device of the snapshot may be it or the
  // whole disk of it.
  dev_t storage_dev = 0;
  std::thread waiter;
};

namespace {

constexpr size_t kBounceBytes = 1 << 20;
constexpr uint32_t kCbtMapStep = 1 << 20;
constexpr uint32_t kWaitEventTimeoutMs = 250;

absl::StatusCode CodeOfErrno(int err) {
  switch (err) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ESRCH:
      return absl::StatusCode::kNotFound;
    case EEXIST:
    case EALREADY:
      return absl::StatusCode::kAlreadyExists;
    case EBUSY:
      return absl::StatusCode::kFailedPrecondition;
    case EINVAL:
    case EFAULT:
      return absl::StatusCode::kInvalidArgument;
    case ENOSPC:
    case ENOMEM:
      return absl::StatusCode::kResourceExhausted;
    case EACCES:
    case EPERM:
      return absl::StatusCode::kPermissionDenied;
    case ERANGE:
    case E2BIG:
      return absl::StatusCode::kOutOfRange;
    case EIO:
      return absl::StatusCode::kDataLoss;
    case ENOTTY:
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

absl::StatusOr<AlignedBuffer> AllocAligned(size_t align, size_t bytes) {
  void* p = nullptr;
  if (::posix_memalign(&p, align, bytes) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
  }
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

// pread/pwrite of whole aligned units, retrying EINTR and short transfers.
absl::Status AlignedTransfer(bool write, int fd, uint8_t* buf, size_t len, uint64_t offset,
                             absl::string_view what) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = write ? ::pwrite(fd, buf + done, len - done, offset + done)
                            : ::pread(fd, buf + done, len - done, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return KernelErrnoStatus(errno, write ? "pwrite" : "pread", what);
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat(what, ": end of device at byte ", offset + done));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string UuidText(const Uuid& id) { return id.ToString(); }

Uuid UuidOf(const blksnap_uuid& u) {
  Uuid id;
  std::memcpy(id.bytes.data(), u.b, sizeof(u.b));
  return id;
}

blksnap_uuid RawOf(const Uuid& id) {
  blksnap_uuid u{};
  std::memcpy(u.b, id.bytes.data(), sizeof(u.b));
  return u;
}

// BLKFILTER_CTL to the blksnap filter; 0 or the errno.
int BlksnapCtl(int fd, uint32_t cmd, void* buf, uint32_t len) {
  blkfilter_ctl ctl{};
  std::memcpy(ctl.name, BLKSNAP_FILTER_NAME, sizeof(BLKSNAP_FILTER_NAME));
  ctl.cmd = cmd;
  ctl.optlen = len;
  ctl.opt = reinterpret_cast<uintptr_t>(buf);
  return ::ioctl(fd, BLKFILTER_CTL, &ctl) == 0 ? 0 : errno;
}

std::string ImageNameOf(const blksnap_snapshotinfo& si) {
  const char* p = reinterpret_cast<const char*>(si.image);
  return std::string(p, strnlen(p, sizeof(si.image)));
}

absl::StatusOr<uint64_t> BlockDeviceSize(int fd, absl::string_view what) {
  uint64_t size = 0;
  if (::ioctl(fd, BLKGETSIZE64, &size) != 0) return KernelErrnoStatus(errno, "BLKGETSIZE64", what);
  return size;
}

}  // namespace

absl::Status KernelErrnoStatus(int err, absl::string_view op, absl::string_view object) {
  return absl::Status(CodeOfErrno(err),
                      absl::StrFormat("%s on %s: %s (errno %d)", op, object, std::strerror(err), err));
}

absl::Status DirectRead(int fd, uint64_t offset, std::span<uint8_t> out, absl::string_view what,
                        size_t align) {
  absl::StatusOr<AlignedBuffer> bounce = AllocAligned(align, kBounceBytes);
  if (!bounce.ok()) return bounce.status();
  uint64_t pos = offset;
  size_t copied = 0;
  while (copied < out.size()) {
    const uint64_t start = pos & ~static_cast<uint64_t>(align - 1);
    const size_t skip = static_cast<size_t>(pos - start);
    const size_t want = std::min(out.size() - copied, kBounceBytes - skip);
    const size_t len = (skip + want + align - 1) & ~(align - 1);
    absl::Status st = AlignedTransfer(false, fd, bounce->get(), len, start, what);
    if (!st.ok()) return st;
    std::memcpy(out.data() + copied, bounce->get() + skip, want);
    copied += want;
    pos += want;
  }
  return absl::OkStatus();
}

absl::Status DirectWrite(int fd, uint64_t offset, std::span<const uint8_t> data,
                         absl::string_view what, size_t align) {
  absl::StatusOr<AlignedBuffer> bounce = AllocAligned(align, kBounceBytes);
  if (!bounce.ok()) return bounce.status();
  uint64_t pos = offset;
  size_t copied = 0;
  while (copied < data.size()) {
    const uint64_t start = pos & ~static_cast<uint64_t>(align - 1);
    const size_t skip = static_cast<size_t>(pos - start);
    const size_t give = std::min(data.size() - copied, kBounceBytes - skip);
    const size_t len = (skip + give + align - 1) & ~(align - 1);
    // Partial units at the ends keep their other bytes: read them first.
    if (skip != 0) {
      absl::Status st = AlignedTransfer(false, fd, bounce->get(), align, start, what);
      if (!st.ok()) return st;
    }
    if ((skip + give) % align != 0 && (len > align || skip == 0)) {
      absl::Status st =
          AlignedTransfer(false, fd, bounce->get() + len - align, align, start + len - align, what);
      if (!st.ok()) return st;
    }
    std::memcpy(bounce->get() + skip, data.data() + copied, give);
    absl::Status st = AlignedTransfer(true, fd, bounce->get(), len, start, what);
    if (!st.ok()) return st;
    copied += give;
    pos += give;
  }
  return absl::OkStatus();
}

namespace {

// The image of one device; see SnapshotImage. Reads and writes go straight
// to the image device (O_DIRECT); a failure is explained from the snapshot's
// state (destroyed, corrupted) before it is reported as an I/O error.
class KernelImage final : public SnapshotImage {
 public:
  // `device_fd` is the original device's descriptor, owned by the backend
  // (an image must not outlive it).
  KernelImage(UniqueFd fd, uint64_t size, std::string path, int device_fd,
              std::shared_ptr<KernelBackend::SnapshotShared> shared)
      : fd_(std::move(fd)),
        size_(size),
        path_(std::move(path)),
        device_fd_(device_fd),
        shared_(std::move(shared)) {}

  uint64_t size_bytes() const override { return size_; }

  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (absl::Status st = Check(offset, out.size()); !st.ok()) return st;
    return Explain(DirectRead(fd_.get(), offset, out, path_));
  }

  absl::Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    if (absl::Status st = Check(offset, data.size()); !st.ok()) return st;
    // Unaligned ends are read-modify-write: one writer at a time.
    absl::MutexLock lock(&write_mu_);
    return Explain(DirectWrite(fd_.get(), offset, data, path_));
  }

 private:
  absl::Status Check(uint64_t offset, uint64_t len) {
    if (offset > size_ || len > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat(path_, ": bytes ", offset, "..", offset + len,
                                                " lie beyond the image's ", size_, " bytes"));
    }
    return Broken();
  }

  // NOT_FOUND once destroyed, ABORTED once corrupted, OK otherwise.
  absl::Status Broken() {
    if (shared_->destroyed.load()) {
      return absl::NotFoundError(
          absl::StrCat(path_, ": snapshot ", UuidText(shared_->id), " was destroyed"));
    }
    absl::MutexLock lock(&shared_->mu);
    if (shared_->error_code != 0) {
      return absl::AbortedError(absl::StrCat(path_, ": snapshot ", UuidText(shared_->id),
                                             " is corrupted: ", shared_->error));
    }
    return absl::OkStatus();
  }

  absl::Status Explain(absl::Status st) {
    if (st.ok()) return st;
    absl::Status broken = Broken();
    if (!broken.ok()) return broken;
    // The kernel fails image I/O once the snapshot is corrupted, and the
    // event that says so may still be on its way: ask the filter.
    blksnap_snapshotinfo si{};
    if (BlksnapCtl(device_fd_, BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, &si, sizeof(si)) == 0 &&
        si.error_code != 0) {
      return absl::AbortedError(absl::StrCat(
          path_, ": snapshot ", UuidText(shared_->id),
          " is corrupted: ", si.error_code == -ENOSPC ? "difference storage overflow, " : "",
          std::strerror(-si.error_code), " (", st.message(), ")"));
    }
    return st;
  }

  UniqueFd fd_;
  const uint64_t size_;
  const std::string path_;
  const int device_fd_;
  std::shared_ptr<KernelBackend::SnapshotShared> shared_;
  absl::Mutex write_mu_;
};

}  // namespace

absl::Status KernelBackend::OpenControl(const KernelBackendOptions& options) {
  control_.Reset(::open(options.control_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!control_.valid()) {
    const int err = errno;
    if (err == ENOENT || err == ENODEV || err == ENXIO) {
      // Name the cause an operator acts on: no module built for this
      // kernel (a kernel upgrade without DKMS), or one not loaded.
      const std::string release = options.running_release.empty() ? RunningKernelRelease()
                                                                   : options.running_release;
      const std::string kernel_dir = absl::StrCat(options.modules_dir, "/", release);
      const std::string module = FindBlksnapModule(kernel_dir);
      if (module.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "no blksnap module for ", release, " (none under ", kernel_dir,
            "; install blksnap-dkms and linux-headers-", release, ", then modprobe blksnap)"));
      }
      return absl::FailedPreconditionError(
          absl::StrCat("blksnap module not loaded: no ", options.control_path, " (", kernel_dir,
                       "/", module, " is installed: modprobe blksnap)"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("blksnap module not usable: ",
                     KernelErrnoStatus(err, "open", options.control_path).message()));
  }
  blksnap_version v{};
  if (::ioctl(control_.get(), IOCTL_BLKSNAP_VERSION, &v) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("blksnap module not usable: ",
                     KernelErrnoStatus(errno, "IOCTL_BLKSNAP_VERSION", options.control_path)
                         .message()));
  }
  version_ = absl::StrCat(v.major, ".", v.minor, ".", v.revision, ".", v.build);
  if (v.major != BLKSNAP_VERSION_MAJOR) {
    return absl::FailedPreconditionError(absl::StrCat(
        options.control_path, ": blksnap module version ", version_, "; this agent speaks ",
        BLKSNAP_VERSION_MAJOR, ".x"));
  }
  intercept_mode_ = ReadInterceptMode(options.sys_module_dir);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KernelBackend>> KernelBackend::Open(
    const KernelBackendOptions& options) {
  if (options.devices.empty()) {
    return absl::InvalidArgumentError("the kernel backend needs at least one device (--device)");
  }
  auto backend = std::unique_ptr<KernelBackend>(new KernelBackend);
  backend->dev_dir_ = options.dev_dir;
  if (absl::Status st = backend->OpenControl(options); !st.ok()) {
    if (!options.start_without_module) {
      // NOT_FOUND when there is no control device, as before the option.
      return backend->control_.valid() || !absl::IsFailedPrecondition(st) ||
                     st.message().find("blksnap module not usable") == 0
                 ? st
                 : absl::NotFoundError(st.message());
    }
    backend->control_.Reset();
    backend->unusable_ = st;
  }
  std::set<std::string> seen;
  for (const std::string& path : options.devices) {
    if (!seen.insert(path).second) {
      return absl::InvalidArgumentError(absl::StrCat("device ", path, " is listed twice"));
    }
    auto d = std::make_unique<Device>();
    d->path = path;
    d->fd.Reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!d->fd.valid()) return KernelErrnoStatus(errno, "open", path);
    struct stat st;
    if (::fstat(d->fd.get(), &st) != 0) return KernelErrnoStatus(errno, "fstat", path);
    if (!S_ISBLK(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is not a block device"));
    }
    d->rdev = st.st_rdev;
    backend->devices_.push_back(std::move(d));
  }
  std::sort(backend->devices_.begin(), backend->devices_.end(),
            [](const auto& a, const auto& b) { return a->path < b->path; });
  return backend;
}

KernelBackend::~KernelBackend() {
  std::map<Uuid, std::unique_ptr<Snapshot>> snapshots;
  {
    absl::MutexLock lock(&mu_);
    snapshots.swap(snapshots_);
  }
  for (auto& [id, s] : snapshots) {
    s->shared->stop.store(true);
    if (s->waiter.joinable()) s->waiter.join();
  }
}

KernelBackend::Device* KernelBackend::FindDevice(const std::string& name) {
  for (auto& d : devices_) {
    if (d->path == name) return d.get();
  }
  return nullptr;
}

absl::Status KernelBackend::FilterCtl(const Device& d, uint32_t cmd, void* buf, uint32_t len,
                                      absl::string_view op) {
  const int err = BlksnapCtl(d.fd.get(), cmd, buf, len);
  if (err == 0) return absl::OkStatus();
  const std::string what = absl::StrCat("BLKFILTER_CTL ", op);
  if (err == ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " on ", d.path, ": the blksnap filter is not attached"));
  }
  return KernelErrnoStatus(err, what, d.path);
}

absl::StatusOr<CbtInfo> KernelBackend::CbtInfoOf(const Device& d) {
  blksnap_cbtinfo raw{};
  if (absl::Status st = FilterCtl(d, BLKFILTER_CTL_BLKSNAP_CBTINFO, &raw, sizeof(raw), "CBTINFO");
      !st.ok()) {
    return st;
  }
  CbtInfo info;
  info.capacity_bytes = raw.device_capacity;  // bytes, as the reference UAPI
  info.block_size_bytes = raw.block_size;
  info.block_count = raw.block_count;
  info.generation_id = UuidOf(raw.generation_id);
  info.change_number = raw.changes_number;
  return info;
}

absl::StatusOr<std::vector<DeviceInfo>> KernelBackend::ListDevices() {
  std::map<std::string, Uuid> in_snapshot;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : snapshots_) {
      for (const std::string& d : s->devices) in_snapshot[d] = id;
    }
  }
  std::vector<DeviceInfo> out;
  for (const auto& d : devices_) {
    DeviceInfo info;
    info.name = d->path;
    absl::StatusOr<uint64_t> size = BlockDeviceSize(d->fd.get(), d->path);
    if (!size.ok()) return absl::InternalError(size.status().message());
    info.size_bytes = *size;
    int ssz = 512;
    if (::ioctl(d->fd.get(), BLKSSZGET, &ssz) == 0) info.sector_size_bytes = ssz;
    info.tracked = unusable_.ok() && CbtInfoOf(*d).ok();
    if (auto it = in_snapshot.find(d->path); it != in_snapshot.end()) info.snapshot_id = it->second;
    out.push_back(std::move(info));
  }
  return out;
}

absl::Status KernelBackend::Attach(const std::string& device) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  Device* d = FindDevice(device);
  if (d == nullptr) return absl::NotFoundError(absl::StrCat("unknown device ", device));
  blkfilter_attach a{};
  std::memcpy(a.name, BLKSNAP_FILTER_NAME, sizeof(BLKSNAP_FILTER_NAME));
  if (::ioctl(d->fd.get(), BLKFILTER_ATTACH, &a) == 0) return absl::OkStatus();
  const int err = errno;
  if (err == EBUSY) {
    return absl::FailedPreconditionError(
        absl::StrCat("BLKFILTER_ATTACH on ", device, ": another filter is attached"));
  }
  return KernelErrnoStatus(err, "BLKFILTER_ATTACH", device);
}

absl::Status KernelBackend::Detach(const std::string& device) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  Device* d = FindDevice(device);
  if (d == nullptr) return absl::NotFoundError(absl::StrCat("unknown device ", device));
  // The patched kernel lets a filter go while its device is in a snapshot;
  // refuse that here, from our own record and from the kernel's.
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : snapshots_) {
      if (std::find(s->devices.begin(), s->devices.end(), device) != s->devices.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat(device, " is in snapshot ", UuidText(id), ": destroy it first"));
      }
    }
  }
  // SNAPSHOTINFO answers (image name empty before the take) only while the
  // device is in a snapshot.
  blksnap_snapshotinfo si{};
  if (BlksnapCtl(d->fd.get(), BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, &si, sizeof(si)) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(device, " is in a snapshot of another process",
                     si.image[0] != '\0' ? absl::StrCat(" (image ", ImageNameOf(si), ")") : ""));
  }
  blkfilter_detach det{};
  std::memcpy(det.name, BLKSNAP_FILTER_NAME, sizeof(BLKSNAP_FILTER_NAME));
  if (::ioctl(d->fd.get(), BLKFILTER_DETACH, &det) == 0) return absl::OkStatus();
  const int err = errno;
  if (err == ENOENT) {
    return absl::NotFoundError(
        absl::StrCat("BLKFILTER_DETACH on ", device, ": the blksnap filter is not attached"));
  }
  return KernelErrnoStatus(err, "BLKFILTER_DETACH", device);
}

absl::StatusOr<CbtInfo> KernelBackend::GetCbtInfo(const std::string& device) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  Device* d = FindDevice(device);
  if (d == nullptr) return absl::NotFoundError(absl::StrCat("unknown device ", device));
  return CbtInfoOf(*d);
}

absl::Status KernelBackend::ReadCbtMap(const std::string& device, uint32_t first_block,
                                       std::span<uint8_t> out) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  Device* d = FindDevice(device);
  if (d == nullptr) return absl::NotFoundError(absl::StrCat("unknown device ", device));
  absl::StatusOr<CbtInfo> info = CbtInfoOf(*d);
  if (!info.ok()) return info.status();
  if (first_block > info->block_count || out.size() > info->block_count - first_block) {
    return absl::OutOfRangeError(absl::StrCat("CBT map of ", device, ": blocks ", first_block,
                                              "+", out.size(), " lie beyond its ",
                                              info->block_count, " blocks"));
  }
  size_t done = 0;
  while (done < out.size()) {
    const uint32_t len = static_cast<uint32_t>(std::min<size_t>(out.size() - done, kCbtMapStep));
    blksnap_cbtmap m{};
    m.offset = first_block + static_cast<uint32_t>(done);
    m.length = len;
    m.buffer = reinterpret_cast<uintptr_t>(out.data() + done);
    if (absl::Status st = FilterCtl(*d, BLKFILTER_CTL_BLKSNAP_CBTMAP, &m, sizeof(m), "CBTMAP");
        !st.ok()) {
      return st;
    }
    done += len;
  }
  return absl::OkStatus();
}

absl::StatusOr<Uuid> KernelBackend::CreateSnapshot(const DiffStorageSpec& storage) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  if (storage.limit_bytes == 0) {
    return absl::InvalidArgumentError("difference storage limit: must be > 0");
  }
  struct stat st;
  if (::stat(storage.path.c_str(), &st) != 0) {
    return KernelErrnoStatus(errno, "stat of the difference storage", storage.path);
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "difference storage ", storage.path,
        ": neither a directory nor a regular file nor a block device"));
  }
  blksnap_snapshot_create c{};
  c.diff_storage_limit_sect = (storage.limit_bytes + 511) >> 9;
  c.diff_storage_filename = reinterpret_cast<uintptr_t>(storage.path.c_str());
  if (::ioctl(control_.get(), IOCTL_BLKSNAP_SNAPSHOT_CREATE, &c) != 0) {
    return KernelErrnoStatus(errno, "IOCTL_BLKSNAP_SNAPSHOT_CREATE",
                             absl::StrCat("difference storage ", storage.path));
  }
  auto s = std::make_unique<Snapshot>();
  s->shared = std::make_shared<SnapshotShared>();
  s->shared->id = UuidOf(c.id);
  s->limit_bytes = storage.limit_bytes;
  s->storage_dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
  s->waiter = std::thread(&KernelBackend::WaitEvents, this, s->shared);
  const Uuid id = s->shared->id;
  absl::MutexLock lock(&mu_);
  snapshots_[id] = std::move(s);
  return id;
}

absl::Status KernelBackend::AddDevice(const Uuid& snapshot, const std::string& device) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  Device* d = FindDevice(device);
  absl::MutexLock lock(&mu_);
  auto it = snapshots_.find(snapshot);
  if (it == snapshots_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown snapshot ", UuidText(snapshot)));
  }
  if (d == nullptr) return absl::NotFoundError(absl::StrCat("unknown device ", device));
  Snapshot& s = *it->second;
  for (const auto& [id, other] : snapshots_) {
    if (std::find(other->devices.begin(), other->devices.end(), device) == other->devices.end()) {
      continue;
    }
    if (id == snapshot) {
      return absl::AlreadyExistsError(
          absl::StrCat(device, " is already in snapshot ", UuidText(snapshot)));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(device, " is in snapshot ", UuidText(id)));
  }
  if (s.taken) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", UuidText(snapshot), " is taken: no devices can join"));
  }
  if (s.storage_dev != 0 &&
      (s.storage_dev == d->rdev || WholeDiskOf(s.storage_dev) == d->rdev)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the difference storage of snapshot ", UuidText(snapshot), " lies on ",
                     device, ": put it on a device that is not snapshotted"));
  }
  blksnap_snapshotadd add{};
  add.id = RawOf(snapshot);
  absl::Status st = FilterCtl(*d, BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD, &add, sizeof(add),
                              "SNAPSHOTADD");
  if (!st.ok()) {
    // EBUSY/EALREADY from the kernel: the device is in a snapshot it knows of.
    if (absl::IsAlreadyExists(st)) return absl::FailedPreconditionError(st.message());
    return st;
  }
  s.devices.push_back(device);
  return absl::OkStatus();
}

absl::Status KernelBackend::TakeSnapshot(const Uuid& snapshot) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  absl::MutexLock lock(&mu_);
  auto it = snapshots_.find(snapshot);
  if (it == snapshots_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown snapshot ", UuidText(snapshot)));
  }
  Snapshot& s = *it->second;
  if (s.taken) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", UuidText(snapshot), " is already taken"));
  }
  if (s.devices.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", UuidText(snapshot), " has no devices"));
  }
  blksnap_uuid raw = RawOf(snapshot);
  if (::ioctl(control_.get(), IOCTL_BLKSNAP_SNAPSHOT_TAKE, &raw) != 0) {
    return KernelErrnoStatus(errno, "IOCTL_BLKSNAP_SNAPSHOT_TAKE",
                             absl::StrCat("snapshot ", UuidText(snapshot)));
  }
  s.taken = true;
  return absl::OkStatus();
}

absl::Status KernelBackend::DestroySnapshot(const Uuid& snapshot) {
  if (!unusable_.ok()) {
    // Without the module no snapshot exists: NOT_FOUND lets a caller that
    // allows a missing snapshot go on.
    return absl::NotFoundError(
        absl::StrCat("unknown snapshot ", UuidText(snapshot), ": ", unusable_.message()));
  }
  std::unique_ptr<Snapshot> s;
  {
    absl::MutexLock lock(&mu_);
    blksnap_uuid raw = RawOf(snapshot);
    if (::ioctl(control_.get(), IOCTL_BLKSNAP_SNAPSHOT_DESTROY, &raw) != 0) {
      const int err = errno;
      absl::Status st = KernelErrnoStatus(err, "IOCTL_BLKSNAP_SNAPSHOT_DESTROY",
                                          absl::StrCat("snapshot ", UuidText(snapshot)));
      if (err != ENOENT) return st;
      // Gone from the kernel: forget our record too.
      auto it = snapshots_.find(snapshot);
      if (it == snapshots_.end()) return st;
      s = std::move(it->second);
      snapshots_.erase(it);
    } else if (auto it = snapshots_.find(snapshot); it != snapshots_.end()) {
      s = std::move(it->second);
      snapshots_.erase(it);
    }
  }
  if (s != nullptr) {
    s->shared->destroyed.store(true);
    s->shared->stop.store(true);
    // Outside mu_: the event thread may be delivering into a handler that
    // calls back into the backend. A handler that destroys its own
    // snapshot runs on that thread: it ends by itself once the handler
    // returns (stop is set), so it is let go instead of joined.
    if (s->waiter.joinable()) {
      if (s->waiter.get_id() == std::this_thread::get_id()) {
        s->waiter.detach();
      } else {
        s->waiter.join();
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Uuid>> KernelBackend::ListSnapshots() {
  if (!unusable_.ok()) return std::vector<Uuid>{};  // no module, no snapshots
  for (int attempt = 0; attempt < 8; ++attempt) {
    blksnap_snapshot_collect c{};
    if (::ioctl(control_.get(), IOCTL_BLKSNAP_SNAPSHOT_COLLECT, &c) != 0) {
      return KernelErrnoStatus(errno, "IOCTL_BLKSNAP_SNAPSHOT_COLLECT", "/dev/blksnap-control");
    }
    std::vector<blksnap_uuid> raw(c.count);
    if (c.count == 0) return std::vector<Uuid>{};
    c.ids = reinterpret_cast<uintptr_t>(raw.data());
    if (::ioctl(control_.get(), IOCTL_BLKSNAP_SNAPSHOT_COLLECT, &c) != 0) {
      if (errno == ENODATA) continue;  // a snapshot was made in between
      return KernelErrnoStatus(errno, "IOCTL_BLKSNAP_SNAPSHOT_COLLECT", "/dev/blksnap-control");
    }
    std::vector<Uuid> ids;
    for (uint32_t i = 0; i < std::min<uint32_t>(c.count, raw.size()); ++i) {
      ids.push_back(UuidOf(raw[i]));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  return absl::UnavailableError("IOCTL_BLKSNAP_SNAPSHOT_COLLECT: the list kept changing");
}

absl::StatusOr<SnapshotStatus> KernelBackend::GetSnapshotStatus(const Uuid& snapshot) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  SnapshotStatus out;
  std::shared_ptr<SnapshotShared> shared;
  {
    absl::MutexLock lock(&mu_);
    auto it = snapshots_.find(snapshot);
    if (it == snapshots_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown snapshot ", UuidText(snapshot)));
    }
    out.id = snapshot;
    out.taken = it->second->taken;
    out.diff_storage_limit_bytes = it->second->limit_bytes;
    for (const std::string& d : it->second->devices) out.devices.push_back({d, "", 0});
    shared = it->second->shared;
  }
  for (SnapshotDeviceStatus& ds : out.devices) {
    Device* d = FindDevice(ds.device);
    blksnap_snapshotinfo si{};
    absl::Status st =
        FilterCtl(*d, BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, &si, sizeof(si), "SNAPSHOTINFO");
    if (!st.ok()) return st;
    if (out.taken) {
      ds.image_name = ImageNameOf(si);
    }
    ds.error_code = si.error_code;
    if (si.error_code != 0 && out.error_code == 0) {
      out.error_code = si.error_code;
      out.error = absl::StrCat(ds.device, ": ", std::strerror(-si.error_code));
    }
  }
  absl::MutexLock lock(&shared->mu);
  if (shared->error_code != 0) {
    out.error_code = shared->error_code;
    out.error = shared->error;
  }
  out.corrupted = out.error_code != 0;
  return out;
}

absl::StatusOr<std::unique_ptr<SnapshotImage>> KernelBackend::OpenImage(
    const Uuid& snapshot, const std::string& device) {
  BLKFLEET_RETURN_IF_ERROR(unusable_);
  std::shared_ptr<SnapshotShared> shared;
  {
    absl::MutexLock lock(&mu_);
    auto it = snapshots_.find(snapshot);
    if (it == snapshots_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown snapshot ", UuidText(snapshot)));
    }
    const auto& devs = it->second->devices;
    if (std::find(devs.begin(), devs.end(), device) == devs.end()) {
      return absl::NotFoundError(
          absl::StrCat(device, " is not in snapshot ", UuidText(snapshot)));
    }
    if (!it->second->taken) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot ", UuidText(snapshot), " is not taken yet"));
    }
    shared = it->second->shared;
  }
  Device* d = FindDevice(device);
  std::string name = absl::StrCat("blksnap-", major(d->rdev), "-", minor(d->rdev));
  blksnap_snapshotinfo si{};
  if (FilterCtl(*d, BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, &si, sizeof(si), "SNAPSHOTINFO").ok() &&
      si.image[0] != '\0') {
    name = ImageNameOf(si);
  }
  const std::string path = absl::StrCat(dev_dir_, "/", name);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
  if (!fd.valid()) return KernelErrnoStatus(errno, "open of the image", path);
  absl::StatusOr<uint64_t> size = BlockDeviceSize(fd.get(), path);
  if (!size.ok()) return size.status();
  return std::unique_ptr<SnapshotImage>(
      std::make_unique<KernelImage>(std::move(fd), *size, path, d->fd.get(), std::move(shared)));
}

void KernelBackend::SetEventHandler(EventHandler handler) {
  absl::MutexLock lock(&handler_mu_);
  handler_ = std::move(handler);
}

void KernelBackend::Deliver(const BackendEvent& event) {
  EventHandler handler;
  {
    absl::MutexLock lock(&handler_mu_);
    handler = handler_;
  }
  if (handler) handler(event);
}

void KernelBackend::WaitEvents(std::shared_ptr<SnapshotShared> shared) {
  // One WAIT_EVENT at a time with a short timeout, so that destroy (and the
  // destructor) can stop this thread by flag.
  auto event = std::make_unique<blksnap_snapshot_event>();
  while (!shared->stop.load()) {
    std::memset(event.get(), 0, sizeof(*event));
    event->id = RawOf(shared->id);
    event->timeout_ms = kWaitEventTimeoutMs;
    if (::ioctl(control_.get(), IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, event.get()) != 0) {
      if (errno == ENOENT || errno == EINTR || errno == EAGAIN) continue;
      return;  // the snapshot is gone
    }
    BackendEvent e;
    e.snapshot_id = shared->id;
    e.time = absl::Now();
    if (event->code == blksnap_event_code_no_space) {
      blksnap_event_no_space ns;
      std::memcpy(&ns, event->data, sizeof(ns));
      e.kind = BackendEvent::Kind::kNoSpace;
      e.requested_bytes = ns.requested_nr_sect << 9;  // the total size asked for
      e.error_code = -ENOSPC;
      e.message = absl::StrCat("difference storage of snapshot ", UuidText(shared->id),
                               " is full (asked to grow to ", e.requested_bytes, " bytes)");
    } else if (event->code == blksnap_event_code_corrupted) {
      blksnap_event_corrupted c;
      std::memcpy(&c, event->data, sizeof(c));
      e.kind = BackendEvent::Kind::kCorrupted;
      e.error_code = c.err_code;
      const dev_t dev = makedev(c.dev_id_mj, c.dev_id_mn);
      e.device = absl::StrCat(c.dev_id_mj, ":", c.dev_id_mn);
      for (const auto& d : devices_) {
        if (d->rdev == dev) e.device = d->path;
      }
      // ENOSPC is how the module reports a full difference storage: name it.
      e.message = absl::StrCat("snapshot ", UuidText(shared->id), " corrupted on ", e.device, ": ",
                               c.err_code == -ENOSPC ? "difference storage overflow (" : "",
                               std::strerror(-c.err_code), c.err_code == -ENOSPC ? ")" : "");
      absl::MutexLock lock(&shared->mu);
      if (shared->error_code == 0) {
        shared->error_code = c.err_code;
        shared->error = e.message;
      }
    } else {
      continue;  // a code this agent does not know
    }
    Deliver(e);
  }
}

}  // namespace blkfleet::agent

namespace blkfleet::agent {
namespace {

class KernelRestoreTarget final : public RestoreTarget {
 public:
  KernelRestoreTarget(UniqueFd fd, uint64_t size, std::string path, size_t align)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)), align_(align) {}
  uint64_t size_bytes() const override { return size_; }
  absl::Status WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset > size_ || data.size() > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat("write [", offset, ", +", data.size(),
                                                ") is beyond ", path_, " (", size_, " bytes)"));
    }
    absl::Status st = DirectWrite(fd_.get(), offset, data, path_, align_);
    if (!st.ok()) return absl::DataLossError(st.message());
    return absl::OkStatus();
  }
  absl::Status Flush() override {
    if (::fsync(fd_.get()) != 0) return KernelErrnoStatus(errno, "fsync", path_);
    return absl::OkStatus();
  }

 private:
  UniqueFd fd_;
  const uint64_t size_;
  const std::string path_;
  const size_t align_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RestoreTarget>> KernelBackend::OpenRestoreTarget(
    const std::string& device) {
  struct stat st;
  if (::stat(device.c_str(), &st) != 0) return KernelErrnoStatus(errno, "stat", device);
  if (!S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(device, " is not a block device"));
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : snapshots_) {
      if (std::find(s->devices.begin(), s->devices.end(), device) != s->devices.end()) {
        return absl::FailedPreconditionError(absl::StrCat(
            device, " is in snapshot ", UuidText(id), ": destroy it before restoring onto it"));
      }
    }
  }
  BLKFLEET_RETURN_IF_ERROR(CheckBlockDeviceUnused(device, st.st_rdev));
  // O_EXCL claims the device: it fails with EBUSY while it (or, for a
  // whole disk, a partition) is mounted or claimed, and keeps a mount out
  // while the restore runs.
  UniqueFd fd(::open(device.c_str(), O_RDWR | O_DIRECT | O_EXCL | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    if (err == EBUSY) {
      return absl::FailedPreconditionError(absl::StrCat(
          device, " is in use (open exclusively by someone else: mounted, swap, or claimed)"));
    }
    return KernelErrnoStatus(err, "open", device);
  }
  // A device in a snapshot of another process answers SNAPSHOTINFO.
  blksnap_snapshotinfo si{};
  if (BlksnapCtl(fd.get(), BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, &si, sizeof(si)) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(device, " is in a snapshot: destroy it before restoring onto it"));
  }
  uint64_t size = 0;
  if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
    return KernelErrnoStatus(errno, "BLKGETSIZE64", device);
  }
  int lbs = 512;
  if (::ioctl(fd.get(), BLKSSZGET, &lbs) != 0 || lbs <= 0) lbs = 512;
  return std::unique_ptr<RestoreTarget>(std::make_unique<KernelRestoreTarget>(
      std::move(fd), size, device, std::max<size_t>(4096, static_cast<size_t>(lbs))));
}

}  // namespace blkfleet::agent
