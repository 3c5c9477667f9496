// SPDX-License-Identifier: Apache-2.0
#include "server/repository/image_reader.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_util.h"
#include "common/zstd_codec.h"

namespace blkfleet::repo {
namespace {

namespace v1 = blkfleet::server::v1;

// Format 1: a fixed index (one digest per chunk) over the chunk store.
class IndexedImageReader : public DeviceImageReader {
 public:
  IndexedImageReader(Repository* repo, std::string backup_id, std::string device,
                     DeviceIndex index, uint64_t cache_bytes)
      : repo_(repo),
        backup_id_(std::move(backup_id)),
        device_(std::move(device)),
        index_(std::move(index)),
        cache_chunks_(std::max<uint64_t>(1, cache_bytes / std::max<uint32_t>(
                                                             1, index_.chunk_size_bytes))) {
    // The ids an all-zero chunk has here (a shorter last chunk has its own).
    const ChunkIdFn& id = repo_->chunks().id_fn();
    zero_full_ = id(std::string(index_.chunk_size_bytes, '\0'));
    const uint64_t n = index_.digests.size();
    if (n > 0) zero_last_ = id(std::string(ChunkLength(n - 1), '\0'));
  }

  uint64_t size_bytes() const override { return index_.device_size_bytes; }
  uint32_t block_size_bytes() const override { return index_.chunk_size_bytes; }

  bool KnownZero(uint64_t offset, uint64_t length) const override {
    if (length == 0 || offset >= size_bytes() || length > size_bytes() - offset) return false;
    const uint64_t first = offset / index_.chunk_size_bytes;
    const uint64_t last = (offset + length - 1) / index_.chunk_size_bytes;
    for (uint64_t i = first; i <= last; ++i) {
      if (!IsZeroChunk(i)) return false;
    }
    return true;
  }

  absl::Status ReadAt(uint64_t offset, std::span<char> out) override {
    const uint64_t size = size_bytes();
    if (offset > size || out.size() > size - offset) {
      return absl::OutOfRangeError(absl::StrCat("read of ", out.size(), " bytes at ", offset,
                                                " lies outside ", device_, " (", size,
                                                " bytes) of backup ", backup_id_));
    }
    const uint64_t cs = index_.chunk_size_bytes;
    uint64_t pos = offset;
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t i = pos / cs;
      const uint64_t within = pos - i * cs;
      const size_t take = static_cast<size_t>(
          std::min<uint64_t>(out.size() - done, ChunkLength(i) - within));
      if (IsZeroChunk(i)) {
        std::memset(out.data() + done, 0, take);
      } else {
        auto chunk = Chunk(i);
        if (!chunk.ok()) {
          return absl::Status(
              chunk.status().code(),
              absl::StrCat("bytes [", pos, ", ", pos + take, ") of ", device_, " of backup ",
                           backup_id_, ": chunk ", i, " (", DigestToHex(index_.digests[i]),
                           ", ", repo_->chunks().PathOf(index_.digests[i]),
                           "): ", chunk.status().message()));
        }
        std::memcpy(out.data() + done, (*chunk)->data() + within, take);
      }
      done += take;
      pos += take;
    }
    return absl::OkStatus();
  }

 private:
  using Data = std::shared_ptr<const std::string>;

  uint64_t ChunkLength(uint64_t i) const {
    const uint64_t start = i * index_.chunk_size_bytes;
    return std::min<uint64_t>(index_.chunk_size_bytes, index_.device_size_bytes - start);
  }

  bool IsZeroChunk(uint64_t i) const {
    const bool last = i + 1 == index_.digests.size();
    const Sha256Digest& zero =
        last && ChunkLength(i) != index_.chunk_size_bytes ? zero_last_ : zero_full_;
    return index_.digests[i] == zero;
  }

