// SPDX-License-Identifier: Apache-2.0
#include "agent/image_streamer.h"

#include <algorithm>
#include <deque>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/agent_metrics.h"
#include "common/status_util.h"
#include "common/zstd_codec.h"

namespace blkfleet::agent {
namespace {

using blkfleet::type::v1::CHUNK_ENCODING_DIGEST_ONLY;
using blkfleet::type::v1::CHUNK_ENCODING_RAW;
using blkfleet::type::v1::CHUNK_ENCODING_ZSTD;
using blkfleet::type::v1::ChunkEncoding;

// One chunk on its way: filled by a pool thread, consumed in index order by
// the sending thread.
struct ChunkJob {
  uint64_t index = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  // Written by the worker before `done`; read by the sender after.
  absl::Status status;
  Sha256Digest digest{};
  ChunkEncoding encoding = CHUNK_ENCODING_DIGEST_ONLY;
  std::string data;
  bool done = false;  // guarded by Shared::mu
};

// State the workers share with the sending thread.
struct Shared {
  const ImageStreamPlan* plan = nullptr;
  absl::Mutex mu;
  // Lowest chunk index that will send each digest's data.
  absl::flat_hash_map<Sha256Digest, uint64_t, Sha256DigestHash> claims ABSL_GUARDED_BY(mu);
  int outstanding ABSL_GUARDED_BY(mu) = 0;
  bool stop ABSL_GUARDED_BY(mu) = false;
  // Plain buffers of exactly chunk_size bytes, reused: a fresh 4 MiB
  // allocation costs page faults and zero-filling on every chunk.
  std::vector<std::string> spare ABSL_GUARDED_BY(mu);
  size_t max_spare = 0;
};

std::string TakeBuffer(Shared* shared) {
  absl::MutexLock lock(&shared->mu);
  if (shared->spare.empty()) return {};
  std::string b = std::move(shared->spare.back());
  shared->spare.pop_back();
  return b;
}

void ReturnBuffer(Shared* shared, std::string&& b) {
  if (b.size() != shared->plan->chunk_size) return;  // a short last chunk, or a frame
  absl::MutexLock lock(&shared->mu);
  if (shared->spare.size() < shared->max_spare) shared->spare.push_back(std::move(b));
}

constexpr size_t kSamplePieces = 4;
constexpr size_t kSamplePieceBytes = size_t{16} << 10;

// Whether a chunk is worth compressing, judged from a sample: pieces spread
// over the chunk, compressed together. Already compressed or encrypted data
// then costs 1/64 of a full zstd pass instead of a whole one.
bool LooksCompressible(const std::string& plain, int level, ZstdCodec& codec, std::string* buf) {
  if (plain.size() < kSamplePieces * kSamplePieceBytes * 4) return true;
  std::string sample;
  sample.reserve(kSamplePieces * kSamplePieceBytes);
  for (size_t i = 0; i < kSamplePieces; ++i) {
    sample.append(plain, i * (plain.size() / kSamplePieces), kSamplePieceBytes);
  }
  if (!codec
           .Compress(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(sample.data()),
                                              sample.size()),
                     level, buf)
           .ok()) {
    return true;  // let the full pass report the error
  }
  return buf->size() < sample.size() * 31 / 32;
}

// Encodes a plain chunk: zstd when it pays, raw otherwise.
absl::Status Encode(const ImageStreamPlan& plan, std::string* plain, ChunkJob* job) {
  thread_local ZstdCodec codec;
  std::string frame;
  if (!plan.compress || !LooksCompressible(*plain, plan.zstd_level, codec, &frame)) {
    job->encoding = CHUNK_ENCODING_RAW;
    job->data = std::move(*plain);
    return absl::OkStatus();
  }
  BLKFLEET_RETURN_IF_ERROR(codec.Compress(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(plain->data()), plain->size()),
      plan.zstd_level, &frame));
  if (frame.size() < plain->size()) {
    job->encoding = CHUNK_ENCODING_ZSTD;
    job->data = std::move(frame);
  } else {
    job->encoding = CHUNK_ENCODING_RAW;  // incompressible: spare the receiver a decode
    job->data = std::move(*plain);
  }
  return absl::OkStatus();
}

absl::Status ReadChunk(const ImageStreamPlan& plan, const ChunkJob& job, std::string* plain) {
  if (plain->size() != job.length) plain->resize(job.length);
  return plan.image->ReadAt(
      job.offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(plain->data()), job.length));
}

void ProcessChunk(Shared* shared, ChunkJob* job) {
  const ImageStreamPlan& plan = *shared->plan;
  bool skip;
  {
    absl::MutexLock lock(&shared->mu);
    skip = shared->stop;
  }
  if (skip) {
    job->status = absl::CancelledError("stream stopped");
  } else {
    std::string plain = TakeBuffer(shared);
    job->status = ReadChunk(plan, *job, &plain);
    if (job->status.ok()) {
      job->digest = plan.id_fn(plain);
      bool send_data = false;
      if (!plan.known.contains(job->digest)) {
        absl::MutexLock lock(&shared->mu);
        auto [it, inserted] = shared->claims.try_emplace(job->digest, job->index);
        if (inserted || it->second > job->index) {
          it->second = job->index;
          send_data = true;
        }
      }
      if (send_data) job->status = Encode(plan, &plain, job);
    }
    ReturnBuffer(shared, std::move(plain));  // unless Encode took it
  }
  absl::MutexLock lock(&shared->mu);
  job->done = true;
  --shared->outstanding;
}

