// SPDX-License-Identifier: Apache-2.0
// Unit tests of the StreamImage pipeline on its own: the memory window and
// the order of data and digest-only references under out-of-order workers.

#include "agent/image_streamer.h"

#include <atomic>
#include <random>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace blkfleet::agent {
namespace {

using ::blkfleet::type::v1::CHUNK_ENCODING_DIGEST_ONLY;

// An image whose chunk i holds bytes of value `content(i)`; reads sleep a
// random while, so that workers finish out of order, and count how many
// chunks have been read but not yet sent.
class FakeImage final : public SnapshotImage {
 public:
  FakeImage(uint64_t size, uint32_t chunk, std::function<uint8_t(uint64_t)> content)
      : size_(size), chunk_(chunk), content_(std::move(content)) {}
  uint64_t size_bytes() const override { return size_; }
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      max_unsent_ = std::max(max_unsent_, ++reads_ - sent_);
      delay = absl::Microseconds(rng_() % 3000);
    }
    absl::SleepFor(delay);
    std::fill(out.begin(), out.end(), content_(offset / chunk_));
    return absl::OkStatus();
  }
  absl::Status WriteAt(uint64_t, std::span<const uint8_t>) override {
    return absl::UnimplementedError("read-only");
  }
  void Sent() {
    absl::MutexLock lock(&mu_);
    ++sent_;
  }
  int max_unsent() {
    absl::MutexLock lock(&mu_);
    return max_unsent_;
  }

 private:
  const uint64_t size_;
  const uint32_t chunk_;
  const std::function<uint8_t(uint64_t)> content_;
  absl::Mutex mu_;
  std::mt19937 rng_ ABSL_GUARDED_BY(mu_){1};
  int reads_ ABSL_GUARDED_BY(mu_) = 0;
  int sent_ ABSL_GUARDED_BY(mu_) = 0;
  int max_unsent_ ABSL_GUARDED_BY(mu_) = 0;
};

constexpr uint32_t kChunk = 64 * 1024;

// Every chunk of `image`, with a window of `window_chunks` chunks.
ImageStreamPlan PlanAll(FakeImage& image, uint64_t chunks, uint64_t window_chunks = 8) {
  ImageStreamPlan plan;
  plan.image = &image;
  plan.chunk_size = kChunk;
  plan.ranges = {{0, chunks}};
  plan.window_bytes = window_chunks * kChunk;
  return plan;
}

TEST(ImageStreamer, KeepsNoMoreThanTheWindowInFlight) {
  FakeImage image(100 * kChunk, kChunk, [](uint64_t i) { return static_cast<uint8_t>(i); });
  ThreadPool pool(4);
  const ImageStreamPlan plan = PlanAll(image, 100, 5);
  std::vector<uint64_t> order;
  auto summary = StreamImageChunks(
      plan, &pool,
      [&](v1::StreamImageResponse& r) {
        image.Sent();
        order.push_back(r.chunk().index());
        absl::SleepFor(absl::Microseconds(500));  // a slow network
        return true;
      },
      [] { return false; });
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->chunks_read(), 100u);
  ASSERT_EQ(order.size(), 100u);
  for (uint64_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i], i);
  EXPECT_LE(image.max_unsent(), 5) << "more chunks in memory than the window allows";
  EXPECT_GE(image.max_unsent(), 2) << "no chunks in flight in parallel";
}

TEST(ImageStreamer, DataPrecedesEveryDigestOnlyReferenceToIt) {
  // Chunks repeat with period 3: 0,1,2,0,1,2,...; workers finish in random
  // order, but each value's first chunk must carry the data.
  FakeImage image(60 * kChunk, kChunk, [](uint64_t i) { return static_cast<uint8_t>(i % 3); });
  ThreadPool pool(4);
  const ImageStreamPlan plan = PlanAll(image, 60, 16);
  std::vector<v1::ImageChunk> chunks;
  auto summary = StreamImageChunks(
      plan, &pool,
      [&](v1::StreamImageResponse& r) {
        image.Sent();
        chunks.push_back(r.chunk());
        return true;
      },
      [] { return false; });
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(chunks.size(), 60u);
  for (const auto& c : chunks) {
    EXPECT_EQ(c.encoding() != CHUNK_ENCODING_DIGEST_ONLY, c.index() < 3) << "chunk " << c.index();
    EXPECT_EQ(c.sha256(), chunks[c.index() % 3].sha256());
  }
  EXPECT_EQ(summary->chunks_sent(), 3u);
}

TEST(ImageStreamer, AReceiverThatGoesAwayEndsTheStreamCancelled) {
  FakeImage image(40 * kChunk, kChunk, [](uint64_t i) { return static_cast<uint8_t>(i); });
  ThreadPool pool(2);
  const ImageStreamPlan plan = PlanAll(image, 40);
  int sent = 0;
  auto summary = StreamImageChunks(
      plan, &pool, [&](v1::StreamImageResponse&) { return ++sent < 5; }, [] { return false; });
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(sent, 5);
}

}  // namespace
}  // namespace blkfleet::agent
