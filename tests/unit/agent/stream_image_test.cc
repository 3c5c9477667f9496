// SPDX-License-Identifier: Apache-2.0
// Unit tests of StreamImage through an in-process gRPC server: content,
// digest-only chunks (known and repeated), resume, ranges, the window,
// errors.

#include <fstream>

#include "common/chunk_id.h"
#include "common/sha256.h"
#include "common/zstd_codec.h"
#include "gmock/gmock.h"
#include "tests/unit/agent/agent_fixture.h"

namespace blkfleet::agent {
namespace {

using ::blkfleet::type::v1::CHUNK_ENCODING_DIGEST_ONLY;
using ::blkfleet::type::v1::CHUNK_ENCODING_RAW;
using ::blkfleet::type::v1::CHUNK_ENCODING_ZSTD;
using ::testing::HasSubstr;

constexpr uint32_t kChunk = 256 * 1024;

struct StreamResult {
  std::vector<v1::ImageChunk> chunks;
  std::optional<v1::StreamImageSummary> summary;
  grpc::Status status;
};

class StreamImageTest : public AgentFixture {
 protected:
  v1::StreamImageStart Start(const std::string& id, const std::string& device) {
    v1::StreamImageStart start;
    start.set_snapshot_id(id);
    start.set_device(device);
    start.set_chunk_size_bytes(kChunk);
    return start;
  }

