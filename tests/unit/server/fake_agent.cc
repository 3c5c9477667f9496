// SPDX-License-Identifier: Apache-2.0
#include "tests/unit/server/fake_agent.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/zstd_codec.h"

namespace blkfleet::testing {

FakeAgent::FakeAgent() = default;

FakeAgent::~FakeAgent() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

void FakeAgent::Start() {
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.SetMaxReceiveMessageSize(64 << 20);
  b.RegisterService(this);
  server_ = b.BuildAndStart();
  address_ = absl::StrCat("127.0.0.1:", port);
}

void FakeAgent::AddDevice(const std::string& name, std::string data, uint32_t block_size) {
  absl::MutexLock l(&mu_);
  Device& d = devices_[name];
  d.block_size = block_size;
  d.map.assign((data.size() + block_size - 1) / block_size, 0);
  d.data = std::move(data);
  d.generation = Uuid::Random();
  d.change_number = 1;
}

void FakeAgent::Write(const std::string& name, uint64_t offset, const std::string& bytes) {
  absl::MutexLock l(&mu_);
  Device& d = devices_.at(name);
  d.data.replace(offset, bytes.size(), bytes);
  for (uint64_t b = offset / d.block_size; b <= (offset + bytes.size() - 1) / d.block_size; ++b) {
    d.map[b] = static_cast<uint8_t>(d.change_number);
  }
}

std::string FakeAgent::Data(const std::string& name) {
  absl::MutexLock l(&mu_);
  return devices_.at(name).data;
}

void FakeAgent::NewGeneration(const std::string& name) {
  absl::MutexLock l(&mu_);
  Device& d = devices_.at(name);
  d.generation = Uuid::Random();
  d.change_number = 1;
  std::fill(d.map.begin(), d.map.end(), 0);
}

void FakeAgent::BreakStreams(int times, int after_chunks) {
  absl::MutexLock l(&mu_);
  break_times_ = times;
  break_after_ = after_chunks;
}

void FakeAgent::CorruptNextChunk() {
  absl::MutexLock l(&mu_);
  corrupt_next_ = true;
}

void FakeAgent::DropSnapshots() {
  absl::MutexLock l(&mu_);
  snaps_.clear();
}

void FakeAgent::SetChunkDelay(absl::Duration d) {
  absl::MutexLock l(&mu_);
  chunk_delay_ = d;
}

std::vector<uint64_t> FakeAgent::stream_resume_points() {
  absl::MutexLock l(&mu_);
  return resume_points_;
}

int FakeAgent::live_snapshots() {
  absl::MutexLock l(&mu_);
  Expire();
  return static_cast<int>(snaps_.size());
}

int FakeAgent::lease_renewals() {
  absl::MutexLock l(&mu_);
  return renewals_;
}

int FakeAgent::snapshots_created() {
  absl::MutexLock l(&mu_);
  return created_;
}

uint64_t FakeAgent::chunks_sent_with_data() {
  absl::MutexLock l(&mu_);
  return data_chunks_;
}

void FakeAgent::Expire() {
  absl::Time now = absl::Now();
  for (auto it = snaps_.begin(); it != snaps_.end();) {
    it = it->second.lease_expires < now ? snaps_.erase(it) : std::next(it);
  }
}

grpc::Status FakeAgent::GetAgentInfo(grpc::ServerContext*, const av1::GetAgentInfoRequest*,
                                     av1::AgentInfo* resp) {
  resp->set_hostname("fake");
  resp->set_agent_version("0.0.0-fake");
  resp->set_backend("fake");
  return grpc::Status::OK;
}

grpc::Status FakeAgent::CreateSnapshot(grpc::ServerContext*, const av1::CreateSnapshotRequest* req,
                                       av1::Snapshot* resp) {
  absl::MutexLock l(&mu_);
  Expire();
  if (req->devices_size() == 0) return {grpc::StatusCode::INVALID_ARGUMENT, "devices"};
  if (req->lease_ms() < 1000 || req->lease_ms() > 86400000) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "lease_ms out of range"};
  }
  Snap snap;
  snap.lease_expires = absl::Now() + absl::Milliseconds(req->lease_ms());
  std::string id = Uuid::Random().ToString();
  resp->set_id(id);
  resp->set_state(av1::SNAPSHOT_STATE_ACTIVE);
  for (const auto& name : req->devices()) {
    auto it = devices_.find(name);
    if (it == devices_.end()) return {grpc::StatusCode::NOT_FOUND, "unknown device " + name};
    Device& d = it->second;
    SnapDevice sd;
    sd.data = d.data;
    sd.map = d.map;
    sd.cbt.set_generation_id(d.generation.ToBytes());
    sd.cbt.set_change_number(d.change_number);
    sd.cbt.set_block_size_bytes(d.block_size);
    sd.cbt.set_block_count(static_cast<uint32_t>(d.map.size()));
    auto* out = resp->add_devices();
    out->set_device(name);
    out->set_image_path("fake-" + name);
    out->set_size_bytes(d.data.size());
    *out->mutable_cbt() = sd.cbt;
    snap.devices[name] = std::move(sd);
    d.change_number += 1;  // later writes are newer than this snapshot
  }
  snaps_[id] = std::move(snap);
  ++created_;
  return grpc::Status::OK;
}

grpc::Status FakeAgent::RenewSnapshotLease(grpc::ServerContext*,
                                           const av1::RenewSnapshotLeaseRequest* req,
                                           av1::Snapshot* resp) {
  absl::MutexLock l(&mu_);
  Expire();
  auto it = snaps_.find(req->id());
  if (it == snaps_.end()) return {grpc::StatusCode::NOT_FOUND, "no snapshot " + req->id()};
  it->second.lease_expires = absl::Now() + absl::Milliseconds(req->lease_ms());
  ++renewals_;
  resp->set_id(req->id());
  return grpc::Status::OK;
}

