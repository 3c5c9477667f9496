// SPDX-License-Identifier: Apache-2.0
#include "client/pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <memory>
#include <optional>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tls.h"

namespace blkfleet::pki {
namespace {

struct Free {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
using X509Ptr = std::unique_ptr<X509, Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Free>;
using BioPtr = std::unique_ptr<BIO, Free>;

constexpr long kDay = 24 * 60 * 60;
// Certificates start this long before now, for clocks a little behind.
constexpr long kSkew = 5 * 60;

absl::Status OpenSslFailure(absl::string_view what) {
  unsigned long e = ERR_peek_last_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return absl::InternalError(absl::StrCat(what, ": ", buf));
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Creates `path` (never replacing a file) with `data` and `mode`.
absl::Status WriteNew(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", strerror(errno)));
  }
  // The umask may only have removed bits; set exactly `mode`.
  bool ok = ::fchmod(fd, mode) == 0;
  size_t off = 0;
  while (ok && off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ok = false;
    else off += static_cast<size_t>(n);
  }
  if (ok) ok = ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return absl::InternalError(absl::StrCat(path, ": ", strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", strerror(errno)));
  }
  std::string out;
  char buf[4096];
  int n;
  while ((n = BIO_read(bio.get(), buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslFailure("writing the private key");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslFailure("writing the certificate");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Free> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslFailure(absl::StrCat("extension ", OBJ_nid2sn(nid), " = ", value));
  }
  return absl::OkStatus();
}

// A certificate with subject O=blkfleet[, OU=ou], CN=cn, a random 127-bit
// serial and validity [now - backdate - skew, now - backdate + days].
absl::StatusOr<X509Ptr> NewCert(EVP_PKEY* key, const std::string& ou, const std::string& cn,
                                int days, int backdate_days) {
  X509Ptr cert(X509_new());
  std::unique_ptr<BIGNUM, Free> serial(BN_new());
  if (!cert || !serial || X509_set_version(cert.get(), 2) != 1 ||
      BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return OpenSslFailure("new certificate");
  }
  const long start = -static_cast<long>(backdate_days) * kDay;
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), start - kSkew) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert.get()), start + days * kDay)) {
    return OpenSslFailure("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  auto add = [&](const char* field, const std::string& v) {
    return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(v.c_str()), -1, -1,
                                      0) == 1;
  };
  if (!add("O", "blkfleet") || (!ou.empty() && !add("OU", ou)) || !add("CN", cn)) {
    return OpenSslFailure("subject");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return OpenSslFailure("public key");
  return cert;
}

absl::StatusOr<KeyPtr> NewKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslFailure("EC P-256 key");
  return key;
}

absl::Status CheckDays(int days) {
  if (days < 1 || days > 36500) {
    return absl::InvalidArgumentError(absl::StrCat("--days ", days, ": give 1 .. 36500"));
  }
  return absl::OkStatus();
}

bool IsIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool IsDnsName(const std::string& s) {
  if (s.empty() || s.size() > 253 || s.front() == '.' || s.back() == '.' || s.front() == '-') {
    return false;
  }
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.') return false;
  }
  return s.find("..") == std::string::npos;
}

absl::Status CheckName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && absl::ascii_isalnum(name[0]) && name != "ca";
  for (char c : name) ok = ok && (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_');
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--name '", name, "': give 1-64 letters, digits, '-', '.', '_', starting with a letter "
        "or digit (not 'ca')"));
  }
  return absl::OkStatus();
}

std::string ValidUntil(X509* cert) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

}  // namespace

