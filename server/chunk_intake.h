// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_CHUNK_INTAKE_H_
#define BLKFLEET_SERVER_CHUNK_INTAKE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "blkfleet/type/v1/types.pb.h"
#include "common/sha256.h"
#include "server/repository/chunk_store.h"

namespace blkfleet::server {

// A chunk as received from an agent, not yet trusted.
struct ReceivedChunk {
  uint64_t index = 0;
  Sha256Digest digest{};
  uint32_t length = 0;
  type::v1::ChunkEncoding encoding = type::v1::CHUNK_ENCODING_UNSPECIFIED;
  std::string data;  // the payload as it travelled (zstd frame or raw)
};

// Verifies received chunks (decode, chunk id -- SHA-256, or HMAC-SHA256 in
// an encrypted repository -- compared with the id the agent claimed) and stores the good ones, on a few worker threads so that
// the stream reader never waits for hashing or disk. The payload is stored as
// received (no recompression, no copy). The first failure sticks: later
// submissions are dropped and Drain() reports it.
class ChunkIntake {
 public:
  ChunkIntake(repo::ChunkStore* store, int threads, size_t max_queued);
  ~ChunkIntake();
  ChunkIntake(const ChunkIntake&) = delete;
  ChunkIntake& operator=(const ChunkIntake&) = delete;

  // Queues `chunk`; blocks while `max_queued` chunks wait. Returns the first
  // error seen so far (the chunk is then dropped).
  absl::Status Submit(ReceivedChunk chunk);
  // Waits until every queued chunk is verified and stored; the first error.
  absl::Status Drain();
  // Chunk files written (chunks the repository did not hold yet).
  uint64_t chunks_stored() const;

 private:
  void Work();
  absl::Status Process(ReceivedChunk& c, ZstdCodec& codec, std::string& plain);

  repo::ChunkStore* const store_;
  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<ReceivedChunk> queue_ ABSL_GUARDED_BY(mu_);
  size_t busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  uint64_t stored_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_CHUNK_INTAKE_H_