grpc::Status FakeAgent::DestroySnapshot(grpc::ServerContext*,
                                        const av1::DestroySnapshotRequest* req,
                                        av1::DestroySnapshotResponse*) {
  absl::MutexLock l(&mu_);
  if (snaps_.erase(req->id()) == 0 && !req->allow_missing()) {
    return {grpc::StatusCode::NOT_FOUND, "no snapshot " + req->id()};
  }
  return grpc::Status::OK;
}

grpc::Status FakeAgent::ReadCbtMap(grpc::ServerContext*, const av1::ReadCbtMapRequest* req,
                                   grpc::ServerWriter<av1::ReadCbtMapResponse>* writer) {
  std::vector<uint8_t> map;
  type::v1::CbtState cbt;
  {
    absl::MutexLock l(&mu_);
    Expire();
    auto it = snaps_.find(req->snapshot_id());
    if (it == snaps_.end()) return {grpc::StatusCode::NOT_FOUND, "no snapshot"};
    auto d = it->second.devices.find(req->device());
    if (d == it->second.devices.end()) return {grpc::StatusCode::NOT_FOUND, "no device"};
    map = d->second.map;
    cbt = d->second.cbt;
  }
  constexpr size_t kPiece = 1000;  // several messages even for small maps
  for (size_t at = 0; at < map.size() || at == 0; at += kPiece) {
    av1::ReadCbtMapResponse r;
    if (at == 0) *r.mutable_cbt() = cbt;
    r.set_first_block(static_cast<uint32_t>(at));
    size_t n = std::min(kPiece, map.size() - at);
    r.set_map(std::string(map.begin() + at, map.begin() + at + n));
    writer->Write(r);
    if (map.empty()) break;
  }
  return grpc::Status::OK;
}

grpc::Status FakeAgent::StreamImage(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<av1::StreamImageResponse, av1::StreamImageRequest>* stream) {
  av1::StreamImageRequest req;
  if (!stream->Read(&req) || !req.has_start()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "missing start"};
  }
  const av1::StreamImageStart start = req.start();
  std::set<std::string> known;
  while (stream->Read(&req)) {
    if (req.has_known_digests()) {
      for (const auto& d : req.known_digests().sha256()) known.insert(d);
    } else if (req.has_known_digests_done()) {
      break;
    }
  }
  std::string image;
  int break_after = -1;
  absl::Duration delay;
  {
    absl::MutexLock l(&mu_);
    Expire();
    resume_points_.push_back(start.resume_from_chunk());
    auto it = snaps_.find(start.snapshot_id());
    if (it == snaps_.end()) return {grpc::StatusCode::NOT_FOUND, "no snapshot"};
    auto d = it->second.devices.find(start.device());
    if (d == it->second.devices.end()) return {grpc::StatusCode::NOT_FOUND, "no device"};
    image = d->second.data;
    if (break_times_ > 0) {
      --break_times_;
      break_after = break_after_;
    }
    delay = chunk_delay_;
  }
  const uint64_t cs = start.chunk_size_bytes();
  const uint64_t count = (image.size() + cs - 1) / cs;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& r : start.ranges()) ranges.emplace_back(r.first(), r.count());
  if (ranges.empty()) ranges.emplace_back(0, count);
  ZstdCodec codec;
  av1::StreamImageSummary summary;
  int sent = 0;
  for (const auto& [first, n] : ranges) {
    for (uint64_t i = first; i < first + n; ++i) {
      if (i < start.resume_from_chunk()) continue;
      if (ctx->IsCancelled()) return {grpc::StatusCode::CANCELLED, "cancelled"};
      if (break_after >= 0 && sent == break_after) {
        return {grpc::StatusCode::UNAVAILABLE, "fake agent: stream broken"};
      }
      if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
      {
        absl::MutexLock l(&mu_);
        Expire();
        if (snaps_.count(start.snapshot_id()) == 0) {
          return {grpc::StatusCode::NOT_FOUND, "snapshot expired"};
        }
      }
      std::string plain = image.substr(i * cs, cs);
      std::string digest = DigestToBytes(Sha256(plain));
      av1::StreamImageResponse resp;
      auto* c = resp.mutable_chunk();
      c->set_index(i);
      c->set_offset_bytes(i * cs);
      c->set_length_bytes(static_cast<uint32_t>(plain.size()));
      c->set_sha256(digest);
      summary.set_chunks_read(summary.chunks_read() + 1);
      summary.set_bytes_read(summary.bytes_read() + plain.size());
      if (known.count(digest) != 0) {
        c->set_encoding(type::v1::CHUNK_ENCODING_DIGEST_ONLY);
      } else {
        known.insert(digest);
        bool corrupt = false;
        {
          absl::MutexLock l(&mu_);
          corrupt = std::exchange(corrupt_next_, false);
          ++data_chunks_;
        }
        if (corrupt) plain[plain.size() / 2] ^= 1;
        std::string frame;
        codec.Compress({reinterpret_cast<const uint8_t*>(plain.data()), plain.size()}, 1, &frame)
            .IgnoreError();
        c->set_encoding(type::v1::CHUNK_ENCODING_ZSTD);
        summary.set_chunks_sent(summary.chunks_sent() + 1);
        summary.set_bytes_sent(summary.bytes_sent() + frame.size());
        c->set_data(std::move(frame));
      }
      if (!stream->Write(resp)) return {grpc::StatusCode::CANCELLED, "client went away"};
      ++sent;
    }
  }
  av1::StreamImageResponse last;
  *last.mutable_summary() = summary;
  stream->Write(last);
  return grpc::Status::OK;
}

}  // namespace blkfleet::testing