// Yields the planned chunk indexes in order.
class ChunkCursor {
 public:
  explicit ChunkCursor(const ImageStreamPlan& plan) : plan_(plan) {}
  std::optional<uint64_t> Next() {
    while (range_ < plan_.ranges.size()) {
      const auto& [first, count] = plan_.ranges[range_];
      if (pos_ < count) return first + pos_++;
      ++range_;
      pos_ = 0;
    }
    return std::nullopt;
  }

 private:
  const ImageStreamPlan& plan_;
  size_t range_ = 0;
  uint64_t pos_ = 0;
};

}  // namespace

absl::StatusOr<v1::StreamImageSummary> StreamImageChunks(
    const ImageStreamPlan& plan, ThreadPool* pool,
    const std::function<bool(v1::StreamImageResponse&)>& send,
    const std::function<bool()>& cancelled) {
  Shared shared;
  shared.plan = &plan;
  shared.max_spare = plan.window_bytes / plan.chunk_size + 2;
  const uint64_t size = plan.image->size_bytes();
  ChunkCursor cursor(plan);
  std::optional<uint64_t> next = cursor.Next();
  std::deque<std::unique_ptr<ChunkJob>> window;
  uint64_t window_bytes = 0;
  absl::flat_hash_set<Sha256Digest, Sha256DigestHash> sent;
  v1::StreamImageSummary summary;
  absl::Status result;

  while (result.ok()) {
    // Admit chunks while the window has room.
    while (next) {
      const uint64_t offset = *next * plan.chunk_size;
      const uint32_t length =
          static_cast<uint32_t>(std::min<uint64_t>(plan.chunk_size, size - offset));
      if (!window.empty() && window_bytes + length > plan.window_bytes) break;
      auto job = std::make_unique<ChunkJob>();
      job->index = *next;
      job->offset = offset;
      job->length = length;
      {
        absl::MutexLock lock(&shared.mu);
        ++shared.outstanding;
      }
      pool->Schedule([s = &shared, j = job.get()] { ProcessChunk(s, j); });
      window_bytes += length;
      window.push_back(std::move(job));
      next = cursor.Next();
    }
    if (window.empty()) break;

    std::unique_ptr<ChunkJob> job = std::move(window.front());
    window.pop_front();
    {
      absl::MutexLock lock(&shared.mu);
      shared.mu.Await(absl::Condition(&job->done));
    }
    window_bytes -= job->length;
    if (!job->status.ok()) {
      result = job->status;
      break;
    }
    if (cancelled()) {
      result = absl::CancelledError("StreamImage cancelled by the client");
      break;
    }
    v1::StreamImageResponse resp;
    v1::ImageChunk* chunk = resp.mutable_chunk();
    chunk->set_index(job->index);
    chunk->set_offset_bytes(job->offset);
    chunk->set_length_bytes(job->length);
    chunk->set_sha256(DigestToBytes(job->digest));
    if (plan.known.contains(job->digest) || sent.contains(job->digest)) {
      chunk->set_encoding(CHUNK_ENCODING_DIGEST_ONLY);
    } else {
      if (job->data.empty() && job->encoding == CHUNK_ENCODING_DIGEST_ONLY) {
        // A later chunk with the same data claimed it first but has not been
        // sent: this chunk carries the data after all.
        std::string plain;
        result = ReadChunk(plan, *job, &plain);
        if (result.ok() && plan.id_fn(plain) != job->digest) {
          result = absl::DataLossError(
              absl::StrCat("chunk ", job->index, " changed between two reads of the image"));
        }
        if (result.ok()) result = Encode(plan, &plain, job.get());
        if (!result.ok()) break;
      }
      chunk->set_encoding(job->encoding);
      summary.set_chunks_sent(summary.chunks_sent() + 1);
      summary.set_bytes_sent(summary.bytes_sent() + job->data.size());
      chunk->set_data(std::move(job->data));
      sent.insert(job->digest);
    }
    summary.set_chunks_read(summary.chunks_read() + 1);
    summary.set_bytes_read(summary.bytes_read() + job->length);
    metrics::ChunkStreamed(job->length, chunk->data().size());
    if (!send(resp)) result = absl::CancelledError("StreamImage: the client went away");
    // A raw payload is a plain buffer: serialised by now, so reuse it.
    if (chunk->encoding() == CHUNK_ENCODING_RAW) {
      ReturnBuffer(&shared, std::move(*chunk->mutable_data()));
    }
  }

  // Workers hold pointers into `shared` and `window`: let them finish.
  absl::MutexLock lock(&shared.mu);
  shared.stop = true;
  shared.mu.Await(absl::Condition(
      +[](Shared* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->outstanding == 0; },
      &shared));
  if (!result.ok()) return result;
  return summary;
}

}  // namespace blkfleet::agent