absl::StatusOr<std::string> InitCa(const InitRequest& req) {
  if (req.dir.empty()) return absl::InvalidArgumentError("--dir is required");
  if (absl::Status s = CheckDays(req.days); !s.ok()) return s;
  const std::string key_path = req.dir + "/ca.key", cert_path = req.dir + "/ca.crt";
  for (const std::string& p : {key_path, cert_path}) {
    if (Exists(p)) {
      return absl::AlreadyExistsError(
          absl::StrCat(p, " exists: refusing to replace a CA (every certificate it issued would "
                       "stop working); pick another --dir"));
    }
  }
  if (::mkdir(req.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("--dir ", req.dir, ": ", strerror(errno)));
  }
  absl::StatusOr<KeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  absl::StatusOr<X509Ptr> cert = NewCert(key->get(), "", "blkfleet CA", req.days, 0);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1) return OpenSslFailure("issuer");
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    if (absl::Status s = AddExt(c, c, nid, value); !s.ok()) return s;
  }
  if (X509_sign(c, key->get(), EVP_sha256()) <= 0) return OpenSslFailure("signing the CA");
  absl::StatusOr<std::string> key_pem = KeyPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<std::string> cert_pem = CertPem(c);
  if (!cert_pem.ok()) return cert_pem.status();
  if (absl::Status s = WriteNew(key_path, *key_pem, 0600); !s.ok()) return s;
  if (absl::Status s = WriteNew(cert_path, *cert_pem, 0644); !s.ok()) {
    ::unlink(key_path.c_str());
    return s;
  }
  return absl::StrCat("CA made, valid until ", ValidUntil(c), ": ", cert_path,
                      " (give it to every server, agent and operator), ", key_path,
                      " (private: only `blkfleet pki issue` needs it)");
}

absl::StatusOr<std::string> Issue(const IssueRequest& req) {
  if (req.dir.empty()) return absl::InvalidArgumentError("--dir is required");
  std::optional<tls::Kind> kind = tls::ParseKind(req.kind);
  if (!kind) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kind '", req.kind, "': give server, agent or operator"));
  }
  if (absl::Status s = CheckName(req.name); !s.ok()) return s;
  if (absl::Status s = CheckDays(req.days); !s.ok()) return s;
  if (req.backdate_days < 0 || req.backdate_days > 36500) {
    return absl::InvalidArgumentError("--backdate-days: give 0 .. 36500");
  }
  tls::Role role = tls::Role::kNone;
  if (*kind == tls::Kind::kOperator) {
    std::optional<tls::Role> r = tls::ParseRole(req.role.empty() ? "read-only" : req.role);
    if (!r) {
      return absl::InvalidArgumentError(
          absl::StrCat("--role '", req.role, "': give admin, operator or read-only"));
    }
    role = *r;
    if (!req.sans.empty()) {
      return absl::InvalidArgumentError("--san is for server and agent certificates");
    }
  } else if (!req.role.empty()) {
    return absl::InvalidArgumentError("--role is for operator certificates");
  }
  std::vector<std::string> sans;
  if (*kind != tls::Kind::kOperator) {
    std::vector<std::string> hosts = {req.name};
    hosts.insert(hosts.end(), req.sans.begin(), req.sans.end());
    for (const std::string& h : hosts) {
      if (IsIp(h)) {
        sans.push_back("IP:" + h);
      } else if (IsDnsName(h)) {
        sans.push_back("DNS:" + h);
      } else if (&h != &hosts[0]) {
        return absl::InvalidArgumentError(
            absl::StrCat("--san '", h, "': give a DNS name or an IP address"));
      }
    }
  }
  sans.push_back(absl::StrCat("URI:", tls::kKindUriPrefix, tls::KindName(*kind)));
  if (role != tls::Role::kNone) {
    sans.push_back(absl::StrCat("URI:", tls::kRoleUriPrefix, tls::RoleName(role)));
  }

  const std::string ca_key_path = req.dir + "/ca.key", ca_cert_path = req.dir + "/ca.crt";
  const std::string key_path = absl::StrCat(req.dir, "/", req.name, ".key");
  const std::string cert_path = absl::StrCat(req.dir, "/", req.name, ".crt");
  for (const std::string& p : {key_path, cert_path}) {
    if (Exists(p)) {
      return absl::AlreadyExistsError(absl::StrCat(
          p, " exists: refusing to replace it (remove it first to re-issue, or pick another "
             "--name)"));
    }
  }
  absl::StatusOr<std::string> ca_key_text = ReadFile(ca_key_path);
  if (!ca_key_text.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the CA key: ", ca_key_text.status().message(), " (run `blkfleet pki init --dir ",
        req.dir, "` first)"));
  }
  absl::StatusOr<std::string> ca_cert_text = ReadFile(ca_cert_path);
  if (!ca_cert_text.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the CA certificate: ", ca_cert_text.status().message()));
  }
  BioPtr kb(BIO_new_mem_buf(ca_key_text->data(), static_cast<int>(ca_key_text->size())));
  KeyPtr ca_key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  BioPtr cb(BIO_new_mem_buf(ca_cert_text->data(), static_cast<int>(ca_cert_text->size())));
  X509Ptr ca_cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!ca_key) return absl::FailedPreconditionError(ca_key_path + ": not a PEM private key");
  if (!ca_cert) return absl::FailedPreconditionError(ca_cert_path + ": not a PEM certificate");
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat(ca_key_path, " does not belong to ", ca_cert_path));
  }

  absl::StatusOr<KeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  absl::StatusOr<X509Ptr> cert = NewCert(key->get(), std::string(tls::KindName(*kind)), req.name,
                                         req.days, req.backdate_days);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(ca_cert.get())) != 1) {
    return OpenSslFailure("issuer");
  }
  const char* eku = *kind == tls::Kind::kServer ? "serverAuth,clientAuth"  // serves; calls agents
                    : *kind == tls::Kind::kAgent ? "serverAuth"
                                                 : "clientAuth";
  const std::string san = absl::StrJoin(sans, ",");
  const std::pair<int, std::string> extensions[] = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, eku},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
      {NID_subject_alt_name, san}};
  for (const auto& [nid, value] : extensions) {
    if (absl::Status s = AddExt(c, ca_cert.get(), nid, value); !s.ok()) return s;
  }
  if (X509_sign(c, ca_key.get(), EVP_sha256()) <= 0) return OpenSslFailure("signing");
  absl::StatusOr<std::string> key_pem = KeyPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<std::string> cert_pem = CertPem(c);
  if (!cert_pem.ok()) return cert_pem.status();
  if (absl::Status s = WriteNew(key_path, *key_pem, 0600); !s.ok()) return s;
  if (absl::Status s = WriteNew(cert_path, *cert_pem, 0644); !s.ok()) {
    ::unlink(key_path.c_str());
    return s;
  }
  std::string who = absl::StrCat(tls::KindName(*kind), " '", req.name, "'");
  if (role != tls::Role::kNone) absl::StrAppend(&who, " (role ", tls::RoleName(role), ")");
  return absl::StrCat("issued ", who, ", valid until ", ValidUntil(c), ": ", cert_path, ", ",
                      key_path, " (private, mode 0600)");
}

