// SPDX-License-Identifier: Apache-2.0
#include "server/chunk_intake.h"
#include "server/crash_point.h"

#include "absl/strings/str_cat.h"

namespace blkfleet::server {

ChunkIntake::ChunkIntake(repo::ChunkStore* store, int threads, size_t max_queued)
    : store_(store), max_queued_(max_queued < 1 ? 1 : max_queued) {
  for (int i = 0; i < (threads < 1 ? 1 : threads); ++i) workers_.emplace_back([this] { Work(); });
}

ChunkIntake::~ChunkIntake() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  for (auto& t : workers_) t.join();
}

absl::Status ChunkIntake::Submit(ReceivedChunk chunk) {
  absl::MutexLock l(&mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.size() < max_queued_ || !error_.ok();
  };
  mu_.Await(absl::Condition(&room));
  if (!error_.ok()) return error_;
  queue_.push_back(std::move(chunk));
  return absl::OkStatus();
}

absl::Status ChunkIntake::Drain() {
  absl::MutexLock l(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (queue_.empty() || !error_.ok()) && busy_ == 0;
  };
  mu_.Await(absl::Condition(&idle));
  return error_;
}

uint64_t ChunkIntake::chunks_stored() const {
  absl::MutexLock l(&mu_);
  return stored_;
}

void ChunkIntake::Work() {
  ZstdCodec codec;
  std::string plain;
  while (true) {
    ReceivedChunk c;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stop_ and nothing left
      c = std::move(queue_.front());
      queue_.pop_front();
      if (!error_.ok()) continue;  // drop: the job already failed
      ++busy_;
    }
    absl::Status s = Process(c, codec, plain);
    absl::MutexLock l(&mu_);
    --busy_;
    if (!s.ok() && error_.ok()) {
      error_ = s;
      queue_.clear();
    }
  }
}

absl::Status ChunkIntake::Process(ReceivedChunk& c, ZstdCodec& codec, std::string& plain) {
  repo::StoredEncoding enc;
  Sha256Digest actual;
  if (c.encoding == type::v1::CHUNK_ENCODING_ZSTD) {
    absl::Status s = codec.Decompress(c.data, c.length, &plain);
    if (!s.ok()) {
      return absl::DataLossError(absl::StrCat("chunk ", c.index, " from the agent does not decode: ",
                                              std::string(s.message())));
    }
    actual = store_->id_fn()(plain);
    enc = repo::StoredEncoding::kZstd;
  } else if (c.encoding == type::v1::CHUNK_ENCODING_RAW) {
    if (c.data.size() != c.length) {
      return absl::DataLossError(absl::StrCat("chunk ", c.index, " from the agent holds ",
                                              c.data.size(), " bytes, expected ", c.length));
    }
    actual = store_->id_fn()(c.data);
    enc = repo::StoredEncoding::kRaw;
  } else {
    return absl::DataLossError(absl::StrCat("chunk ", c.index, " has an unknown encoding"));
  }
  if (actual != c.digest) {
    return absl::DataLossError(absl::StrCat("chunk ", c.index, " failed verification: the agent sent ",
                                            DigestToHex(c.digest), ", the data hashes to ",
                                            DigestToHex(actual)));
  }
  auto put = store_->Put(c.digest, c.length, enc, c.data);
  if (!put.ok()) return put.status();
  CrashPoint("backup.after_chunk_write");
  if (*put) {
    absl::MutexLock l(&mu_);
    ++stored_;
  }
  return absl::OkStatus();
}

}  // namespace blkfleet::server
