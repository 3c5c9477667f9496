// SPDX-License-Identifier: Apache-2.0
// Unit tests of the sim backend: its sizes, files, copy-on-write, image
// writes, overflow, CBT numbering and the test oracle.

#include "agent/sim_backend.h"

#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::agent {
namespace {

using ::blkfleet::testing::RandomBytes;
using ::blkfleet::testing::TempDir;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

std::vector<uint8_t> ReadAll(SnapshotImage& image) {
  std::vector<uint8_t> out(image.size_bytes());
  EXPECT_TRUE(image.ReadAt(0, out).ok());
  return out;
}

std::vector<uint8_t> ReadAll(SimBackend& sim, const std::string& dev, uint64_t size) {
  std::vector<uint8_t> out(size);
  EXPECT_TRUE(sim.Read(dev, 0, out).ok());
  return out;
}

class SimBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { Open({{"vda", 16 * kMiB}, {"vdb", 8 * kMiB}}); }

  void Open(std::vector<SimDeviceSpec> devices, std::string oracle = "") {
    sim_.reset();
    SimOptions o;
    o.dir = dir_.Sub("devices");
    o.devices = std::move(devices);
    o.oracle_dir = std::move(oracle);
    auto sim = SimBackend::Open(o);
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = std::move(sim).value();
    sim_->SetEventHandler([this](const BackendEvent& e) {
      absl::MutexLock lock(&events_mu_);
      events_.push_back(e);
    });
  }

  // Attaches (if needed), creates, adds and takes.
  Uuid Take(std::vector<std::string> devices, uint64_t limit = 64 * kMiB) {
    for (const auto& d : devices) {
      absl::Status st = sim_->Attach(d);
      EXPECT_TRUE(st.ok() || absl::IsAlreadyExists(st)) << st;
    }
    auto id = sim_->CreateSnapshot({dir_.Sub("diff"), limit});
    EXPECT_TRUE(id.ok()) << id.status();
    for (const auto& d : devices) EXPECT_TRUE(sim_->AddDevice(*id, d).ok());
    EXPECT_TRUE(sim_->TakeSnapshot(*id).ok());
    return *id;
  }

  std::vector<uint8_t> FrozenMap(const std::string& dev) {
    auto info = sim_->GetCbtInfo(dev);
    EXPECT_TRUE(info.ok());
    std::vector<uint8_t> map(info->block_count);
    EXPECT_TRUE(sim_->ReadCbtMap(dev, 0, map).ok());
    return map;
  }

  std::vector<BackendEvent> Events() {
    absl::MutexLock lock(&events_mu_);
    return events_;
  }

  TempDir dir_;
  std::unique_ptr<SimBackend> sim_;
  absl::Mutex events_mu_;
  std::vector<BackendEvent> events_ ABSL_GUARDED_BY(events_mu_);
};

TEST(SimSizes, PowersOfTwoWithinTheModuleDefaults) {
  constexpr uint64_t kGiB = 1ull << 30;
  EXPECT_EQ(SimBackend::CbtBlockSizeFor(16 * kMiB), 64 * 1024u);
  EXPECT_EQ(SimBackend::CbtBlockSizeFor(128 * kGiB), 64 * 1024u);  // exactly 2,097,152 blocks
  EXPECT_EQ(SimBackend::CbtBlockSizeFor(128 * kGiB + 512), 128 * 1024u);
  EXPECT_EQ(SimBackend::CbtBlockSizeFor(1024 * kGiB), 512 * 1024u);
  EXPECT_EQ(SimBackend::CbtBlockSizeFor(1ull << 50), 64 * kMiB);  // capped
  EXPECT_EQ(SimBackend::ChunkSizeFor(16 * kMiB), 256 * 1024u);
  EXPECT_EQ(SimBackend::ChunkSizeFor(1024 * kGiB), 512 * 1024u);
  EXPECT_EQ(SimBackend::ChunkSizeFor(1ull << 50), 64 * kMiB);
  for (uint64_t size = 512; size <= (1ull << 47); size = size * 3 + 512) {  // up to 128 TiB
    uint32_t b = SimBackend::CbtBlockSizeFor(size);
    EXPECT_EQ(b & (b - 1), 0u);
    EXPECT_LE((size + b - 1) / b, 2'097'152u) << size;
  }
}

