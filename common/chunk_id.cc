// SPDX-License-Identifier: Apache-2.0
#include "common/chunk_id.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace blkfleet {

absl::StatusOr<ChunkIdFn> ChunkIdFn::Keyed(std::string_view key, const std::string& field) {
  if (key.size() != kKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", key.size(), " bytes, a chunk id key has 32"));
  }
  ChunkIdFn f;
  f.key_.emplace();
  std::memcpy(f.key_->data(), key.data(), kKeySize);
  return f;
}

Sha256Digest ChunkIdFn::operator()(std::string_view data) const {
  if (!key_) return Sha256(data);
  return HmacSha256(std::string_view(reinterpret_cast<const char*>(key_->data()), key_->size()),
                    data);
}

std::string ChunkIdFn::KeyBytes() const {
  if (!key_) return {};
  return std::string(reinterpret_cast<const char*>(key_->data()), key_->size());
}

Sha256Digest HmacSha256(std::string_view key, std::string_view data) {
  Sha256Digest out;
  unsigned int len = 0;
  // Fails only on allocation failure inside OpenSSL, as EVP_Digest.
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(),
           &len) == nullptr ||
      len != out.size()) {
    std::abort();
  }
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace blkfleet
