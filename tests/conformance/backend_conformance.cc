// SPDX-License-Identifier: Apache-2.0
// The backend conformance suite (see backend_conformance.h).

#include "tests/conformance/backend_conformance.h"

#include <sys/statvfs.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <set>
#include <thread>

#include "gmock/gmock.h"

namespace blkfleet::conformance {

using agent::BackendEvent;
using agent::CbtInfo;
using ::testing::HasSubstr;

namespace {

constexpr uint64_t kMiB = 1 << 20;

std::vector<uint8_t> Pattern(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    __builtin_memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

// The consumer's rule: the blocks a backup based on (base_generation,
// base_change) must read from a snapshot with CBT state `now` and frozen map
// `frozen`; nullopt means every block.
std::optional<std::set<uint32_t>> BlocksToRead(const Uuid& base_generation, uint8_t base_change,
                                               const CbtInfo& now,
                                               const std::vector<uint8_t>& frozen) {
  if (now.generation_id != base_generation || now.change_number <= base_change) {
    return std::nullopt;
  }
  std::set<uint32_t> blocks;
  for (uint32_t b = 0; b < frozen.size(); ++b) {
    if (frozen[b] > base_change) blocks.insert(b);
  }
  return blocks;
}

// File-system bytes in use where `dir` lives.
uint64_t FsUsedBytes(const std::string& dir) {
  struct statvfs st;
  if (::statvfs(dir.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_blocks - st.f_bfree) * st.f_frsize;
}

}  // namespace

void BackendConformance::SetUp() {
  auto target = GetParam().make();
  ASSERT_TRUE(target.ok()) << target.status();
  target_ = std::move(target).value();
  devices_ = target_->devices();
  ASSERT_GE(devices_.size(), 2u);
  backend().SetEventHandler([this](const BackendEvent& e) {
    absl::MutexLock lock(&events_mu_);
    events_.push_back(e);
  });
}

void BackendConformance::TearDown() {
  if (!target_) return;
  if (auto ids = backend().ListSnapshots(); ids.ok()) {
    for (const Uuid& id : *ids) (void)backend().DestroySnapshot(id);
  }
  for (const std::string& d : devices_) (void)backend().Detach(d);
  backend().SetEventHandler(nullptr);
}

Uuid BackendConformance::TakeSnapshot(const std::vector<std::string>& devices, uint64_t limit) {
  for (const std::string& d : devices) {
    absl::Status st = backend().Attach(d);
    EXPECT_TRUE(st.ok() || absl::IsAlreadyExists(st)) << st;
  }
  absl::StatusOr<Uuid> id = backend().CreateSnapshot({target_->diff_storage_dir(), limit});
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return Uuid();
  for (const std::string& d : devices) EXPECT_TRUE(backend().AddDevice(*id, d).ok()) << d;
  absl::Status st = backend().TakeSnapshot(*id);
  EXPECT_TRUE(st.ok()) << st;
  return *id;
}

std::vector<uint8_t> BackendConformance::FrozenMap(const std::string& device) {
  absl::StatusOr<CbtInfo> info = backend().GetCbtInfo(device);
  EXPECT_TRUE(info.ok()) << info.status();
  if (!info.ok()) return {};
  std::vector<uint8_t> map(info->block_count);
  absl::Status st = backend().ReadCbtMap(device, 0, map);
  EXPECT_TRUE(st.ok()) << st;
  return map;
}

void BackendConformance::WriteOrFail(const std::string& device, uint64_t offset,
                                     std::span<const uint8_t> data) {
  absl::Status st = target_->Write(device, offset, data);
  ASSERT_TRUE(st.ok()) << st;
}

std::optional<BackendEvent> BackendConformance::WaitForEvent(BackendEvent::Kind kind,
                                                             absl::Duration timeout) {
  struct Want {
    const std::vector<BackendEvent>* events;
    BackendEvent::Kind kind;
    const BackendEvent* found = nullptr;
  } want{&events_, kind};
  auto has = +[](Want* w) {
    for (const BackendEvent& e : *w->events) {
      if (e.kind == w->kind) {
        w->found = &e;
        return true;
      }
    }
    return false;
  };
  absl::MutexLock lock(&events_mu_);
  if (!events_mu_.AwaitWithTimeout(absl::Condition(has, &want), timeout)) return std::nullopt;
  return *want.found;
}

size_t BackendConformance::EventCount() {
  absl::MutexLock lock(&events_mu_);
  return events_.size();
}

TEST_P(BackendConformance, ListsItsDevicesWithSizes) {
  auto devices = backend().ListDevices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  for (const std::string& name : devices_) {
    auto it = std::find_if(devices->begin(), devices->end(),
                           [&](const agent::DeviceInfo& d) { return d.name == name; });
    ASSERT_NE(it, devices->end()) << name;
    EXPECT_GE(it->size_bytes, 32 * kMiB);
    EXPECT_FALSE(it->tracked);
    EXPECT_FALSE(it->snapshot_id.has_value());
  }
}

TEST_P(BackendConformance, AttachStartsAnEmptyMapWithANewGenerationAndSizesInBounds) {
  ASSERT_TRUE(backend().Attach(dev(0)).ok());
  EXPECT_EQ(backend().Attach(dev(0)).code(), absl::StatusCode::kAlreadyExists);
  auto info = backend().GetCbtInfo(dev(0));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->change_number, 0);
  EXPECT_FALSE(info->generation_id.IsNil());
  const uint32_t bs = info->block_size_bytes;
  EXPECT_EQ(bs & (bs - 1), 0u) << bs;
  EXPECT_GE(bs, 64 * 1024u);
  EXPECT_LE(bs, 64 * kMiB);
  EXPECT_EQ(info->block_count, (info->capacity_bytes + bs - 1) / bs);
  EXPECT_LE(info->block_count, 2'097'152u);
  EXPECT_EQ(FrozenMap(dev(0)), std::vector<uint8_t>(info->block_count, 0));
  std::vector<uint8_t> beyond(2);
  EXPECT_EQ(backend().ReadCbtMap(dev(0), info->block_count - 1, beyond).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(backend().GetCbtInfo(dev(1)).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(BackendConformance, ImageKeepsTheContentOfTheTake) {
  const auto before = Pattern(8 * kMiB, 1);
  WriteOrFail(dev(0), 4 * kMiB, before);
  Uuid id = TakeSnapshot({dev(0)});
  const auto after = Pattern(6 * kMiB, 2);
  WriteOrFail(dev(0), 5 * kMiB + 512, after);
  auto image = backend().OpenImage(id, dev(0));
  ASSERT_TRUE(image.ok()) << image.status();
  std::vector<uint8_t> got(before.size());
  ASSERT_TRUE((*image)->ReadAt(4 * kMiB, got).ok());
  EXPECT_TRUE(got == before) << "the image shows writes made after the take";
  ASSERT_TRUE(target_->Read(dev(0), 5 * kMiB + 512, std::span(got).first(after.size())).ok());
  EXPECT_TRUE(std::equal(after.begin(), after.end(), got.begin())) << "the device lost a write";
}

TEST_P(BackendConformance, ATakeIsOneInstantForAllItsDevices) {
  // A writer alternates: sequence number k to device 0, then k to device 1.
  // At any instant the pair is (k, k) or (k, k - 1); a snapshot taken at
  // one instant must show one of those, never device 1 ahead or behind.
  std::atomic<bool> stop = false;
  std::atomic<bool> failed = false;
  std::atomic<uint64_t> written = 0;
  std::thread writer([&] {
    std::vector<uint8_t> block(4096);
    for (uint64_t k = 1; !stop; ++k) {
      __builtin_memcpy(block.data(), &k, sizeof(k));
      if (!target_->Write(dev(0), 0, block).ok() || !target_->Write(dev(1), 0, block).ok()) {
        failed = true;
        break;
      }
      written = k;
    }
  });
  for (int round = 0; round < 5 && !failed; ++round) {
    while (written < static_cast<uint64_t>(round + 1) * 50 && !failed) std::this_thread::yield();
    Uuid id = TakeSnapshot({dev(0), dev(1)});
    // Let the writer move on: the images must not follow it.
    const uint64_t at_take = written;
    while (written < at_take + 20 && !failed) std::this_thread::yield();
    uint64_t seq[2] = {0, 0};
    for (int d = 0; d < 2; ++d) {
      auto image = backend().OpenImage(id, dev(d));
      std::vector<uint8_t> block(4096);
      EXPECT_TRUE(image.ok() && (*image)->ReadAt(0, block).ok());
      __builtin_memcpy(&seq[d], block.data(), sizeof(uint64_t));
    }
    EXPECT_GT(seq[0], 0u);
    EXPECT_LE(seq[0], at_take + 1) << "round " << round << ": the image follows the device";
    EXPECT_TRUE(seq[1] == seq[0] || seq[1] + 1 == seq[0])
        << "round " << round << ": device 0 at " << seq[0] << ", device 1 at " << seq[1];
    EXPECT_TRUE(backend().DestroySnapshot(id).ok());
  }
  stop = true;
  writer.join();
  EXPECT_FALSE(failed) << "the workload's writes failed";
}

TEST_P(BackendConformance, CbtTellsExactlyTheBlocksChangedSinceTheBase) {
  ASSERT_TRUE(backend().Attach(dev(0)).ok());
  const uint32_t bs = backend().GetCbtInfo(dev(0))->block_size_bytes;
  const uint32_t count = backend().GetCbtInfo(dev(0))->block_count;
  Uuid id = TakeSnapshot({dev(0)});
  CbtInfo base = *backend().GetCbtInfo(dev(0));
  EXPECT_EQ(base.change_number, 1);
  ASSERT_TRUE(backend().DestroySnapshot(id).ok());

  std::mt19937 rng(7);
  for (int round = 0; round < 6; ++round) {
    // Blocks changed since the base: by device writes and, from round 3 on,
    // by writes to the previous snapshot's image.
    std::set<uint32_t> changed;
    for (int i = 0; i < 5; ++i) {
      // Not the last block, which may be partial.
      const uint32_t b = rng() % (count - 1);
      WriteOrFail(dev(0), uint64_t{b} * bs + rng() % (bs - 512), Pattern(512, b));
      changed.insert(b);
    }
    const uint32_t straddle = rng() % (count - 2);
    WriteOrFail(dev(0), uint64_t{straddle + 1} * bs - 100, Pattern(200, 3));
    changed.insert(straddle);
    changed.insert(straddle + 1);
    if (round >= 3) {
      Uuid mid = TakeSnapshot({dev(0)});
      auto image = backend().OpenImage(mid, dev(0));
      ASSERT_TRUE(image.ok());
      const uint32_t b = rng() % (count - 1);
      ASSERT_TRUE((*image)->WriteAt(uint64_t{b} * bs + 7, Pattern(100, 4)).ok());
      changed.insert(b);
      ASSERT_TRUE(backend().DestroySnapshot(mid).ok());
    }
    id = TakeSnapshot({dev(0)});
    CbtInfo now = *backend().GetCbtInfo(dev(0));
    const std::vector<uint8_t> frozen = FrozenMap(dev(0));
    auto to_read = BlocksToRead(base.generation_id, base.change_number, now, frozen);
    ASSERT_TRUE(to_read.has_value()) << "round " << round << ": same generation expected";
    EXPECT_EQ(*to_read, changed) << "round " << round;
    // Every marked byte is a change number of this generation, none newer
    // than the snapshot itself.
    for (uint8_t v : frozen) EXPECT_LE(v, now.change_number);
    // A base at or past the new snapshot means: read everything.
    EXPECT_FALSE(BlocksToRead(now.generation_id, now.change_number, now, frozen).has_value());
    ASSERT_TRUE(backend().DestroySnapshot(id).ok());
    base = now;
  }
}

TEST_P(BackendConformance, ChangeNumbersWrapAfter255IntoANewGeneration) {
  ASSERT_TRUE(backend().Attach(dev(1)).ok());
  const Uuid first_generation = backend().GetCbtInfo(dev(1))->generation_id;
  const uint32_t bs = backend().GetCbtInfo(dev(1))->block_size_bytes;
  for (int take = 1; take <= 255; ++take) {
    if (take == 254) WriteOrFail(dev(1), 3 * bs, Pattern(4096, 5));  // marked 254
    Uuid id = TakeSnapshot({dev(1)});
    auto info = backend().GetCbtInfo(dev(1));
    ASSERT_EQ(info->change_number, take);
    ASSERT_EQ(info->generation_id, first_generation) << "take " << take;
    ASSERT_TRUE(backend().DestroySnapshot(id).ok());
  }
  EXPECT_EQ(FrozenMap(dev(1))[3], 254) << "the 255th take lost the map";
  // The 255th take reset the active map: the next one is change number 1
  // of a new generation, with nothing marked.
  Uuid id = TakeSnapshot({dev(1)});
  auto info = backend().GetCbtInfo(dev(1));
  EXPECT_EQ(info->change_number, 1);
  EXPECT_NE(info->generation_id, first_generation);
  const std::vector<uint8_t> frozen = FrozenMap(dev(1));
  EXPECT_EQ(frozen, std::vector<uint8_t>(frozen.size(), 0));
  EXPECT_FALSE(BlocksToRead(first_generation, 255, *info, frozen).has_value())
      << "a consumer of the old generation must read everything";
  ASSERT_TRUE(backend().DestroySnapshot(id).ok());
  WriteOrFail(dev(1), 5 * bs, Pattern(4096, 6));
  TakeSnapshot({dev(1)});
  EXPECT_EQ(FrozenMap(dev(1))[5], 2) << "writes after the wrap carry change number 2";
}

TEST_P(BackendConformance, OverflowCorruptsTheSnapshotButNeverTheDevice) {
  Uuid id = TakeSnapshot({dev(0)}, 4 * kMiB);
  auto image = backend().OpenImage(id, dev(0));
  ASSERT_TRUE(image.ok());
  const auto data = Pattern(24 * kMiB, 8);
  for (uint64_t off = 0; off < data.size(); off += kMiB) {
    WriteOrFail(dev(0), off, std::span(data).subspan(off, kMiB));
  }
  std::optional<BackendEvent> e = WaitForEvent(BackendEvent::Kind::kNoSpace);
  ASSERT_TRUE(e.has_value()) << "no no-space event";
  EXPECT_EQ(e->snapshot_id, id);
  EXPECT_GT(e->requested_bytes, 4 * kMiB)
      << "the no-space event names the total size asked for, beyond the 4 MiB limit";
  e = WaitForEvent(BackendEvent::Kind::kCorrupted);
  ASSERT_TRUE(e.has_value()) << "no corrupted event";
  EXPECT_EQ(e->snapshot_id, id);
  EXPECT_EQ(e->device, dev(0));
  EXPECT_EQ(e->error_code, -ENOSPC);
  auto status = backend().GetSnapshotStatus(id);
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->corrupted);
  EXPECT_EQ(status->error_code, -ENOSPC);
  std::vector<uint8_t> got(data.size());
  absl::Status read = (*image)->ReadAt(0, std::span(got).first(4096));
  EXPECT_EQ(read.code(), absl::StatusCode::kAborted) << read;
  ASSERT_TRUE(target_->Read(dev(0), 0, got).ok());
  EXPECT_TRUE(got == data) << "the overflow harmed the device";
  // More writes to the device still work and raise no more no-space events.
  const size_t events = EventCount();
  WriteOrFail(dev(0), 30 * kMiB, Pattern(kMiB, 9));
  EXPECT_EQ(EventCount(), events);
}

TEST_P(BackendConformance, DestroyFreesTheStorageAndTrackingGoesOn) {
  const std::string dir = target_->diff_storage_dir();
  Uuid id = TakeSnapshot({dev(0), dev(1)});
  const uint64_t base_used = FsUsedBytes(dir);
  WriteOrFail(dev(0), 0, Pattern(16 * kMiB, 10));
  WriteOrFail(dev(1), 0, Pattern(16 * kMiB, 11));
  auto image = backend().OpenImage(id, dev(0));
  ASSERT_TRUE(image.ok());
  const uint64_t with_snapshot = FsUsedBytes(dir);
  EXPECT_GE(with_snapshot, base_used + 24 * kMiB) << "32 MiB were saved: where?";
  ASSERT_TRUE(backend().DestroySnapshot(id).ok());
  const uint64_t after = FsUsedBytes(dir);
  EXPECT_LE(after + 24 * kMiB, with_snapshot) << "destroy kept the difference storage";

  EXPECT_EQ(backend().GetSnapshotStatus(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().DestroySnapshot(id).code(), absl::StatusCode::kNotFound);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ((*image)->ReadAt(0, buf).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(backend().ListSnapshots()->empty());
  auto devices = backend().ListDevices();
  ASSERT_TRUE(devices.ok());
  for (const auto& d : *devices) EXPECT_FALSE(d.snapshot_id.has_value());
  // CBT went on: the next snapshot is change number 2 with the writes marked.
  TakeSnapshot({dev(0)});
  EXPECT_EQ(backend().GetCbtInfo(dev(0))->change_number, 2);
  EXPECT_EQ(FrozenMap(dev(0))[0], 2);
}

TEST_P(BackendConformance, ADeviceIsInOneSnapshotAtATime) {
  ASSERT_TRUE(backend().Attach(dev(0)).ok());
  auto a = backend().CreateSnapshot({target_->diff_storage_dir(), 64 * kMiB});
  auto b = backend().CreateSnapshot({target_->diff_storage_dir(), 64 * kMiB});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(backend().AddDevice(*a, dev(0)).ok());
  EXPECT_EQ(backend().AddDevice(*a, dev(0)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(backend().AddDevice(*b, dev(0)).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend().TakeSnapshot(*a).ok());
  EXPECT_EQ(backend().AddDevice(*b, dev(0)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend().Detach(dev(0)).code(), absl::StatusCode::kFailedPrecondition);
  auto devices = backend().ListDevices();
  for (const auto& d : *devices) {
    if (d.name == dev(0)) {
      EXPECT_EQ(d.snapshot_id, *a);
    }
  }
  ASSERT_TRUE(backend().DestroySnapshot(*a).ok());
  EXPECT_TRUE(backend().AddDevice(*b, dev(0)).ok());
}

TEST_P(BackendConformance, LifecycleMisusesAreRefused) {
  const Uuid unknown = Uuid::Random();
  EXPECT_EQ(backend().TakeSnapshot(unknown).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().DestroySnapshot(unknown).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().GetSnapshotStatus(unknown).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().OpenImage(unknown, dev(0)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().Attach("no-such-device").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().Detach(dev(0)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend().CreateSnapshot({target_->diff_storage_dir(), 0}).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto id = backend().CreateSnapshot({target_->diff_storage_dir(), 64 * kMiB});
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(backend().TakeSnapshot(*id).code(), absl::StatusCode::kFailedPrecondition)
      << "a snapshot without devices was taken";
  EXPECT_EQ(backend().AddDevice(*id, dev(1)).code(), absl::StatusCode::kFailedPrecondition)
      << "a device without the filter was added";
  ASSERT_TRUE(backend().Attach(dev(1)).ok());
  ASSERT_TRUE(backend().AddDevice(*id, dev(1)).ok());
  EXPECT_EQ(backend().OpenImage(*id, dev(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto status = backend().GetSnapshotStatus(*id);
  ASSERT_TRUE(status.ok());
  EXPECT_FALSE(status->taken);
  ASSERT_TRUE(backend().TakeSnapshot(*id).ok());
  EXPECT_EQ(backend().TakeSnapshot(*id).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend().Attach(dev(0)).ok());
  EXPECT_EQ(backend().AddDevice(*id, dev(0)).code(), absl::StatusCode::kFailedPrecondition)
      << "a device was added after the take";
  EXPECT_EQ(backend().OpenImage(*id, dev(0)).status().code(), absl::StatusCode::kNotFound);
  status = backend().GetSnapshotStatus(*id);
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->taken);
  EXPECT_FALSE(status->corrupted);
  ASSERT_EQ(status->devices.size(), 1u);
  EXPECT_FALSE(status->devices[0].image_name.empty());
  auto image = backend().OpenImage(*id, dev(1));
  ASSERT_TRUE(image.ok());
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ((*image)->ReadAt((*image)->size_bytes() - 512, buf).code(),
            absl::StatusCode::kOutOfRange);
}

TEST_P(BackendConformance, ImageWritesStayInTheImage) {
  const auto before = Pattern(2 * kMiB, 12);
  WriteOrFail(dev(1), 0, before);
  Uuid id = TakeSnapshot({dev(1)});
  auto image = backend().OpenImage(id, dev(1));
  ASSERT_TRUE(image.ok());
  const auto patch = Pattern(300 * 1024, 13);
  ASSERT_TRUE((*image)->WriteAt(123 * 1024, patch).ok());
  std::vector<uint8_t> got(patch.size());
  ASSERT_TRUE((*image)->ReadAt(123 * 1024, got).ok());
  EXPECT_TRUE(got == patch);
  std::vector<uint8_t> device(before.size());
  ASSERT_TRUE(target_->Read(dev(1), 0, device).ok());
  EXPECT_TRUE(device == before) << "an image write reached the device";
  // The snapshot's content changed: its frozen map shows the written blocks
  // with its own change number, so that its backup reads them.
  const uint32_t bs = backend().GetCbtInfo(dev(1))->block_size_bytes;
  const std::vector<uint8_t> frozen = FrozenMap(dev(1));
  for (uint32_t b = 0; b < frozen.size(); ++b) {
    const bool written = b >= 123 * 1024 / bs && b <= (123 * 1024 + patch.size() - 1) / bs;
    EXPECT_EQ(frozen[b], written ? 1 : 0) << "block " << b;
  }
}

// Restore (WriteImage) writes through OpenRestoreTarget: the data reaches
// the device, aligned or not, and CBT sees it like any other write.
TEST_P(BackendConformance, RestoreTargetWritesReachTheDeviceAndCbt) {
  ASSERT_TRUE(backend().Attach(dev(0)).ok());
  auto target = backend().OpenRestoreTarget(dev(0));
  ASSERT_TRUE(target.ok()) << target.status();
  const uint64_t size = backend().ListDevices()->at(0).size_bytes;
  EXPECT_EQ((*target)->size_bytes(), size);
  const auto big = Pattern(3 * kMiB, 21);    // aligned: the O_DIRECT path
  const auto odd = Pattern(70 * 1024 + 5, 22);  // unaligned both ends
  ASSERT_TRUE((*target)->WriteAt(kMiB, big).ok());
  ASSERT_TRUE((*target)->WriteAt(5 * kMiB + 513, odd).ok());
  ASSERT_TRUE((*target)->Flush().ok());
  target->reset();
  std::vector<uint8_t> got(big.size());
  ASSERT_TRUE(target_->Read(dev(0), kMiB, got).ok());
  EXPECT_TRUE(got == big);
  got.resize(odd.size());
  ASSERT_TRUE(target_->Read(dev(0), 5 * kMiB + 513, got).ok());
  EXPECT_TRUE(got == odd);
  Uuid id = TakeSnapshot({dev(0)});
  (void)id;
  const uint32_t bs = backend().GetCbtInfo(dev(0))->block_size_bytes;
  const std::vector<uint8_t> frozen = FrozenMap(dev(0));
  for (uint32_t b = 0; b < frozen.size(); ++b) {
    const uint64_t lo = uint64_t{b} * bs, hi = lo + bs;
    const bool written = (lo < kMiB + big.size() && hi > kMiB) ||
                         (lo < 5 * kMiB + 513 + odd.size() && hi > 5 * kMiB + 513);
    EXPECT_EQ(frozen[b], written ? 1 : 0) << "block " << b;
  }
}

TEST_P(BackendConformance, RestoreTargetRefusesWritesBeyondTheDevice) {
  auto target = backend().OpenRestoreTarget(dev(0));
  ASSERT_TRUE(target.ok()) << target.status();
  const auto data = Pattern(64 * 1024, 23);
  EXPECT_EQ((*target)->WriteAt((*target)->size_bytes() - 4096, data).code(),
            absl::StatusCode::kOutOfRange);
}

TEST_P(BackendConformance, RestoreTargetIsRefusedForADeviceInASnapshot) {
  Uuid id = TakeSnapshot({dev(1)});
  auto target = backend().OpenRestoreTarget(dev(1));
  EXPECT_EQ(target.status().code(), absl::StatusCode::kFailedPrecondition) << target.status();
  EXPECT_THAT(std::string(target.status().message()), HasSubstr("snapshot"));
  ASSERT_TRUE(backend().DestroySnapshot(id).ok());
  EXPECT_TRUE(backend().OpenRestoreTarget(dev(1)).ok());
}

TEST_P(BackendConformance, RestoreTargetIsExclusive) {
  auto first = backend().OpenRestoreTarget(dev(0));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = backend().OpenRestoreTarget(dev(0));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  first->reset();
  EXPECT_TRUE(backend().OpenRestoreTarget(dev(0)).ok());
}

TEST_P(BackendConformance, RestoreTargetOfAnUnknownDeviceIsNotFound) {
  EXPECT_EQ(backend().OpenRestoreTarget("blkfleet-no-such-device").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace blkfleet::conformance