TEST_F(SimBackendTest, DeviceFilesAreCreatedZeroedAndKeepTheirData) {
  EXPECT_EQ(ReadAll(*sim_, "vdb", 8 * kMiB), std::vector<uint8_t>(8 * kMiB, 0));
  auto data = RandomBytes(4096, 1);
  ASSERT_TRUE(sim_->Write("vdb", 12288, data).ok());
  Open({{"vda", 16 * kMiB}, {"vdb", 8 * kMiB}});
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE(sim_->Read("vdb", 12288, back).ok());
  EXPECT_EQ(back, data);
}

TEST_F(SimBackendTest, OpenRefusesBadInputAndChangesNothing) {
  SimOptions o;
  o.dir = dir_.Sub("devices");
  o.devices = {{"vdc", kMiB}, {"vdb", 4 * kMiB}};  // vdb exists with 8 MiB
  auto sim = SimBackend::Open(o);
  EXPECT_EQ(sim.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(sim.status().message(), HasSubstr("vdb"));
  struct stat st;
  EXPECT_NE(::stat((o.dir + "/vdc.img").c_str(), &st), 0) << "vdc was created";
  o.devices = {{"../x", kMiB}};
  EXPECT_EQ(SimBackend::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.devices = {{"x", 1000}};
  EXPECT_EQ(SimBackend::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.devices = {{"x", kMiB}, {"x", kMiB}};
  EXPECT_EQ(SimBackend::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SimBackendTest, WritesOutsideTheDeviceFail) {
  std::vector<uint8_t> data(4096);
  EXPECT_EQ(sim_->Write("vdb", 8 * kMiB - 2048, data).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(sim_->Write("nope", 0, data).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sim_->Read("vdb", 8 * kMiB, data).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(SimBackendTest, ImageKeepsTheContentOfTheTakeWhileTheDeviceChanges) {
  auto before = RandomBytes(16 * kMiB, 2);
  ASSERT_TRUE(sim_->Write("vda", 0, before).ok());
  Uuid id = Take({"vda"});
  const uint32_t chunk = *sim_->ChunkSize("vda");
  // Overwrite parts of three chunks, one of them twice.
  ASSERT_TRUE(sim_->Write("vda", 100, RandomBytes(10, 3)).ok());
  ASSERT_TRUE(sim_->Write("vda", 5 * chunk - 10, RandomBytes(20, 4)).ok());
  ASSERT_TRUE(sim_->Write("vda", 120, RandomBytes(4096, 5)).ok());

  auto image = sim_->OpenImage(id, "vda");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(ReadAll(**image), before);
  EXPECT_NE(ReadAll(*sim_, "vda", 16 * kMiB), before);
  // Chunk records exist only for the three chunks that differ.
  EXPECT_EQ(sim_->GetSnapshotStatus(id)->diff_storage_used_bytes, 3u * chunk);
  // An unaligned read across a saved and an unsaved chunk.
  std::vector<uint8_t> part(chunk + 7);
  ASSERT_TRUE((*image)->ReadAt(4 * chunk + 3, part).ok());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), before.begin() + 4 * chunk + 3));
  EXPECT_EQ((*image)->ReadAt(16 * kMiB - 1, part).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(SimBackendTest, ImageMatchesTheOracleUnderConcurrentWrites) {
  Open({{"vda", 16 * kMiB}, {"vdb", 8 * kMiB}}, dir_.Sub("oracle"));
  ASSERT_TRUE(sim_->Write("vda", 0, RandomBytes(16 * kMiB, 6)).ok());
  std::atomic<bool> stop = false;
  std::atomic<int> writes = 0;
  std::atomic<bool> failed = false;
  std::thread writer([&] {
    for (uint64_t seed = 100; !stop; ++seed) {
      auto data = RandomBytes(8192, seed);
      if (!sim_->Write("vda", (seed * 7919 * 4096) % (16 * kMiB - 8192), data).ok()) {
        failed = true;
        break;
      }
      ++writes;
    }
  });
  while (writes < 20 && !failed) std::this_thread::yield();
  Uuid id = Take({"vda", "vdb"});
  const int at_take = writes;
  while (writes < at_take + 50 && !failed) std::this_thread::yield();
  auto image = sim_->OpenImage(id, "vda");
  ASSERT_TRUE(image.ok());
  std::vector<uint8_t> from_image = ReadAll(**image);
  stop = true;
  writer.join();
  EXPECT_FALSE(failed);
  std::ifstream oracle(dir_.path() + "/oracle/" + id.ToString() + "-vda.img", std::ios::binary);
  std::vector<uint8_t> expected((std::istreambuf_iterator<char>(oracle)), {});
  ASSERT_EQ(expected.size(), 16 * kMiB);
  EXPECT_EQ(from_image, expected);
  EXPECT_NE(ReadAll(*sim_, "vda", 16 * kMiB), expected) << "the writer changed nothing";
}

TEST_F(SimBackendTest, ImageWritesGoToTheDifferenceStorageOnly) {
  auto before = RandomBytes(8 * kMiB, 7);
  ASSERT_TRUE(sim_->Write("vdb", 0, before).ok());
  Uuid id = Take({"vdb"});
  auto image = sim_->OpenImage(id, "vdb");
  ASSERT_TRUE(image.ok());
  auto patch = RandomBytes(70000, 8);
  ASSERT_TRUE((*image)->WriteAt(300000, patch).ok());
  std::vector<uint8_t> back(patch.size());
  ASSERT_TRUE((*image)->ReadAt(300000, back).ok());
  EXPECT_EQ(back, patch);
  EXPECT_EQ(ReadAll(*sim_, "vdb", 8 * kMiB), before);
  // The device write after the image write must not overwrite the image.
  ASSERT_TRUE(sim_->Write("vdb", 300000, RandomBytes(100, 9)).ok());
  ASSERT_TRUE((*image)->ReadAt(300000, back).ok());
  EXPECT_EQ(back, patch);
  // Image writes are tracked: in the held snapshot's frozen map with its
  // own change number (1), in the active map with the next one (2).
  const uint32_t block = sim_->GetCbtInfo("vdb")->block_size_bytes;
  auto touched = [&](uint32_t b) {
    return b >= 300000 / block && b <= (300000 + 70000 - 1) / block;
  };
  auto held = FrozenMap("vdb");
  for (uint32_t b = 0; b < held.size(); ++b) {
    EXPECT_EQ(held[b], touched(b) ? 1 : 0) << "block " << b;
  }
  ASSERT_TRUE(sim_->DestroySnapshot(id).ok());
  Take({"vdb"});
  auto map = FrozenMap("vdb");
  for (uint32_t b = 0; b < map.size(); ++b) EXPECT_EQ(map[b], touched(b) ? 2 : 0) << "block " << b;
}

TEST_F(SimBackendTest, OverflowCorruptsTheSnapshotButNeverTheDevice) {
  const uint32_t chunk = *sim_->ChunkSize("vda");
  Uuid id = Take({"vda"}, 2 * chunk);
  auto image = sim_->OpenImage(id, "vda");
  ASSERT_TRUE(image.ok());
  auto data = RandomBytes(4 * chunk, 10);
  ASSERT_TRUE(sim_->Write("vda", 0, data).ok());
  ASSERT_TRUE(sim_->Write("vda", 8 * chunk, data).ok());
  EXPECT_EQ(ReadAll(*sim_, "vda", 16 * kMiB).size(), 16 * kMiB);
  std::vector<uint8_t> back(4 * chunk);
  ASSERT_TRUE(sim_->Read("vda", 0, back).ok());
  EXPECT_EQ(back, data);
  ASSERT_TRUE(sim_->Read("vda", 8 * chunk, back).ok());
  EXPECT_EQ(back, data);

  auto status = sim_->GetSnapshotStatus(id);
  EXPECT_TRUE(status->corrupted);
  EXPECT_EQ(status->error_code, -ENOSPC);
  EXPECT_LE(status->diff_storage_used_bytes, 2u * chunk);
  absl::Status read = (*image)->ReadAt(0, back);
  EXPECT_EQ(read.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(read.message(), HasSubstr("overflow"));
  auto events = Events();
  ASSERT_EQ(events.size(), 2u) << "no-space and corrupted once, not once per write";
  EXPECT_EQ(events[0].kind, BackendEvent::Kind::kNoSpace);
  EXPECT_EQ(events[0].snapshot_id, id);
  EXPECT_EQ(events[0].requested_bytes, 3u * chunk)
      << "the total size asked for: two chunks stored, a third one needed";
  EXPECT_EQ(events[1].kind, BackendEvent::Kind::kCorrupted);
  EXPECT_EQ(events[1].device, "vda");
  EXPECT_EQ(events[1].error_code, -ENOSPC);
  EXPECT_EQ((*image)->WriteAt(0, back).code(), absl::StatusCode::kAborted);
}

TEST_F(SimBackendTest, CbtMarksFreezesAndWrapsToANewGeneration) {
  ASSERT_TRUE(sim_->Attach("vdb").ok());
  auto info = sim_->GetCbtInfo("vdb");
  EXPECT_EQ(info->change_number, 0);
  EXPECT_EQ(info->block_size_bytes, 64 * 1024u);
  EXPECT_EQ(info->block_count, 128u);
  const Uuid gen = info->generation_id;
  const uint32_t block = info->block_size_bytes;
  for (int take = 1; take <= 255; ++take) {
    std::vector<uint8_t> one(1, static_cast<uint8_t>(take));
    ASSERT_TRUE(sim_->Write("vdb", static_cast<uint64_t>(take % 128) * block + 5, one).ok());
    Uuid id = Take({"vdb"});
    info = sim_->GetCbtInfo("vdb");
    ASSERT_EQ(info->change_number, take);
    ASSERT_EQ(info->generation_id, gen) << "take " << take;
    ASSERT_EQ(FrozenMap("vdb")[take % 128], take);
    ASSERT_TRUE(sim_->DestroySnapshot(id).ok());
  }
  // The wrap happened after take 255: the map is cleared.
  Take({"vdb"});
  info = sim_->GetCbtInfo("vdb");
  EXPECT_EQ(info->change_number, 1);
  EXPECT_NE(info->generation_id, gen);
  EXPECT_EQ(FrozenMap("vdb"), std::vector<uint8_t>(128, 0));
}

TEST_F(SimBackendTest, DestroyTruncatesAFileStorage) {
  std::string file = dir_.path() + "/diff.bin";
  std::ofstream(file).put('x');
  ASSERT_TRUE(sim_->Attach("vdb").ok());
  auto id = sim_->CreateSnapshot({file, 64 * kMiB});
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(sim_->AddDevice(*id, "vdb").ok());
  ASSERT_TRUE(sim_->TakeSnapshot(*id).ok());
  ASSERT_TRUE(sim_->Write("vdb", 0, RandomBytes(kMiB, 11)).ok());
  struct stat st;
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kMiB);
  ASSERT_TRUE(sim_->DestroySnapshot(*id).ok());
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
}

TEST_F(SimBackendTest, StorageMustNotBeADeviceOfTheSnapshot) {
  ASSERT_TRUE(sim_->Attach("vdb").ok());
  auto id = sim_->CreateSnapshot({*sim_->DevicePath("vda"), 64 * kMiB});
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(sim_->Attach("vda").ok());
  EXPECT_EQ(sim_->AddDevice(*id, "vda").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(sim_->AddDevice(*id, "vdb").ok());
  EXPECT_EQ(sim_->CreateSnapshot({"/nonexistent/x", kMiB}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(sim_->CreateSnapshot({dir_.path(), 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SimBackendTest, DetachIsRefusedInASnapshotAndReattachStartsANewGeneration) {
  Uuid id = Take({"vda"});
  Uuid gen = sim_->GetCbtInfo("vda")->generation_id;
  EXPECT_EQ(sim_->Detach("vda").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(sim_->DestroySnapshot(id).ok());
  ASSERT_TRUE(sim_->Detach("vda").ok());
  EXPECT_EQ(sim_->Detach("vda").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sim_->GetCbtInfo("vda").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(sim_->Attach("vda").ok());
  EXPECT_NE(sim_->GetCbtInfo("vda")->generation_id, gen);
  EXPECT_EQ(sim_->GetCbtInfo("vda")->change_number, 0);
}

}  // namespace
}  // namespace blkfleet::agent
