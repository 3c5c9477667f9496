// SPDX-License-Identifier: Apache-2.0
// Unit tests of the Agent gRPC service (everything but StreamImage, which
// has its own file): validation, lifecycle, idempotency, pagination, leases
// driven by a fake clock, events, CBT maps and health.

#include <grpcpp/generic/generic_stub.h>

#include <functional>
#include <random>
#include <thread>

#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/zstd_codec.h"
#include "gmock/gmock.h"
#include "tests/unit/agent/agent_fixture.h"

namespace blkfleet::agent {
namespace {

using ::testing::HasSubstr;

TEST_F(AgentFixture, AgentInfoNamesTheSimBackend) {
  v1::AgentInfo info;
  ASSERT_TRUE(stub_->GetAgentInfo(Ctx().get(), {}, &info).ok());
  EXPECT_EQ(info.hostname(), "test-host");
  EXPECT_EQ(info.backend(), "sim");
  EXPECT_EQ(info.agent_version(), "0.0.test");
  EXPECT_EQ(info.start_time().seconds(), absl::ToUnixSeconds(clock_.Now()));
}

TEST_F(AgentFixture, CreateSnapshotRejectsMalformedRequestsNamingTheField) {
  struct Case {
    std::vector<std::string> devices;
    uint64_t lease_ms;
    grpc::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {{}, 60'000, grpc::INVALID_ARGUMENT, "devices"},
      {{"vda", "vda"}, 60'000, grpc::INVALID_ARGUMENT, "devices[1]"},
      {{"vda", ""}, 60'000, grpc::INVALID_ARGUMENT, "devices[1]"},
      {{"vda"}, 999, grpc::INVALID_ARGUMENT, "lease_ms"},
      {{"vda"}, 86'400'001, grpc::INVALID_ARGUMENT, "lease_ms"},
      {{"vda", "nope"}, 60'000, grpc::NOT_FOUND, "nope"},
  };
  for (const Case& c : cases) {
    v1::Snapshot s;
    grpc::Status st = Create(c.devices, &s, c.lease_ms);
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.field));
  }
  v1::CreateSnapshotRequest req;
  req.add_devices("vda");
  req.set_lease_ms(60'000);
  req.set_diff_storage_path("missing");  // below the folder, but absent
  v1::Snapshot s;
  grpc::Status st = stub_->CreateSnapshot(Ctx().get(), req, &s);
  EXPECT_EQ(st.error_code(), grpc::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("diff_storage_path"));
  // Nothing was left behind by the refusals.
  EXPECT_TRUE(sim_->ListSnapshots()->empty());
  EXPECT_FALSE(sim_->GetCbtInfo("vda").ok()) << "a refused create attached the filter";
}

TEST_F(AgentFixture, CreateTakesAllDevicesAndReportsTheirCbtState) {
  v1::Snapshot s = MustCreate({"vda", "vdb"});
  EXPECT_EQ(s.state(), v1::SNAPSHOT_STATE_ACTIVE);
  ASSERT_EQ(s.devices_size(), 2);
  EXPECT_EQ(s.devices(0).device(), "vda");
  EXPECT_EQ(s.devices(0).size_bytes(), 16 * kMiB);
  EXPECT_EQ(s.devices(0).cbt().change_number(), 1u);
  EXPECT_EQ(s.devices(0).cbt().block_size_bytes(), 64 * 1024u);
  EXPECT_EQ(s.devices(0).cbt().block_count(), 256u);
  EXPECT_EQ(s.devices(0).cbt().generation_id().size(), 16u);
  EXPECT_FALSE(s.devices(1).image_path().empty());
  EXPECT_EQ(s.diff_storage_limit_bytes(), 64 * kMiB);
  EXPECT_EQ(s.lease_expire_time().seconds() - s.create_time().seconds(), 60);

  v1::ListDevicesResponse devices;
  ASSERT_TRUE(stub_->ListDevices(Ctx().get(), {}, &devices).ok());
  ASSERT_EQ(devices.devices_size(), 4);
  EXPECT_TRUE(devices.devices(0).tracked());
  EXPECT_EQ(devices.devices(0).snapshot_id(), s.id());
  EXPECT_EQ(devices.devices(0).cbt().change_number(), 1u);
  EXPECT_FALSE(devices.devices(2).tracked());
  EXPECT_TRUE(devices.devices(2).snapshot_id().empty());

  v1::Snapshot other;
  grpc::Status st = Create({"vdc", "vdb"}, &other);
  EXPECT_EQ(st.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr(s.id()));
}

TEST_F(AgentFixture, RequestIdMakesCreateIdempotent) {
  v1::Snapshot a, b, c;
  ASSERT_TRUE(Create({"vda"}, &a, 60'000, 0, "req-1").ok());
  ASSERT_TRUE(Create({"vda"}, &b, 60'000, 0, "req-1").ok());
  EXPECT_EQ(a.id(), b.id());
  EXPECT_EQ(sim_->ListSnapshots()->size(), 1u);
  grpc::Status st = Create({"vdb"}, &c, 60'000, 0, "req-1");
  EXPECT_EQ(st.error_code(), grpc::ALREADY_EXISTS);
  EXPECT_THAT(st.error_message(), HasSubstr("request_id"));
}

TEST_F(AgentFixture, GetListAndDestroy) {
  std::vector<std::string> ids;
  for (const char* d : {"vda", "vdb", "vdc"}) ids.push_back(MustCreate({d}).id());
  std::sort(ids.begin(), ids.end());

  v1::ListSnapshotsRequest req;
  req.set_page_size(2);
  v1::ListSnapshotsResponse page1, page2;
  ASSERT_TRUE(stub_->ListSnapshots(Ctx().get(), req, &page1).ok());
  ASSERT_EQ(page1.snapshots_size(), 2);
  EXPECT_EQ(page1.snapshots(0).id(), ids[0]);
  EXPECT_EQ(page1.snapshots(1).id(), ids[1]);
  ASSERT_FALSE(page1.next_page_token().empty());
  req.set_page_token(page1.next_page_token());
  ASSERT_TRUE(stub_->ListSnapshots(Ctx().get(), req, &page2).ok());
  ASSERT_EQ(page2.snapshots_size(), 1);
  EXPECT_EQ(page2.snapshots(0).id(), ids[2]);
  EXPECT_TRUE(page2.next_page_token().empty());

  req.set_page_token("garbage");
  EXPECT_EQ(stub_->ListSnapshots(Ctx().get(), req, &page2).error_code(), grpc::INVALID_ARGUMENT);
  req.set_page_token("");
  req.set_page_size(-1);
  EXPECT_EQ(stub_->ListSnapshots(Ctx().get(), req, &page2).error_code(), grpc::INVALID_ARGUMENT);

  v1::Snapshot got;
  ASSERT_TRUE(Get(ids[1], &got).ok());
  EXPECT_EQ(got.id(), ids[1]);
  EXPECT_EQ(Get("not-a-uuid").error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(Get(Uuid::Random().ToString()).error_code(), grpc::NOT_FOUND);

  v1::DestroySnapshotRequest destroy;
  destroy.set_id(ids[1]);
  v1::DestroySnapshotResponse dr;
  ASSERT_TRUE(stub_->DestroySnapshot(Ctx().get(), destroy, &dr).ok());
  EXPECT_EQ(Get(ids[1]).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(stub_->DestroySnapshot(Ctx().get(), destroy, &dr).error_code(), grpc::NOT_FOUND);
  destroy.set_allow_missing(true);
  EXPECT_TRUE(stub_->DestroySnapshot(Ctx().get(), destroy, &dr).ok());
  EXPECT_EQ(sim_->ListSnapshots()->size(), 2u);
}

// Collects the events of one WatchSnapshotEvents call on a thread.
class Watcher {
 public:
  Watcher(v1::Agent::Stub* stub, const std::string& id) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::WatchSnapshotEventsRequest req;
    req.set_snapshot_id(id);
    reader_ = stub->WatchSnapshotEvents(&ctx_, req);
    reader_->WaitForInitialMetadata();  // the subscription is in place
    thread_ = std::thread([this] {
      v1::SnapshotEvent e;
      while (reader_->Read(&e)) {
        absl::MutexLock lock(&mu_);
        events_.push_back(e);
      }
      status_ = reader_->Finish();
    });
  }
  // Waits until `n` events arrived (or 30 s passed).
  void WaitForEvents(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return events_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
  }
  // Waits for the stream to end.
  grpc::Status Finish() {
    thread_.join();
    return status_;
  }
  void Cancel() { ctx_.TryCancel(); }
  // Call after Finish().
  const std::vector<v1::SnapshotEvent>& events() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return events_;
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::SnapshotEvent>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<v1::SnapshotEvent> events_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_;
};

TEST_F(AgentFixture, LeaseExpiryDestroysTheSnapshotOnTheFakeClock) {
  v1::Snapshot s = MustCreate({"vda"}, 5'000);
  Watcher watcher(stub_.get(), s.id());
  clock_.Advance(absl::Seconds(4));
  EXPECT_EQ(service_->ExpireLeases(), 0);
  v1::RenewSnapshotLeaseRequest renew;
  renew.set_id(s.id());
  renew.set_lease_ms(5'000);
  v1::Snapshot renewed;
  ASSERT_TRUE(stub_->RenewSnapshotLease(Ctx().get(), renew, &renewed).ok());
  EXPECT_EQ(renewed.lease_expire_time().seconds(), absl::ToUnixSeconds(clock_.Now()) + 5);
  clock_.Advance(absl::Seconds(4));
  EXPECT_EQ(service_->ExpireLeases(), 0) << "the renewal was ignored";
  ASSERT_TRUE(Get(s.id()).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(service_->ExpireLeases(), 1);
  EXPECT_EQ(Get(s.id()).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(stub_->RenewSnapshotLease(Ctx().get(), renew, &renewed).error_code(), grpc::NOT_FOUND);
  EXPECT_TRUE(sim_->ListSnapshots()->empty()) << "copy-on-write still running";
  EXPECT_TRUE(watcher.Finish().ok());
  ASSERT_EQ(watcher.events().size(), 1u);
  EXPECT_EQ(watcher.events()[0].kind(), v1::SNAPSHOT_EVENT_KIND_LEASE_EXPIRED);
  // CBT goes on: the next snapshot of the device has change number 2.
  EXPECT_EQ(MustCreate({"vda"}).devices(0).cbt().change_number(), 2u);
}

TEST_F(AgentFixture, AnExpiredLeaseCannotBeRenewedBeforeTheReaperRuns) {
  v1::Snapshot s = MustCreate({"vdb"}, 1'000);
  clock_.Advance(absl::Milliseconds(1'000));
  v1::RenewSnapshotLeaseRequest renew;
  renew.set_id(s.id());
  renew.set_lease_ms(1'000);
  v1::Snapshot out;
  EXPECT_EQ(stub_->RenewSnapshotLease(Ctx().get(), renew, &out).error_code(), grpc::NOT_FOUND);
  EXPECT_TRUE(sim_->ListSnapshots()->empty());
  renew.set_lease_ms(100);
  EXPECT_EQ(stub_->RenewSnapshotLease(Ctx().get(), renew, &out).error_code(),
            grpc::INVALID_ARGUMENT);
}

TEST_F(AgentFixture, WatchSeesNoSpaceThenDestroyAndEnds) {
  v1::Snapshot s = MustCreate({"vdc"}, 60'000, 512 * 1024);
  Watcher watcher(stub_.get(), s.id());
  Watcher all(stub_.get(), "");
  ASSERT_TRUE(sim_->Write("vdc", 0, testing::RandomBytes(2 * kMiB, 1)).ok());
  v1::Snapshot got;
  ASSERT_TRUE(Get(s.id(), &got).ok());
  EXPECT_EQ(got.state(), v1::SNAPSHOT_STATE_CORRUPTED);
  EXPECT_THAT(got.error(), HasSubstr("overflow"));
  v1::DestroySnapshotRequest destroy;
  destroy.set_id(s.id());
  v1::DestroySnapshotResponse dr;
  ASSERT_TRUE(stub_->DestroySnapshot(Ctx().get(), destroy, &dr).ok());
  EXPECT_TRUE(watcher.Finish().ok());
  ASSERT_EQ(watcher.events().size(), 3u);
  EXPECT_EQ(watcher.events()[0].kind(), v1::SNAPSHOT_EVENT_KIND_NO_SPACE);
  EXPECT_EQ(watcher.events()[0].requested_bytes(), 768 * 1024u)
      << "the total size asked for (limit 512 KiB, one more 256 KiB chunk)";
  EXPECT_EQ(watcher.events()[1].kind(), v1::SNAPSHOT_EVENT_KIND_CORRUPTED);
  EXPECT_EQ(watcher.events()[1].device(), "vdc");
  EXPECT_EQ(watcher.events()[1].error_code(), -ENOSPC);
  EXPECT_EQ(watcher.events()[2].kind(), v1::SNAPSHOT_EVENT_KIND_DESTROYED);
  // A watch of every snapshot goes on until cancelled.
  all.WaitForEvents(3);
  all.Cancel();
  EXPECT_EQ(all.Finish().error_code(), grpc::CANCELLED);
  EXPECT_EQ(all.events().size(), 3u);

  v1::WatchSnapshotEventsRequest req;
  req.set_snapshot_id(s.id());
  EXPECT_EQ(stub_->WatchSnapshotEvents(Ctx().get(), req)->Finish().error_code(), grpc::NOT_FOUND);
  req.set_snapshot_id("x");
  EXPECT_EQ(stub_->WatchSnapshotEvents(Ctx().get(), req)->Finish().error_code(),
            grpc::INVALID_ARGUMENT);
}

TEST_F(AgentFixture, ReadCbtMapStreamsTheFrozenMap) {
  MustCreate({"vda"});  // change number 1; writes after it are marked 2
  ASSERT_TRUE(sim_->Write("vda", 3 * 65536 + 10, testing::RandomBytes(10, 2)).ok());
  ASSERT_TRUE(sim_->Write("vda", 200 * 65536, testing::RandomBytes(2 * 65536, 3)).ok());
  v1::ListSnapshotsResponse list;
  ASSERT_TRUE(stub_->ListSnapshots(Ctx().get(), {}, &list).ok());
  v1::DestroySnapshotRequest destroy;
  destroy.set_id(list.snapshots(0).id());
  v1::DestroySnapshotResponse dr;
  ASSERT_TRUE(stub_->DestroySnapshot(Ctx().get(), destroy, &dr).ok());
  v1::Snapshot s = MustCreate({"vda"});

  v1::ReadCbtMapRequest req;
  req.set_snapshot_id(s.id());
  req.set_device("vda");
  auto ctx = Ctx();
  auto reader = stub_->ReadCbtMap(ctx.get(), req);
  v1::ReadCbtMapResponse resp;
  std::string map;
  bool first = true;
  while (reader->Read(&resp)) {
    EXPECT_EQ(resp.has_cbt(), first);
    if (first) {
      EXPECT_EQ(resp.cbt().change_number(), 2u);
    }
    first = false;
    EXPECT_EQ(resp.first_block(), map.size());
    map += resp.map();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(map.size(), 256u);
  for (size_t b = 0; b < map.size(); ++b) {
    EXPECT_EQ(map[b], (b == 3 || b == 200 || b == 201) ? 2 : 0) << "block " << b;
  }

  req.set_first_block(250);
  req.set_block_count(6);
  auto ctx2 = Ctx();
  reader = stub_->ReadCbtMap(ctx2.get(), req);
  ASSERT_TRUE(reader->Read(&resp));
  EXPECT_EQ(resp.first_block(), 250u);
  EXPECT_EQ(resp.map().size(), 6u);
  EXPECT_TRUE(reader->Finish().ok());
  req.set_block_count(7);
  EXPECT_EQ(stub_->ReadCbtMap(Ctx().get(), req)->Finish().error_code(), grpc::INVALID_ARGUMENT);
  req.set_block_count(0);
  req.set_device("vdb");
  EXPECT_EQ(stub_->ReadCbtMap(Ctx().get(), req)->Finish().error_code(), grpc::NOT_FOUND);
}

// A WriteImage stream of `image` onto `device` with the given chunk size;
// `mutate` may damage chunk messages before they are sent.
grpc::Status SendImage(v1::Agent::Stub* stub, const std::string& device, const std::string& image,
                       uint32_t chunk_size, v1::WriteImageResponse* resp,
                       const std::function<void(v1::ImageChunk&)>& mutate = nullptr,
                       uint64_t stop_after = UINT64_MAX) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto writer = stub->WriteImage(&ctx, resp);
  v1::WriteImageRequest start;
  start.mutable_start()->set_device(device);
  start.mutable_start()->set_size_bytes(image.size());
  start.mutable_start()->set_chunk_size_bytes(chunk_size);
  writer->Write(start);
  ZstdCodec codec;
  for (uint64_t i = 0; i * chunk_size < image.size() && i < stop_after; ++i) {
    const std::string plain = image.substr(i * chunk_size, chunk_size);
    v1::WriteImageRequest m;
    v1::ImageChunk* c = m.mutable_chunk();
    c->set_index(i);
    c->set_offset_bytes(i * chunk_size);
    c->set_length_bytes(static_cast<uint32_t>(plain.size()));
    const Sha256Digest d = Sha256(plain);
    c->set_sha256(std::string(reinterpret_cast<const char*>(d.data()), d.size()));
    if (i % 2 == 0) {
      c->set_encoding(type::v1::CHUNK_ENCODING_RAW);
      c->set_data(plain);
    } else {
      std::string packed;
      EXPECT_TRUE(codec.Compress(std::span<const uint8_t>(
                                     reinterpret_cast<const uint8_t*>(plain.data()), plain.size()),
                                 1, &packed)
                      .ok());
      c->set_encoding(type::v1::CHUNK_ENCODING_ZSTD);
      c->set_data(packed);
    }
    if (mutate) mutate(*c);
    if (!writer->Write(m)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

std::string Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& ch : s) ch = static_cast<char>(rng() & 0x0f);  // compressible, not constant
  return s;
}

std::string DeviceBytes(SimBackend* sim, const std::string& device) {
  std::string out(*sim->DeviceSize(device), '\0');
  EXPECT_TRUE(sim->Read(device, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()),
                                                      out.size()))
                  .ok());
  return out;
}

TEST_F(AgentFixture, WriteImageWritesEveryChunkRawAndZstdAndAnswersTheBytes) {
  // vdd is 1 MiB + 4 KiB: the last chunk is short.
  const std::string image = Random(kMiB + 4096, 7);
  v1::WriteImageResponse resp;
  grpc::Status st = SendImage(stub_.get(), "vdd", image, 64 * 1024, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.bytes_written(), image.size());
  EXPECT_EQ(resp.chunks_written(), 17u);
  EXPECT_TRUE(DeviceBytes(sim_.get(), "vdd") == image);
}

TEST_F(AgentFixture, WriteImageOfASmallerImageLeavesTheRestOfTheDevice) {
  const std::string before = DeviceBytes(sim_.get(), "vdb");
  const std::string image = Random(kMiB, 8);
  v1::WriteImageResponse resp;
  ASSERT_TRUE(SendImage(stub_.get(), "vdb", image, 256 * 1024, &resp).ok());
  const std::string after = DeviceBytes(sim_.get(), "vdb");
  EXPECT_TRUE(after.substr(0, image.size()) == image);
  EXPECT_TRUE(after.substr(image.size()) == before.substr(image.size()));
}

TEST_F(AgentFixture, WriteImageRejectsAChunkWhoseDigestDoesNotMatchAndDoesNotWriteIt) {
  const std::string before = DeviceBytes(sim_.get(), "vdb");
  const std::string image = Random(kMiB, 9);
  v1::WriteImageResponse resp;
  grpc::Status st = SendImage(stub_.get(), "vdb", image, 64 * 1024, &resp, [](v1::ImageChunk& c) {
    if (c.index() == 3) (*c.mutable_sha256())[0] ^= 1;
  });
  EXPECT_EQ(st.error_code(), grpc::DATA_LOSS) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("chunk 3"));
  const std::string after = DeviceBytes(sim_.get(), "vdb");
  // Chunks 0..2 were written; chunk 3 and later were not.
  EXPECT_TRUE(after.substr(0, 3 * 64 * 1024) == image.substr(0, 3 * 64 * 1024));
  EXPECT_TRUE(after.substr(3 * 64 * 1024) == before.substr(3 * 64 * 1024));
}

TEST_F(AgentFixture, WriteImageRejectsDamagedZstdDigestOnlyAndOutOfOrderChunks) {
  const std::string image = Random(256 * 1024, 10);
  v1::WriteImageResponse resp;
  EXPECT_EQ(SendImage(stub_.get(), "vdb", image, 64 * 1024, &resp,
                      [](v1::ImageChunk& c) {
                        if (c.index() == 1) (*c.mutable_data())[c.data().size() / 2] ^= 0x55;
                      })
                .error_code(),
            grpc::DATA_LOSS);
  EXPECT_EQ(SendImage(stub_.get(), "vdb", image, 64 * 1024, &resp,
                      [](v1::ImageChunk& c) {
                        c.set_encoding(type::v1::CHUNK_ENCODING_DIGEST_ONLY);
                        c.clear_data();
                      })
                .error_code(),
            grpc::INVALID_ARGUMENT);
  EXPECT_EQ(SendImage(stub_.get(), "vdb", image, 64 * 1024, &resp,
                      [](v1::ImageChunk& c) { c.set_index(c.index() == 1 ? 2 : c.index()); })
                .error_code(),
            grpc::INVALID_ARGUMENT);
}

TEST_F(AgentFixture, WriteImageEndedEarlyIsAbortedNotSuccess) {
  const std::string image = Random(256 * 1024, 11);
  v1::WriteImageResponse resp;
  grpc::Status st = SendImage(stub_.get(), "vdb", image, 64 * 1024, &resp, nullptr, 2);
  EXPECT_EQ(st.error_code(), grpc::ABORTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("2 of 4"));
}

TEST_F(AgentFixture, WriteImageRefusesTargetsOutsideTheAllowlistInASnapshotOrTooSmall) {
  const std::string before_vda = DeviceBytes(sim_.get(), "vda");
  const std::string image = Random(kMiB, 12);
  v1::WriteImageResponse resp;
  grpc::Status st = SendImage(stub_.get(), "vda", image, 64 * 1024, &resp);
  EXPECT_EQ(st.error_code(), grpc::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("restore allowlist"));
  EXPECT_TRUE(DeviceBytes(sim_.get(), "vda") == before_vda);

  // vdd is 1 MiB + 4 KiB: a 2 MiB image does not fit.
  const std::string before_vdd = DeviceBytes(sim_.get(), "vdd");
  st = SendImage(stub_.get(), "vdd", Random(2 * kMiB, 13), 64 * 1024, &resp);
  EXPECT_EQ(st.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("does not fit"));
  EXPECT_TRUE(DeviceBytes(sim_.get(), "vdd") == before_vdd);

  const std::string before_vdb = DeviceBytes(sim_.get(), "vdb");
  v1::Snapshot snap = MustCreate({"vdb"});
  st = SendImage(stub_.get(), "vdb", image, 64 * 1024, &resp);
  EXPECT_EQ(st.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("snapshot"));
  EXPECT_TRUE(DeviceBytes(sim_.get(), "vdb") == before_vdb);

  st = SendImage(stub_.get(), "vdb", image, 1000, &resp);
  EXPECT_EQ(st.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("chunk_size_bytes"));
}

TEST_F(AgentFixture, CreateSnapshotRefusesADeviceBeingRestoredOnto) {
  auto ctx = Ctx();
  v1::WriteImageResponse resp;
  auto writer = stub_->WriteImage(ctx.get(), &resp);
  v1::WriteImageRequest start;
  start.mutable_start()->set_device("vdb");
  start.mutable_start()->set_size_bytes(kMiB);
  start.mutable_start()->set_chunk_size_bytes(64 * 1024);
  ASSERT_TRUE(writer->Write(start));
  // The agent claims the device once it has read the start message.
  grpc::Status st;
  v1::Snapshot s;
  for (int i = 0; i < 200; ++i) {
    st = Create({"vdb"}, &s);
    if (!st.ok()) break;
    v1::DestroySnapshotRequest dreq;
    dreq.set_id(s.id());
    v1::DestroySnapshotResponse dresp;
    ASSERT_TRUE(stub_->DestroySnapshot(Ctx().get(), dreq, &dresp).ok());
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(st.error_code(), grpc::FAILED_PRECONDITION) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("being restored"));
  ctx->TryCancel();
  writer->Finish().IgnoreError();
}

class SnapshotAllowlistFixture : public AgentFixture {
 protected:
  SnapshotAllowlistFixture() { snapshot_devices_ = {"vda"}; }
};

TEST_F(SnapshotAllowlistFixture, CreateSnapshotRefusesDevicesOutsideTheSnapshotAllowlist) {
  v1::Snapshot s;
  grpc::Status st = Create({"vda", "vdb"}, &s);
  EXPECT_EQ(st.error_code(), grpc::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("devices[1]"));
  EXPECT_THAT(st.error_message(), HasSubstr("snapshot allowlist"));
  EXPECT_TRUE(Create({"vda"}, &s).ok());
}

TEST_F(AgentFixture, HealthServiceAnswersServing) {
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::ByteBuffer request;  // HealthCheckRequest{service: ""} encodes to nothing
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  auto call = generic.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "status: SERVING";
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace blkfleet::agent