  // Sends `requests` (then half-closes) and collects the answer.
  StreamResult Run(const std::vector<v1::StreamImageRequest>& requests) {
    StreamResult r;
    auto ctx = Ctx();
    auto stream = stub_->StreamImage(ctx.get());
    for (const auto& req : requests) {
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
    v1::StreamImageResponse resp;
    while (stream->Read(&resp)) {
      if (resp.has_chunk()) {
        EXPECT_FALSE(r.summary) << "chunk after the summary";
        r.chunks.push_back(resp.chunk());
      } else {
        r.summary = resp.summary();
      }
    }
    r.status = stream->Finish();
    return r;
  }

  StreamResult Run(const v1::StreamImageStart& start, const std::vector<std::string>& known = {}) {
    std::vector<v1::StreamImageRequest> reqs(1);
    *reqs[0].mutable_start() = start;
    if (!known.empty()) {
      v1::StreamImageRequest k;
      for (const auto& d : known) k.mutable_known_digests()->add_sha256(d);
      reqs.push_back(k);
    }
    reqs.emplace_back().set_known_digests_done(true);
    return Run(reqs);
  }

  // The content of the device at the take, from the sim's oracle.
  std::string Oracle(const std::string& id, const std::string& device) {
    std::ifstream in(dir_.path() + "/oracle/" + id + "-" + device + ".img", std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }

  // Decodes chunks with data and checks every chunk against `expected`.
  void ExpectContent(const StreamResult& r, const std::string& expected) {
    ZstdCodec codec;
    for (const v1::ImageChunk& c : r.chunks) {
      ASSERT_EQ(c.offset_bytes(), c.index() * kChunk);
      std::string plain = expected.substr(c.offset_bytes(), c.length_bytes());
      ASSERT_EQ(c.length_bytes(), std::min<uint64_t>(kChunk, expected.size() - c.offset_bytes()));
      EXPECT_EQ(c.sha256(), DigestToBytes(Sha256(plain))) << "chunk " << c.index();
      if (c.encoding() == CHUNK_ENCODING_ZSTD) {
        std::string out;
        ASSERT_TRUE(codec.Decompress(c.data(), c.length_bytes(), &out).ok());
        EXPECT_EQ(out, plain) << "chunk " << c.index();
      } else if (c.encoding() == CHUNK_ENCODING_RAW) {
        EXPECT_EQ(c.data(), plain) << "chunk " << c.index();
      } else {
        EXPECT_EQ(c.encoding(), CHUNK_ENCODING_DIGEST_ONLY);
        EXPECT_TRUE(c.data().empty());
      }
    }
  }

  // vda: random data in its first half, zeros in the second; then the
  // snapshot is taken and the device overwritten, which the image must not
  // show.
  v1::Snapshot PrepareVda() {
    EXPECT_TRUE(sim_->Write("vda", 0, testing::RandomBytes(8 * kMiB, 1)).ok());
    v1::Snapshot s = MustCreate({"vda"});
    EXPECT_TRUE(sim_->Write("vda", 0, testing::RandomBytes(16 * kMiB, 2)).ok());
    return s;
  }
};

TEST_F(StreamImageTest, StreamsEveryChunkOfTheTakeThenASummary) {
  v1::Snapshot s = PrepareVda();
  StreamResult r = Run(Start(s.id(), "vda"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.chunks.size(), 64u);
  for (size_t i = 0; i < r.chunks.size(); ++i) EXPECT_EQ(r.chunks[i].index(), i);
  ExpectContent(r, Oracle(s.id(), "vda"));
  // Random chunks go raw (zstd would grow them), the first zero chunk
  // compressed, the other 31 zero chunks as digest-only references.
  EXPECT_EQ(r.chunks[0].encoding(), CHUNK_ENCODING_RAW);
  EXPECT_EQ(r.chunks[32].encoding(), CHUNK_ENCODING_ZSTD);
  EXPECT_LT(r.chunks[32].data().size(), 1024u);
  for (size_t i = 33; i < 64; ++i) EXPECT_EQ(r.chunks[i].encoding(), CHUNK_ENCODING_DIGEST_ONLY);
  ASSERT_TRUE(r.summary);
  EXPECT_EQ(r.summary->chunks_read(), 64u);
  EXPECT_EQ(r.summary->bytes_read(), 16 * kMiB);
  EXPECT_EQ(r.summary->chunks_sent(), 33u);
  uint64_t payload = 0;
  for (const auto& c : r.chunks) payload += c.data().size();
  EXPECT_EQ(r.summary->bytes_sent(), payload);
}

TEST_F(StreamImageTest, KnownDigestsAreSentAsDigestsOnly) {
  v1::Snapshot s = PrepareVda();
  const std::string image = Oracle(s.id(), "vda");
  std::vector<std::string> known = {DigestToBytes(Sha256(image.substr(2 * kChunk, kChunk))),
                                    DigestToBytes(Sha256(std::string(kChunk, '\0')))};
  v1::StreamImageStart start = Start(s.id(), "vda");
  start.set_disable_compression(true);
  StreamResult r = Run(start, known);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ExpectContent(r, image);
  for (const auto& c : r.chunks) {
    const bool is_known = c.index() == 2 || c.index() >= 32;
    EXPECT_EQ(c.encoding(), is_known ? CHUNK_ENCODING_DIGEST_ONLY : CHUNK_ENCODING_RAW)
        << "chunk " << c.index();
  }
  EXPECT_EQ(r.summary->chunks_sent(), 31u);
}

TEST_F(StreamImageTest, ChunkIdKeyGivesHmacIdsAndKnownKeyedIdsDedup) {
  v1::Snapshot s = PrepareVda();
  const std::string image = Oracle(s.id(), "vda");
  const std::string key(32, 'K');
  v1::StreamImageStart start = Start(s.id(), "vda");
  start.set_chunk_id_key(key);
  auto id = [&](uint64_t i) {
    return DigestToBytes(HmacSha256(key, image.substr(i * kChunk, kChunk)));
  };
  // Chunk 2's keyed id is known; its plain SHA-256 would not match.
  StreamResult r = Run(start, {id(2)});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.chunks.size(), 64u);
  for (const v1::ImageChunk& c : r.chunks) {
    EXPECT_EQ(c.sha256(), id(c.index())) << "chunk " << c.index();
    EXPECT_NE(c.sha256(), DigestToBytes(Sha256(image.substr(c.index() * kChunk, kChunk))));
  }
  EXPECT_EQ(r.chunks[2].encoding(), CHUNK_ENCODING_DIGEST_ONLY);
  EXPECT_EQ(r.chunks[1].encoding(), CHUNK_ENCODING_RAW);

  start.set_chunk_id_key(std::string(31, 'K'));
  StreamResult bad = Run(start);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.status.error_message(), HasSubstr("chunk_id_key"));
}

TEST_F(StreamImageTest, RangesAndResumeSelectChunks) {
  v1::Snapshot s = PrepareVda();
  v1::StreamImageStart start = Start(s.id(), "vda");
  auto* a = start.add_ranges();
  a->set_first(1);
  a->set_count(4);
  auto* b = start.add_ranges();
  b->set_first(40);
  b->set_count(2);
  start.set_resume_from_chunk(3);
  StreamResult r = Run(start);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::vector<uint64_t> indexes;
  for (const auto& c : r.chunks) indexes.push_back(c.index());
  EXPECT_EQ(indexes, (std::vector<uint64_t>{3, 4, 40, 41}));
  ExpectContent(r, Oracle(s.id(), "vda"));
  start.clear_ranges();
  start.set_resume_from_chunk(64);
  r = Run(start);
  ASSERT_TRUE(r.status.ok());
  EXPECT_TRUE(r.chunks.empty());
  EXPECT_EQ(r.summary->chunks_read(), 0u);
}

TEST_F(StreamImageTest, TheLastChunkIsShort) {
  ASSERT_TRUE(sim_->Write("vdd", 0, testing::RandomBytes(kMiB + 4096, 3)).ok());
  v1::Snapshot s = MustCreate({"vdd"});
  StreamResult r = Run(Start(s.id(), "vdd"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.chunks.size(), 5u);
  EXPECT_EQ(r.chunks[4].length_bytes(), 4096u);
  ExpectContent(r, Oracle(s.id(), "vdd"));
  EXPECT_EQ(r.summary->bytes_read(), kMiB + 4096);
}

TEST_F(StreamImageTest, ChunksAsLargeAsTheWindowStillStream) {
  ASSERT_TRUE(sim_->Write("vdb", 0, testing::RandomBytes(8 * kMiB, 3)).ok());
  v1::Snapshot s = MustCreate({"vdb"});
  for (uint32_t chunk : {8 * kMiB, 4 * kMiB}) {
    v1::StreamImageStart start = Start(s.id(), "vdb");
    start.set_chunk_size_bytes(chunk);  // the window is 8 MiB
    StreamResult r = Run(start);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.chunks.size(), 8 * kMiB / chunk);
    EXPECT_EQ(r.chunks.back().length_bytes(), chunk);
    EXPECT_EQ(r.chunks.back().data(), Oracle(s.id(), "vdb").substr(8 * kMiB - chunk));
  }
}

TEST_F(StreamImageTest, InvalidRequestsAreRefusedNamingTheField) {
  v1::Snapshot s = PrepareVda();
  auto expect = [&](StreamResult r, grpc::StatusCode code, const std::string& text) {
    EXPECT_EQ(r.status.error_code(), code) << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(text));
    EXPECT_TRUE(r.chunks.empty());
  };
  v1::StreamImageRequest digests;
  digests.mutable_known_digests()->add_sha256(std::string(32, 'x'));
  expect(Run(std::vector<v1::StreamImageRequest>{digests}), grpc::INVALID_ARGUMENT, "start");
  expect(Run(std::vector<v1::StreamImageRequest>{}), grpc::INVALID_ARGUMENT, "start");
  v1::StreamImageStart start = Start(s.id(), "vda");
  start.set_chunk_size_bytes(32 * 1024);
  expect(Run(start), grpc::INVALID_ARGUMENT, "chunk_size_bytes");
  start.set_chunk_size_bytes(3 * 65536);
  expect(Run(start), grpc::INVALID_ARGUMENT, "chunk_size_bytes");
  start.set_chunk_size_bytes(128u << 20);
  expect(Run(start), grpc::INVALID_ARGUMENT, "chunk_size_bytes");
  start = Start(s.id(), "vda");
  auto* range = start.add_ranges();
  range->set_first(60);
  range->set_count(5);
  expect(Run(start), grpc::INVALID_ARGUMENT, "ranges[0]");
  range->set_count(2);
  auto* before = start.add_ranges();
  before->set_first(10);
  before->set_count(1);
  expect(Run(start), grpc::INVALID_ARGUMENT, "ranges[1]");
  start = Start(s.id(), "vda");
  start.set_resume_from_chunk(65);
  expect(Run(start), grpc::INVALID_ARGUMENT, "resume_from_chunk");
  expect(Run(Start(s.id(), "vda"), {std::string(31, 'x')}), grpc::INVALID_ARGUMENT,
         "known_digests");
  expect(Run(Start("xyz", "vda")), grpc::INVALID_ARGUMENT, "snapshot_id");
  expect(Run(Start(Uuid::Random().ToString(), "vda")), grpc::NOT_FOUND, "no snapshot");
  expect(Run(Start(s.id(), "vdb")), grpc::NOT_FOUND, "vdb");
  // Start without known_digests_done, then half-close.
  std::vector<v1::StreamImageRequest> only_start(1);
  *only_start[0].mutable_start() = Start(s.id(), "vda");
  expect(Run(only_start), grpc::INVALID_ARGUMENT, "known_digests_done");
}

TEST_F(StreamImageTest, ACorruptedSnapshotAbortsNamingTheCause) {
  v1::Snapshot s = MustCreate({"vdc"}, 60'000, 512 * 1024);
  ASSERT_TRUE(sim_->Write("vdc", 0, testing::RandomBytes(2 * kMiB, 4)).ok());
  StreamResult r = Run(Start(s.id(), "vdc"));
  EXPECT_EQ(r.status.error_code(), grpc::ABORTED);
  EXPECT_THAT(r.status.error_message(), HasSubstr("overflow"));
  EXPECT_FALSE(r.summary);
}

// A window of two chunks, so that most of the image is read after the
// corruption below.
class SmallWindowStreamTest : public StreamImageTest {
 protected:
  SmallWindowStreamTest() { window_bytes_ = 2 * kChunk; }
};

TEST_F(SmallWindowStreamTest, CorruptionDuringTheStreamAbortsIt) {
  v1::Snapshot s = MustCreate({"vda"}, 60'000, 4 * kMiB);
  auto ctx = Ctx();
  auto stream = stub_->StreamImage(ctx.get());
  v1::StreamImageRequest req;
  *req.mutable_start() = Start(s.id(), "vda");
  ASSERT_TRUE(stream->Write(req));
  req.set_known_digests_done(true);
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  v1::StreamImageResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  // Overflow now: 8 MiB of new data against a 4 MiB limit.
  ASSERT_TRUE(sim_->Write("vda", 0, testing::RandomBytes(8 * kMiB, 5)).ok());
  int chunks = 1;
  while (stream->Read(&resp)) {
    EXPECT_TRUE(resp.has_chunk());
    ++chunks;
  }
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::ABORTED) << st.error_message();
  EXPECT_LT(chunks, 64);
}

}  // namespace
}  // namespace blkfleet::agent
