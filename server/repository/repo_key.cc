// SPDX-License-Identifier: Apache-2.0
#include "server/repository/repo_key.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/durable_file.h"
#include "common/sha256.h"
#include "common/unique_fd.h"

namespace blkfleet::repo {
namespace {

constexpr size_t kKeySize = 32;

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::string Hkdf(std::string_view key, std::string_view salt, std::string_view info) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr), EVP_PKEY_CTX_free);
  std::string out(kKeySize, '\0');
  size_t len = out.size();
  auto u = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
  // Only allocation failures inside OpenSSL make these fail.
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), u(salt), static_cast<int>(salt.size())) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), u(key), static_cast<int>(key.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), u(info), static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len) != 1 ||
      len != kKeySize) {
    std::abort();
  }
  return out;
}

std::optional<std::string> ParseHexKey(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (text.size() != 2 * kKeySize) return std::nullopt;
  std::string out(kKeySize, '\0');
  for (size_t i = 0; i < 2 * kKeySize; ++i) {
    const char c = text[i];
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else return std::nullopt;
    out[i / 2] = static_cast<char>((i % 2 == 0) ? v << 4 : (out[i / 2] | v));
  }
  return out;
}

}  // namespace

absl::StatusOr<RepoKey> LoadRepoKeyFile(const std::string& path, const std::string& flag) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat(flag, " ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, absl::StrCat(flag, " ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s %s has mode %04o: group or others may access it; a repository key must be "
        "readable by its owner only (chmod 600 or 400)",
        flag, path, st.st_mode & 07777));
  }
  if (st.st_size > 256) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, " is ", st.st_size,
                                                   " bytes: not a repository key"));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    return ErrnoStatus(errno, absl::StrCat(flag, " read ", path));
  }
  RepoKey key;
  if (auto hex = ParseHexKey(text)) {
    key.bytes = std::move(*hex);
  } else if (text.size() == kKeySize) {
    key.bytes = std::move(text);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": a repository key is 64 hex digits (optionally a newline) or 32 raw "
        "bytes; this file holds ", text.size(), " bytes of neither"));
  }
  return key;
}

absl::Status GenerateRepoKeyFile(const std::string& path) {
  unsigned char raw[kKeySize];
  if (RAND_bytes(raw, sizeof(raw)) != 1) return absl::InternalError("RAND_bytes failed");
  std::string text;
  for (unsigned char b : raw) absl::StrAppendFormat(&text, "%02x", b);
  text += "\n";
  OPENSSL_cleanse(raw, sizeof(raw));
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("create key file ", path));
  absl::Status s;
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd.get()) != 0) {
    s = ErrnoStatus(errno, absl::StrCat("write key file ", path));
  }
  OPENSSL_cleanse(text.data(), text.size());
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

RepoSubkeys DeriveRepoSubkeys(const RepoKey& key, std::string_view repo_id) {
  RepoSubkeys k;
  // Keyed() only fails on a key of the wrong size; Hkdf gives 32 bytes.
  k.chunk_id = *ChunkIdFn::Keyed(Hkdf(key.bytes, repo_id, "blkfleet chunk id v1"), "chunk id key");
  k.chunk_enc = Hkdf(key.bytes, repo_id, "blkfleet chunk encryption v1");
  k.metadata_mac = Hkdf(key.bytes, repo_id, "blkfleet metadata mac v1");
  const std::string check = Hkdf(key.bytes, repo_id, "blkfleet key check v1");
  k.key_check = DigestToHex(HmacSha256(check, "blkfleet repository key check"));
  return k;
}

absl::Status ChunkCipher::Seal(std::string_view aad, std::string_view plain,
                               std::string* sealed) const {
  sealed->resize(kNonceSize + plain.size() + kTagSize);
  auto* out = reinterpret_cast<unsigned char*>(sealed->data());
  if (RAND_bytes(out, kNonceSize) != 1) return absl::InternalError("RAND_bytes failed");
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  auto u = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, u(key_), out) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, u(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out + kNonceSize, &len, u(plain),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out + kNonceSize + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize,
                          out + kNonceSize + plain.size()) != 1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  return absl::OkStatus();
}

absl::Status ChunkCipher::Open(std::string_view aad, std::string_view sealed,
                               std::string* plain) const {
  if (sealed.size() < kOverhead) {
    return absl::DataLossError("encrypted payload is shorter than its nonce and tag");
  }
  const size_t n = sealed.size() - kOverhead;
  const auto* in = reinterpret_cast<const unsigned char*>(sealed.data());
  plain->resize(n);
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  auto u = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, u(key_), in) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, u(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain->data()), &len,
                        in + kNonceSize, static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize,
                          const_cast<unsigned char*>(in + kNonceSize + n)) != 1) {
    return absl::InternalError("AES-256-GCM decryption could not start");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain->data()) + len,
                          &len) != 1) {
    plain->clear();
    return absl::DataLossError(
        "authentication failed (AES-256-GCM tag): the chunk was altered, moved to another "
        "name, or written under another key");
  }
  return absl::OkStatus();
}

}  // namespace blkfleet::repo