void AddPkiCommands(CLI::App& app, std::ostream& out, std::ostream& err, int* rc) {
  auto* pki = app.add_subcommand(
      "pki", "make the CA and certificates of blkfleet's mutual TLS (docs/security.md); "
             "runs locally, does not contact the server");
  pki->require_subcommand(1);
  auto report = [&out, &err, rc](const absl::StatusOr<std::string>& r) {
    if (r.ok()) {
      out << *r << "\n";
      *rc = 0;
    } else {
      err << "blkfleet: " << r.status().message() << "\n";
      *rc = 1;
    }
  };
  auto init_req = std::make_shared<InitRequest>();
  auto* init = pki->add_subcommand("init", "make a CA: DIR/ca.crt and DIR/ca.key (EC P-256)");
  init->add_option("--dir", init_req->dir, "folder of the PKI (made if missing)")->required();
  init->add_option("--days", init_req->days, "validity in days")->capture_default_str();
  init->callback([init_req, report] { report(InitCa(*init_req)); });

  auto issue_req = std::make_shared<IssueRequest>();
  auto* issue = pki->add_subcommand(
      "issue", "issue a certificate signed by the CA of DIR: DIR/NAME.crt and DIR/NAME.key");
  issue->add_option("--dir", issue_req->dir, "folder of the PKI (with ca.crt, ca.key)")
      ->required();
  issue->add_option("--kind", issue_req->kind, "server, agent or operator")->required();
  issue->add_option("--name", issue_req->name,
                    "identity: the subject CN; for server and agent also a DNS name (or IP) "
                    "of the certificate")
      ->required();
  issue->add_option("--role", issue_req->role,
                    "operators: admin, operator or read-only (default read-only)");
  issue->add_option("--san", issue_req->sans,
                    "server and agent: another DNS name or IP address clients use to reach "
                    "it, e.g. 127.0.0.1 (repeatable)");
  issue->add_option("--days", issue_req->days, "validity in days")->capture_default_str();
  issue->add_option("--backdate-days", issue_req->backdate_days,
                    "tests: start the validity window this many days ago")
      ->group("");
  issue->callback([issue_req, report] { report(Issue(*issue_req)); });
}

}  // namespace blkfleet::pki
