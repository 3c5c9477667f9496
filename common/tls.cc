// SPDX-License-Identifier: Apache-2.0
#include "common/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace blkfleet::tls {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct GensFree {
  void operator()(GENERAL_NAMES* g) const { GENERAL_NAMES_free(g); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The last OpenSSL error as text, and the queue cleared.
std::string OpenSslError() {
  unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out = buf;
  }
  ERR_clear_error();
  return out.empty() ? "not PEM" : out;
}

X509Ptr ParseCert(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr ParseKey(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(strerror(errno));
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return absl::UnavailableError(strerror(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1 << 20)) {
      ::close(fd);
      return absl::InvalidArgumentError("larger than 1 MiB: not a PEM file");
    }
  }
  ::close(fd);
  return out;
}

std::string CommonName(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

std::string ValidityError(X509* cert) {
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) return "is not valid yet";
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) return "has expired";
  return "";
}

}  // namespace

absl::string_view KindName(Kind k) {
  switch (k) {
    case Kind::kServer: return "server";
    case Kind::kAgent: return "agent";
    case Kind::kOperator: return "operator";
    default: return "unknown";
  }
}

absl::string_view RoleName(Role r) {
  switch (r) {
    case Role::kReadOnly: return "read-only";
    case Role::kOperator: return "operator";
    case Role::kAdmin: return "admin";
    default: return "none";
  }
}

std::optional<Kind> ParseKind(absl::string_view s) {
  if (s == "server") return Kind::kServer;
  if (s == "agent") return Kind::kAgent;
  if (s == "operator") return Kind::kOperator;
  return std::nullopt;
}

std::optional<Role> ParseRole(absl::string_view s) {
  if (s == "read-only") return Role::kReadOnly;
  if (s == "operator") return Role::kOperator;
  if (s == "admin") return Role::kAdmin;
  return std::nullopt;
}

std::string Identity::Describe() const {
  std::string out = absl::StrCat(KindName(kind), " '", name, "'");
  if (kind == Kind::kUnknown) out = absl::StrCat("certificate '", name, "' (not a blkfleet identity)");
  if (kind == Kind::kOperator) absl::StrAppend(&out, " (role ", RoleName(role), ")");
  return out;
}

absl::StatusOr<Identity> IdentityFromPem(absl::string_view cert_pem) {
  X509Ptr cert = ParseCert(cert_pem);
  if (!cert) return absl::InvalidArgumentError("certificate: " + OpenSslError());
  Identity id;
  id.name = CommonName(cert.get());
  std::unique_ptr<GENERAL_NAMES, GensFree> sans(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)));
  std::optional<Kind> kind;
  std::optional<Role> role;
  bool conflicting = false;
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
    absl::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                          static_cast<size_t>(ASN1_STRING_length(uri)));
    if (absl::StartsWith(text, kKindUriPrefix)) {
      std::optional<Kind> k = ParseKind(text.substr(sizeof(kKindUriPrefix) - 1));
      if (!k || (kind && *kind != *k)) conflicting = true;
      kind = k;
    } else if (absl::StartsWith(text, kRoleUriPrefix)) {
      std::optional<Role> r = ParseRole(text.substr(sizeof(kRoleUriPrefix) - 1));
      if (!r || (role && *role != *r)) conflicting = true;
      role = r;
    }
  }
  ERR_clear_error();
  // A certificate claiming two kinds or roles, or ones we do not know, is
  // nobody: fail closed.
  if (conflicting || !kind) return id;
  id.kind = *kind;
  if (id.kind == Kind::kOperator) id.role = role.value_or(Role::kNone);
  return id;
}

absl::StatusOr<Identity> PeerIdentity(const grpc::AuthContext& context) {
  std::vector<grpc::string_ref> pems = context.FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pems.empty()) return absl::UnauthenticatedError("the call carried no client certificate");
  return IdentityFromPem(absl::string_view(pems[0].data(), pems[0].size()));
}

absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files, absl::string_view flag_prefix) {
  auto read = [&](const std::string& path, absl::string_view what) -> absl::StatusOr<std::string> {
    std::string flag = absl::StrCat(flag_prefix, what);
    if (path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " is required (a PEM file)"));
    }
    absl::StatusOr<std::string> text = ReadSmallFile(path);
    if (!text.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, ": cannot read: ", text.status().message()));
    }
    return text;
  };
  TlsMaterial m;
  absl::StatusOr<std::string> ca = read(files.ca, "ca");
  if (!ca.ok()) return ca.status();
  absl::StatusOr<std::string> cert = read(files.cert, "cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = read(files.key, "key");
  if (!key.ok()) return key.status();

  X509Ptr ca_cert = ParseCert(*ca);
  if (!ca_cert) {
    return absl::InvalidArgumentError(absl::StrCat(flag_prefix, "ca ", files.ca,
                                                   ": not a PEM certificate (", OpenSslError(), ")"));
  }
  X509Ptr own = ParseCert(*cert);
  if (!own) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag_prefix, "cert ", files.cert, ": not a PEM certificate (", OpenSslError(), ")"));
  }
  PkeyPtr pkey = ParseKey(*key);
  if (!pkey) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag_prefix, "key ", files.key, ": not a PEM private key (", OpenSslError(), ")"));
  }
  if (X509_check_private_key(own.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(flag_prefix, "key ", files.key,
                                                   " does not belong to ", flag_prefix, "cert ",
                                                   files.cert));
  }
  // The CA file may hold several CA certificates (during a CA rotation):
  // the certificate must be signed by one of them, which must be valid.
  X509Ptr signer;
  {
    BioPtr bio(BIO_new_mem_buf(ca->data(), static_cast<int>(ca->size())));
    while (X509Ptr c{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
      PkeyPtr k(X509_get_pubkey(c.get()));
      if (k && X509_verify(own.get(), k.get()) == 1) {
        signer = std::move(c);
        break;
      }
    }
    ERR_clear_error();
  }
  if (!signer) {
    return absl::InvalidArgumentError(absl::StrCat(flag_prefix, "cert ", files.cert,
                                                   " is not signed by ", flag_prefix, "ca ",
                                                   files.ca));
  }
  if (std::string e = ValidityError(signer.get()); !e.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag_prefix, "ca ", files.ca, " ", e));
  }
  if (std::string e = ValidityError(own.get()); !e.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag_prefix, "cert ", files.cert, " ", e));
  }
  absl::StatusOr<Identity> id = IdentityFromPem(*cert);
  if (!id.ok()) return id.status();
  m.ca_pem = *std::move(ca);
  m.cert_pem = *std::move(cert);
  m.key_pem = *std::move(key);
  m.identity = *std::move(id);
  return m;
}

std::shared_ptr<grpc::ServerCredentials> MutualTlsServerCredentials(
    const TlsMaterial& m, std::shared_ptr<grpc::AuthMetadataProcessor> processor) {
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = m.ca_pem;
  opts.pem_key_cert_pairs.push_back({m.key_pem, m.cert_pem});
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(opts);
  if (processor) creds->SetAuthMetadataProcessor(std::move(processor));
  return creds;
}

std::shared_ptr<grpc::ChannelCredentials> MutualTlsChannelCredentials(const TlsMaterial& m) {
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = m.ca_pem;
  opts.pem_private_key = m.key_pem;
  opts.pem_cert_chain = m.cert_pem;
  return grpc::SslCredentials(opts);
}

std::string CallPath(const grpc::AuthMetadataProcessor::InputMetadata& md) {
  auto it = md.find(":path");
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

AllowedServersProcessor::AllowedServersProcessor(std::vector<std::string> allowed_servers,
                                                 std::string component)
    : allowed_(std::move(allowed_servers)), component_(std::move(component)) {}

grpc::Status AllowedServersProcessor::Check(const absl::StatusOr<Identity>& peer,
                                            absl::string_view path) const {
  if (!peer.ok()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(component_, ": ", peer.status().message()));
  }
  if (peer->kind == Kind::kServer &&
      std::find(allowed_.begin(), allowed_.end(), peer->name) != allowed_.end()) {
    return grpc::Status::OK;
  }
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      absl::StrCat(component_, " refuses ", peer->Describe(), " calling ",
                   path.empty() ? "(unknown method)" : path,
                   ": only blkfleet servers named in --allowed-server may call it (",
                   absl::StrJoin(allowed_, ", "), ")"));
}

grpc::Status AllowedServersProcessor::Process(const InputMetadata& auth_metadata,
                                              grpc::AuthContext* context, OutputMetadata*,
                                              OutputMetadata*) {
  absl::StatusOr<Identity> peer =
      context ? PeerIdentity(*context) : absl::UnauthenticatedError("no auth context");
  grpc::Status s = Check(peer, CallPath(auth_metadata));
  if (!s.ok()) std::fprintf(stderr, "%s (refused)\n", s.error_message().c_str());
  return s;
}

}  // namespace blkfleet::tls
