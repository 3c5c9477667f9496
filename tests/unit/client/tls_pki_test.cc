// SPDX-License-Identifier: Apache-2.0
// `blkfleet pki` and the TLS helpers of common/tls: the certificates it
// makes, what it refuses, and how LoadTlsMaterial reports bad files.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "client/cli.h"
#include "client/pki.h"
#include "common/tls.h"

namespace blkfleet::pki {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CertDeleter {
  void operator()(X509* x) const { X509_free(x); }
};
std::unique_ptr<X509, CertDeleter> Load(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  fclose(f);
  return std::unique_ptr<X509, CertDeleter>(x);
}

class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blkfleet-pki.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/pki";
    auto made = InitCa({dir_, 30});
    ASSERT_TRUE(made.ok()) << made.status();
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  absl::StatusOr<std::string> IssueOne(const std::string& kind, const std::string& name,
                                       const std::string& role = "",
                                       std::vector<std::string> sans = {}) {
    IssueRequest r;
    r.dir = dir_;
    r.kind = kind;
    r.name = name;
    r.role = role;
    r.sans = std::move(sans);
    return Issue(r);
  }

  std::string root_, dir_;
};

TEST_F(PkiTest, CaIsACaAndItsKeyIsPrivate) {
  auto ca = Load(dir_ + "/ca.crt");
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_EQ(X509_check_issued(ca.get(), ca.get()), X509_V_OK);  // self-signed
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/ca.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);  // the folder is the operator's only
  // The key is EC P-256.
  EVP_PKEY* pub = X509_get0_pubkey(ca.get());
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  EXPECT_EQ(EVP_PKEY_get_bits(pub), 256);
}

TEST_F(PkiTest, InitRefusesToReplaceACa) {
  const std::string before = Slurp(dir_ + "/ca.crt");
  auto again = InitCa({dir_, 30});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Slurp(dir_ + "/ca.crt"), before);
}

TEST_F(PkiTest, ServerCertificateHasBothUsagesAndItsNames) {
  ASSERT_TRUE(IssueOne("server", "backup1", "", {"127.0.0.1", "localhost"}).ok());
  auto cert = Load(dir_ + "/backup1.crt");
  auto ca = Load(dir_ + "/ca.crt");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(X509_check_issued(ca.get(), cert.get()), X509_V_OK);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_EQ(X509_check_purpose(cert.get(), X509_PURPOSE_SSL_SERVER, 0), 1);
  EXPECT_EQ(X509_check_purpose(cert.get(), X509_PURPOSE_SSL_CLIENT, 0), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "backup1", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  EXPECT_NE(X509_check_host(cert.get(), "other", 0, 0, nullptr), 1);
  auto id = tls::IdentityFromPem(Slurp(dir_ + "/backup1.crt"));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->kind, tls::Kind::kServer);
  EXPECT_EQ(id->name, "backup1");
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/backup1.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(PkiTest, AgentCertificateServesOnlyAndOperatorOnlyConnects) {
  ASSERT_TRUE(IssueOne("agent", "h1", "", {"10.0.0.7"}).ok());
  auto agent = Load(dir_ + "/h1.crt");
  EXPECT_EQ(X509_check_purpose(agent.get(), X509_PURPOSE_SSL_SERVER, 0), 1);
  EXPECT_EQ(X509_check_purpose(agent.get(), X509_PURPOSE_SSL_CLIENT, 0), 0);
  EXPECT_EQ(X509_check_ip_asc(agent.get(), "10.0.0.7", 0), 1);

  ASSERT_TRUE(IssueOne("operator", "alice", "operator").ok());
  auto op = Load(dir_ + "/alice.crt");
  EXPECT_EQ(X509_check_purpose(op.get(), X509_PURPOSE_SSL_CLIENT, 0), 1);
  EXPECT_EQ(X509_check_purpose(op.get(), X509_PURPOSE_SSL_SERVER, 0), 0);
  auto id = tls::IdentityFromPem(Slurp(dir_ + "/alice.crt"));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->kind, tls::Kind::kOperator);
  EXPECT_EQ(id->role, tls::Role::kOperator);
  EXPECT_EQ(id->Describe(), "operator 'alice' (role operator)");
}

TEST_F(PkiTest, OperatorRoleDefaultsToReadOnly) {
  ASSERT_TRUE(IssueOne("operator", "viewer").ok());
  auto id = tls::IdentityFromPem(Slurp(dir_ + "/viewer.crt"));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->role, tls::Role::kReadOnly);
}