  // The decoded chunk `i`, from the cache or the store. Concurrent readers
  // of one chunk wait for the first one's fetch instead of decoding it
  // again: NBD clients send many requests inside one chunk at once.
  absl::StatusOr<Data> Chunk(uint64_t i) {
    {
      absl::MutexLock l(&mu_);
      for (;;) {
        auto it = cache_.find(i);
        if (it != cache_.end()) {
          lru_.splice(lru_.begin(), lru_, it->second.second);
          return it->second.first;
        }
        if (!fetching_.contains(i)) break;
        fetched_.Wait(&mu_);
      }
      fetching_.insert(i);
    }
    absl::StatusOr<Data> got = Fetch(i);
    absl::MutexLock l(&mu_);
    fetching_.erase(i);
    fetched_.SignalAll();
    if (!got.ok()) return got.status();
    lru_.push_front(i);
    cache_.emplace(i, std::make_pair(*got, lru_.begin()));
    while (cache_.size() > cache_chunks_) {
      cache_.erase(lru_.back());
      lru_.pop_back();
    }
    return got;
  }

  absl::StatusOr<Data> Fetch(uint64_t i) {
    std::unique_ptr<ZstdCodec> codec = TakeCodec();
    auto plain = std::make_shared<std::string>();
    absl::Status s = repo_->chunks().Get(index_.digests[i], codec.get(), plain.get());
    GiveCodec(std::move(codec));
    if (!s.ok()) return s;
    if (plain->size() != ChunkLength(i)) {
      return absl::DataLossError(
          absl::StrCat("holds ", plain->size(), " bytes, the index expects ", ChunkLength(i)));
    }
    return Data(std::move(plain));
  }

  // zstd contexts are not thread-safe and costly to make: a small pool.
  std::unique_ptr<ZstdCodec> TakeCodec() {
    absl::MutexLock l(&codec_mu_);
    if (codecs_.empty()) return std::make_unique<ZstdCodec>();
    auto c = std::move(codecs_.back());
    codecs_.pop_back();
    return c;
  }
  void GiveCodec(std::unique_ptr<ZstdCodec> c) {
    absl::MutexLock l(&codec_mu_);
    codecs_.push_back(std::move(c));
  }

  Repository* const repo_;
  const std::string backup_id_;
  const std::string device_;
  const DeviceIndex index_;
  const uint64_t cache_chunks_;
  Sha256Digest zero_full_{};
  Sha256Digest zero_last_{};

  absl::Mutex mu_;
  absl::CondVar fetched_;
  std::list<uint64_t> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  std::unordered_map<uint64_t, std::pair<Data, std::list<uint64_t>::iterator>> cache_
      ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> fetching_ ABSL_GUARDED_BY(mu_);

  absl::Mutex codec_mu_;
  std::vector<std::unique_ptr<ZstdCodec>> codecs_ ABSL_GUARDED_BY(codec_mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceImageReader>> OpenDeviceImage(
    Repository* repo, const v1::Backup& backup, int ordinal, const ImageReaderOptions& options) {
  if (ordinal < 0 || ordinal >= backup.devices_size()) {
    return absl::InvalidArgumentError(absl::StrCat("backup ", backup.id(), " has no device ",
                                                   ordinal, " (it has ", backup.devices_size(),
                                                   ")"));
  }
  const v1::BackupDevice& dev = backup.devices(ordinal);
  auto sha = DigestFromBytes(dev.index_sha256());
  if (!sha) {
    return absl::DataLossError(absl::StrCat("backup ", backup.id(), " device ", dev.device(),
                                            ": malformed index digest"));
  }
  BLKFLEET_ASSIGN_OR_RETURN(DeviceIndex index, repo->ReadIndex(backup.id(), ordinal, *sha));
  if (index.chunk_size_bytes == 0 ||
      index.digests.size() !=
          (index.device_size_bytes + index.chunk_size_bytes - 1) / index.chunk_size_bytes) {
    return absl::DataLossError(absl::StrCat("index of ", dev.device(), " of backup ",
                                            backup.id(), " does not cover the device"));
  }
  return std::unique_ptr<DeviceImageReader>(new IndexedImageReader(
      repo, backup.id(), dev.device(), std::move(index), options.cache_bytes));
}

}  // namespace blkfleet::repo
