// SPDX-License-Identifier: Apache-2.0
#include "common/zstd_codec.h"

#include <zstd.h>

#include "absl/strings/str_cat.h"

namespace blkfleet {

struct ZstdCodec::Contexts {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~Contexts() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }
};

ZstdCodec::ZstdCodec() : ctx_(new Contexts) {}  // NOLINT(cppcoreguidelines-owning-memory)
ZstdCodec::~ZstdCodec() { delete ctx_; }      // NOLINT(cppcoreguidelines-owning-memory)

absl::Status ZstdCodec::Compress(std::span<const uint8_t> in, int level, std::string* out) {
  if (ctx_->cctx == nullptr) return absl::ResourceExhaustedError("zstd: cannot allocate context");
  out->resize(ZSTD_compressBound(in.size()));
  size_t n = ZSTD_compressCCtx(ctx_->cctx, out->data(), out->size(), in.data(), in.size(), level);
  if (ZSTD_isError(n)) {
    return absl::InternalError(absl::StrCat("zstd compress: ", ZSTD_getErrorName(n)));
  }
  out->resize(n);
  return absl::OkStatus();
}

absl::Status ZstdCodec::Decompress(std::string_view frame, size_t expected_size,
                                   std::string* out) {
  if (ctx_->dctx == nullptr) return absl::ResourceExhaustedError("zstd: cannot allocate context");
  unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
    return absl::DataLossError("zstd frame: unreadable header");
  }
  if (content != expected_size) {
    return absl::DataLossError(
        absl::StrCat("zstd frame: holds ", content, " bytes, expected ", expected_size));
  }
  out->resize(expected_size);
  size_t n = ZSTD_decompressDCtx(ctx_->dctx, out->data(), out->size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) {
    return absl::DataLossError(absl::StrCat("zstd frame: ", ZSTD_getErrorName(n)));
  }
  if (n != expected_size) {
    return absl::DataLossError(
        absl::StrCat("zstd frame: decoded ", n, " bytes, expected ", expected_size));
  }
  return absl::OkStatus();
}

}  // namespace blkfleet