TEST_F(PkiTest, IssueRefusesBadInputAndOverwrites) {
  ASSERT_TRUE(IssueOne("agent", "h1").ok());
  const std::string before = Slurp(dir_ + "/h1.crt");
  auto again = IssueOne("agent", "h1");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Slurp(dir_ + "/h1.crt"), before);

  EXPECT_FALSE(IssueOne("robot", "r1").ok());                       // unknown kind
  EXPECT_FALSE(IssueOne("operator", "bob", "root").ok());           // unknown role
  EXPECT_FALSE(IssueOne("agent", "h2", "admin").ok());              // role on an agent
  EXPECT_FALSE(IssueOne("operator", "bob", "admin", {"x"}).ok());   // SAN on an operator
  EXPECT_FALSE(IssueOne("agent", "h3", "", {"bad name,DNS:evil"}).ok());
  EXPECT_FALSE(IssueOne("agent", "../escape").ok());
  EXPECT_FALSE(IssueOne("agent", "ca").ok());
  IssueRequest r{dir_, "agent", "h4"};
  r.days = 0;
  EXPECT_FALSE(Issue(r).ok());
  for (const char* name : {"r1", "bob", "h2", "h3", "h4"}) {
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/" + name + ".crt")) << name;
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/" + name + ".key")) << name;
  }
  // No CA in the folder.
  IssueRequest nocamp{root_ + "/empty", "agent", "h5"};
  auto noca = Issue(nocamp);
  ASSERT_FALSE(noca.ok());
  EXPECT_NE(noca.status().message().find("pki init"), std::string::npos) << noca.status();
}

TEST_F(PkiTest, LoadTlsMaterialChecksEveryFile) {
  ASSERT_TRUE(IssueOne("agent", "h1").ok());
  ASSERT_TRUE(IssueOne("agent", "h2").ok());
  tls::TlsFiles good{dir_ + "/ca.crt", dir_ + "/h1.crt", dir_ + "/h1.key"};
  auto m = tls::LoadTlsMaterial(good);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->identity.kind, tls::Kind::kAgent);
  EXPECT_EQ(m->identity.name, "h1");

  auto missing = tls::LoadTlsMaterial({dir_ + "/ca.crt", dir_ + "/nope.crt", dir_ + "/h1.key"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--tls-cert " + dir_ + "/nope.crt"), std::string::npos)
      << missing.status();
  EXPECT_NE(missing.status().message().find("No such file"), std::string::npos);

  auto wrong_key = tls::LoadTlsMaterial({dir_ + "/ca.crt", dir_ + "/h1.crt", dir_ + "/h2.key"});
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_NE(wrong_key.status().message().find("does not belong"), std::string::npos);

  auto not_pem = tls::LoadTlsMaterial({dir_ + "/h1.key", dir_ + "/h1.crt", dir_ + "/h1.key"});
  ASSERT_FALSE(not_pem.ok());
  EXPECT_NE(not_pem.status().message().find("--tls-ca"), std::string::npos) << not_pem.status();

  // A certificate of another CA.
  ASSERT_TRUE(InitCa({root_ + "/other", 30}).ok());
  auto other = tls::LoadTlsMaterial({root_ + "/other/ca.crt", dir_ + "/h1.crt", dir_ + "/h1.key"});
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("not signed by"), std::string::npos);

  // An expired one.
  IssueRequest old{dir_, "agent", "old"};
  old.days = 1;
  old.backdate_days = 3;
  ASSERT_TRUE(Issue(old).ok());
  auto expired = tls::LoadTlsMaterial({dir_ + "/ca.crt", dir_ + "/old.crt", dir_ + "/old.key"});
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.status().message().find("has expired"), std::string::npos);
}

TEST_F(PkiTest, CommandLine) {
  std::ostringstream out, err;
  int rc = cli::RunCli({"pki", "issue", "--dir", dir_, "--kind", "operator", "--name", "root",
                        "--role", "admin", "--days", "10"},
                       cli::CliIo{out, err, false});
  EXPECT_EQ(rc, 0) << err.str();
  EXPECT_NE(out.str().find("issued operator 'root' (role admin)"), std::string::npos) << out.str();
  std::ostringstream out2, err2;
  rc = cli::RunCli({"pki", "issue", "--dir", dir_, "--kind", "operator", "--name", "root"},
                   cli::CliIo{out2, err2, false});
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err2.str().find("exists"), std::string::npos) << err2.str();
  // A server call without TLS files or --insecure says what to give.
  unsetenv("BLKFLEET_TLS_CA");
  unsetenv("BLKFLEET_TLS_CERT");
  unsetenv("BLKFLEET_TLS_KEY");
  std::ostringstream out3, err3;
  rc = cli::RunCli({"--server", "127.0.0.1:1", "host", "list"}, cli::CliIo{out3, err3, false});
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err3.str().find("--insecure"), std::string::npos) << err3.str();
  // A missing certificate file is named.
  std::ostringstream out4, err4;
  rc = cli::RunCli({"--server", "127.0.0.1:1", "--tls-ca", dir_ + "/ca.crt", "--tls-cert",
                    dir_ + "/gone.crt", "--tls-key", dir_ + "/root.key", "host", "list"},
                   cli::CliIo{out4, err4, false});
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err4.str().find("gone.crt"), std::string::npos) << err4.str();
}

}  // namespace
}  // namespace blkfleet::pki
