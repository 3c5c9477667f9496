// SPDX-License-Identifier: Apache-2.0
// AgentService::StreamImage: the request side (start, known digests, done)
// and its validation; the chunk pipeline is in image_streamer.cc.

#include <zstd.h>

#include "absl/strings/str_cat.h"
#include "agent/agent_service.h"
#include "agent/image_streamer.h"
#include "common/status_util.h"

namespace blkfleet::agent {
namespace {

constexpr uint32_t kMinChunkBytes = 64 * 1024;
constexpr uint32_t kMaxChunkBytes = 64 * 1024 * 1024;

absl::Status ValidateStart(const v1::StreamImageStart& start) {
  const uint32_t cs = start.chunk_size_bytes();
  if (cs < kMinChunkBytes || cs > kMaxChunkBytes || (cs & (cs - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "start.chunk_size_bytes: ", cs, " is not a power of two between 64 KiB and 64 MiB"));
  }
  if (start.zstd_level() < ZSTD_minCLevel() || start.zstd_level() > ZSTD_maxCLevel()) {
    return absl::InvalidArgumentError(absl::StrCat("start.zstd_level: ", start.zstd_level(),
                                                   " is outside ", ZSTD_minCLevel(), " .. ",
                                                   ZSTD_maxCLevel()));
  }
  return absl::OkStatus();
}

// The requested chunks as ascending [first, count) pairs, resume applied.
absl::StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> PlanRanges(
    const v1::StreamImageStart& start, uint64_t chunk_count) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  if (start.ranges().empty()) {
    ranges.emplace_back(0, chunk_count);
  } else {
    uint64_t end = 0;
    for (int i = 0; i < start.ranges_size(); ++i) {
      const auto& r = start.ranges(i);
      const std::string field = absl::StrCat("start.ranges[", i, "]");
      if (r.count() == 0) return absl::InvalidArgumentError(absl::StrCat(field, ": count is 0"));
      if (r.first() > chunk_count || r.count() > chunk_count - r.first()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": chunks [", r.first(), ", +",
                                                       r.count(), ") are beyond the device's ",
                                                       chunk_count, " chunks"));
      }
      if (i > 0 && r.first() < end) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": not ascending or overlaps the range before"));
      }
      end = r.first() + r.count();
      ranges.emplace_back(r.first(), r.count());
    }
  }
  if (start.resume_from_chunk() > chunk_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("start.resume_from_chunk: ", start.resume_from_chunk(),
                     " is beyond the device's ", chunk_count, " chunks"));
  }
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (auto [first, count] : ranges) {
    const uint64_t end = first + count;
    first = std::max(first, start.resume_from_chunk());
    if (first < end) out.emplace_back(first, end - first);
  }
  return out;
}

}  // namespace

absl::Status AgentService::DoStreamImage(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::StreamImageResponse, v1::StreamImageRequest>* stream) {
  v1::StreamImageRequest req;
  if (!stream->Read(&req)) return absl::InvalidArgumentError("start: the stream ended before it");
  if (!req.has_start()) {
    return absl::InvalidArgumentError("start: missing (it must be the first message)");
  }
  const v1::StreamImageStart start = req.start();
  BLKFLEET_RETURN_IF_ERROR(ValidateStart(start));
  std::optional<Uuid> id = Uuid::Parse(start.snapshot_id());
  if (!id || start.snapshot_id().size() != 36) {
    return absl::InvalidArgumentError(absl::StrCat(
        "start.snapshot_id: \"", start.snapshot_id().substr(0, 64), "\" is not a snapshot id"));
  }

  ImageStreamPlan plan;
  plan.chunk_size = start.chunk_size_bytes();
  plan.compress = !start.disable_compression();
  plan.zstd_level = start.zstd_level() == 0 ? 1 : start.zstd_level();
  plan.window_bytes = options_.stream_window_bytes;
  if (!start.chunk_id_key().empty()) {
    BLKFLEET_ASSIGN_OR_RETURN(plan.id_fn,
                              ChunkIdFn::Keyed(start.chunk_id_key(), "start.chunk_id_key"));
  }

  // Known digests, until known_digests_done.
  for (;;) {
    if (!stream->Read(&req)) {
      return absl::InvalidArgumentError("known_digests_done: the stream ended before it");
    }
    if (req.has_known_digests_done()) break;
    if (req.has_start()) return absl::InvalidArgumentError("start: sent twice");
    if (!req.has_known_digests()) {
      return absl::InvalidArgumentError("msg: a request with no message set");
    }
    const auto& digests = req.known_digests().sha256();
    for (int i = 0; i < digests.size(); ++i) {
      std::optional<Sha256Digest> d = DigestFromBytes(digests[i]);
      if (!d) {
        return absl::InvalidArgumentError(
            absl::StrCat("known_digests.sha256[", i, "]: ", digests[i].size(), " bytes, not 32"));
      }
      plan.known.insert(*d);
    }
  }

  ExpireLeases();
  BLKFLEET_ASSIGN_OR_RETURN(Record record, FindRecord(*id));
  bool in_snapshot = false;
  for (const v1::SnapshotDevice& d : record.devices) in_snapshot |= d.device() == start.device();
  if (!in_snapshot) {
    return absl::NotFoundError(
        absl::StrCat("start.device: \"", start.device(), "\" is not in snapshot ", id->ToString()));
  }
  BLKFLEET_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotImage> image,
                            backend_->OpenImage(*id, start.device()));
  BLKFLEET_ASSIGN_OR_RETURN(SnapshotStatus status, backend_->GetSnapshotStatus(*id));
  if (status.corrupted) {
    return absl::AbortedError(
        absl::StrCat("snapshot ", id->ToString(), " is corrupted: ", status.error));
  }
  plan.image = image.get();
  const uint64_t chunk_count = (image->size_bytes() + plan.chunk_size - 1) / plan.chunk_size;
  BLKFLEET_ASSIGN_OR_RETURN(plan.ranges, PlanRanges(start, chunk_count));

  const absl::Time stream_start = absl::Now();
  BLKFLEET_ASSIGN_OR_RETURN(
      v1::StreamImageSummary summary,
      StreamImageChunks(
          plan, &pool_, [stream](v1::StreamImageResponse& r) { return stream->Write(r); },
          [ctx] { return ctx->IsCancelled(); }));
  v1::StreamImageResponse last;
  *last.mutable_summary() = summary;
  if (!stream->Write(last)) return absl::CancelledError("StreamImage: the client went away");
  metrics::StreamFinished(summary.bytes_read(), absl::ToDoubleSeconds(absl::Now() - stream_start));
  return absl::OkStatus();
}

}  // namespace blkfleet::agent
