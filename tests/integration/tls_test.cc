// SPDX-License-Identifier: Apache-2.0
// Mutual TLS and roles over real processes (docs/security.md): the PKI is
// made with `blkfleet pki`, the server and the agent serve TLS, the CLI
// and raw gRPC clients connect with various certificates. Every refused
// call is followed by a check, as admin, that nothing changed.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "tests/integration/fleet.h"

namespace blkfleet::testing {
namespace {

namespace sv = server::v1;
namespace av = agent::v1;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("blkfleet-tls");
    ASSERT_FALSE(dir_.empty());
    pki_ = dir_ + "/pki";
    other_ = dir_ + "/other";
    Pki({"init", "--dir", pki_});
    Pki({"init", "--dir", other_});
    Pki({"issue", "--dir", pki_, "--kind", "server", "--name", "srv", "--san", "127.0.0.1"});
    Pki({"issue", "--dir", pki_, "--kind", "server", "--name", "rogue", "--san", "127.0.0.1"});
    Pki({"issue", "--dir", pki_, "--kind", "agent", "--name", "h1", "--san", "127.0.0.1"});
    Pki({"issue", "--dir", pki_, "--kind", "operator", "--name", "root", "--role", "admin"});
    Pki({"issue", "--dir", pki_, "--kind", "operator", "--name", "ops", "--role", "operator"});
    Pki({"issue", "--dir", pki_, "--kind", "operator", "--name", "viewer", "--role",
         "read-only"});
    Pki({"issue", "--dir", pki_, "--kind", "operator", "--name", "old", "--role", "admin",
         "--days", "1", "--backdate-days", "3"});
    Pki({"issue", "--dir", other_, "--kind", "operator", "--name", "root", "--role", "admin"});
    if (HasFatalFailure()) return;
    StartAgent();
    if (HasFatalFailure()) return;
    StartServer();
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "--- agent log ---\n" << agent_.LogTail() << "\n--- server log ---\n"
                << server_.LogTail() << "\n";
    }
    server_.Kill(SIGTERM);
    agent_.Kill(SIGTERM);
    RemoveTree(dir_);
  }

  void Pki(std::vector<std::string> args) {
    args.insert(args.begin(), {Binaries::Cli(), "pki"});
    CommandResult r = RunCommand(args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  // TLS flags of a daemon or the CLI: the CA of `ca_dir`, the cert and key
  // of `name` in `dir`.
  std::vector<std::string> TlsFlags(const std::string& dir, const std::string& name,
                                    const std::string& ca_dir = "") {
    return {"--tls-ca", (ca_dir.empty() ? dir : ca_dir) + "/ca.crt", "--tls-cert",
            dir + "/" + name + ".crt", "--tls-key", dir + "/" + name + ".key"};
  }

  void StartAgent() {
    std::filesystem::create_directories(dir_ + "/h1/sim");
    std::vector<std::string> argv = {Binaries::Agent(), "--listen", "127.0.0.1:0", "--port-file",
                                     dir_ + "/h1/port", "--backend", "sim", "--sim-dir",
                                     dir_ + "/h1/sim", "--sim-device", "vda=8MiB", "--hostname",
                                     "h1", "--allowed-server", "srv"};
    for (const std::string& f : TlsFlags(pki_, "h1")) argv.push_back(f);
    ASSERT_TRUE(agent_.Start(argv, dir_ + "/h1/log").ok());
    auto port = agent_.WaitForAddress(dir_ + "/h1/port", absl::Seconds(30));
    ASSERT_TRUE(port.ok()) << port.status() << agent_.LogTail();
    agent_address_ = absl::StrContains(*port, ':') ? *port : "127.0.0.1:" + *port;
  }

  void StartServer() {
    std::filesystem::create_directories(dir_ + "/server/data");
    std::vector<std::string> argv = {Binaries::Server(), "--listen", "127.0.0.1:0",
                                     "--port-file", dir_ + "/server/port", "--data-dir",
                                     dir_ + "/server/data", "--metrics-listen", "127.0.0.1:0",
                                     "--metrics-port-file", dir_ + "/server/metrics-port"};
    for (const std::string& f : TlsFlags(pki_, "srv")) argv.push_back(f);
    ASSERT_TRUE(server_.Start(argv, dir_ + "/server/log").ok());
    auto port = server_.WaitForAddress(dir_ + "/server/port", absl::Seconds(30));
    ASSERT_TRUE(port.ok()) << port.status() << server_.LogTail();
    server_address_ = absl::StrContains(*port, ':') ? *port : "127.0.0.1:" + *port;
    auto mport = server_.WaitForAddress(dir_ + "/server/metrics-port", absl::Seconds(30));
    ASSERT_TRUE(mport.ok()) << mport.status() << server_.LogTail();
    server_metrics_ = "127.0.0.1:" + *mport;
  }

  // The CLI as `who` (a certificate of dir, default the main PKI).
  CommandResult Cli(const std::string& who, std::vector<std::string> args,
                    const std::string& dir = "") {
    std::vector<std::string> argv = {Binaries::Cli(), "--server", server_address_};
    for (const std::string& f : TlsFlags(dir.empty() ? pki_ : dir, who, pki_)) argv.push_back(f);
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  // A gRPC channel presenting `cert_dir`/`who` (none when empty), trusting
  // the main CA.
  std::shared_ptr<grpc::Channel> Channel(const std::string& address, const std::string& who,
                                         const std::string& cert_dir = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Slurp(pki_ + "/ca.crt");
    if (!who.empty()) {
      const std::string d = cert_dir.empty() ? pki_ : cert_dir;
      o.pem_cert_chain = Slurp(d + "/" + who + ".crt");
      o.pem_private_key = Slurp(d + "/" + who + ".key");
    }
    return grpc::CreateChannel(address, grpc::SslCredentials(o));
  }

  std::unique_ptr<sv::Server::Stub> ServerAs(const std::string& who,
                                             const std::string& cert_dir = "") {
    return sv::Server::NewStub(Channel(server_address_, who, cert_dir));
  }

  // As admin: the number of hosts and of jobs.
  int Hosts() {
    sv::ListHostsResponse r;
    grpc::Status s = ServerAs("root")->ListHosts(Ctx().get(), sv::ListHostsRequest(), &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r.hosts_size();
  }
  int Jobs() {
    sv::ListJobsResponse r;
    grpc::Status s = ServerAs("root")->ListJobs(Ctx().get(), sv::ListJobsRequest(), &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r.jobs_size();
  }

  grpc::Status AddHost(sv::Server::Stub& stub) {
    sv::CreateHostRequest req;
    req.mutable_host()->set_name("h1");
    req.mutable_host()->set_agent_address(agent_address_);
    req.mutable_host()->add_default_devices("vda");
    sv::Host h;
    return stub.CreateHost(Ctx(10).get(), req, &h);
  }

  void AddHostAsAdmin() {
    CommandResult add = Cli("root", {"host", "add", "h1", "--agent", agent_address_, "--device",
                                     "vda"});
    ASSERT_EQ(add.exit_code, 0) << add.output;
  }

  std::string dir_, pki_, other_;
  ChildProcess agent_, server_;
  std::string agent_address_, server_address_, server_metrics_;
};

TEST_F(TlsTest, BackupOverMutualTls) {
  // Operators at each level read; the admin adds the host.
  EXPECT_EQ(Cli("viewer", {"host", "list"}).exit_code, 0);
  ASSERT_NO_FATAL_FAILURE(AddHostAsAdmin());
  // The test writes to the sim device as the server would talk to the agent.
  auto workload = agent::simtest::v1::SimWorkload::NewStub(Channel(agent_address_, "srv"));
  ASSERT_TRUE(FillDevice(*workload, "vda", 8 << 20, 7).ok());

  CommandResult run = Cli("ops", {"backup", "run", "h1", "--wait"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "succeeded")) << run.output;

  CommandResult list = Cli("viewer", {"--json", "backup", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_TRUE(absl::StrContains(list.output, "\"host\": \"h1\"")) << list.output;
  // A second backup is an incremental over the same channel.
  CommandResult again = Cli("root", {"backup", "run", "h1", "--wait"});
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(Jobs(), 2);
}

TEST_F(TlsTest, NoClientCertificateIsRefused) {
  grpc::Status s = AddHost(*ServerAs(""));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // Plaintext to the TLS port is refused too.
  auto plain = sv::Server::NewStub(
      grpc::CreateChannel(server_address_, grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(AddHost(*plain).ok());
  CommandResult cli = RunCommand({Binaries::Cli(), "--server", server_address_, "--insecure",
                                  "host", "add", "h1", "--agent", agent_address_});
  EXPECT_NE(cli.exit_code, 0) << cli.output;
  EXPECT_EQ(Hosts(), 0);
}

TEST_F(TlsTest, CertificateOfAnotherCaIsRefused) {
  // The server refuses it in the handshake.
  grpc::Status s = AddHost(*ServerAs("root", other_));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // The CLI says so before it even connects.
  CommandResult cli = Cli("root", {"host", "add", "h1", "--agent", agent_address_}, other_);
  EXPECT_EQ(cli.exit_code, 1) << cli.output;
  EXPECT_TRUE(absl::StrContains(cli.output, "is not signed by")) << cli.output;
  EXPECT_EQ(Hosts(), 0);
}

TEST_F(TlsTest, ExpiredCertificateIsRefused) {
  grpc::Status s = AddHost(*ServerAs("old"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  CommandResult cli = Cli("old", {"host", "add", "h1", "--agent", agent_address_});
  EXPECT_EQ(cli.exit_code, 1) << cli.output;
  EXPECT_TRUE(absl::StrContains(cli.output, "has expired")) << cli.output;
  EXPECT_EQ(Hosts(), 0);
}

TEST_F(TlsTest, RolesAreEnforced) {
  CommandResult viewer_add = Cli("viewer", {"host", "add", "h1", "--agent", agent_address_});
  EXPECT_EQ(viewer_add.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(viewer_add.output, "permission denied")) << viewer_add.output;
  EXPECT_TRUE(absl::StrContains(viewer_add.output, "operator 'viewer' (role read-only)"))
      << viewer_add.output;
  EXPECT_TRUE(absl::StrContains(viewer_add.output, "needs role admin")) << viewer_add.output;
  CommandResult ops_add = Cli("ops", {"host", "add", "h1", "--agent", agent_address_});
  EXPECT_EQ(ops_add.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ops_add.output, "operator 'ops' (role operator)"))
      << ops_add.output;
  EXPECT_EQ(Hosts(), 0);

  ASSERT_NO_FATAL_FAILURE(AddHostAsAdmin());
  CommandResult viewer_run = Cli("viewer", {"backup", "run", "h1", "--wait"});
  EXPECT_EQ(viewer_run.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(viewer_run.output, "needs role operator or higher"))
      << viewer_run.output;
  CommandResult ops_gc = Cli("ops", {"gc"});
  EXPECT_EQ(ops_gc.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ops_gc.output, "needs role admin")) << ops_gc.output;
  CommandResult ops_delete_job = Cli("viewer", {"job", "cancel", "1"});
  EXPECT_EQ(ops_delete_job.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ops_delete_job.output, "permission denied"))
      << ops_delete_job.output;
  EXPECT_EQ(Jobs(), 0);
  EXPECT_EQ(Cli("viewer", {"job", "list"}).exit_code, 0);
}

TEST_F(TlsTest, ServerAndAgentIdentitiesCannotUseTheOperatorApi) {
  // The server's own certificate is valid and trusted, but not an operator.
  grpc::Status s = AddHost(*ServerAs("srv"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "server 'srv'")) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "only operator certificates"))
      << s.error_message();
  // An agent certificate is not even a client certificate (serverAuth only).
  s = AddHost(*ServerAs("h1"));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.error_code() == grpc::StatusCode::UNAVAILABLE ||
              s.error_code() == grpc::StatusCode::PERMISSION_DENIED)
      << s.error_code() << " " << s.error_message();
  EXPECT_EQ(Hosts(), 0);
}

TEST_F(TlsTest, RefusalsAreCountedByMethodCodeAndIdentityKind) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(AddHost(*ServerAs("viewer")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(AddHost(*ServerAs("srv")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // A made-up method name is refused too (admin only) and counted as unknown.
  grpc::GenericStub raw(Channel(server_address_, "viewer"));
  {
    grpc::CompletionQueue cq;
    auto ctx = Ctx();
    grpc::ByteBuffer req, resp;
    grpc::Status st;
    auto call = raw.PrepareUnaryCall(ctx.get(), "/blkfleet.server.v1.Server/NoSuchThing", req, &cq);
    call->StartCall();
    call->Finish(&resp, &st, nullptr);
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  auto text = Scrape(server_metrics_);
  ASSERT_TRUE(text.ok()) << text.status();
  const auto samples = Samples(*text);
  auto value = [&](const std::string& key) {
    auto it = samples.find(key);
    return it == samples.end() ? -1.0 : it->second;
  };
  const std::string refused = "blkfleet_server_grpc_server_refused_total";
  EXPECT_EQ(value(refused + "{code=\"PERMISSION_DENIED\",identity_kind=\"operator\","
                            "method=\"CreateHost\"}"),
            3) << *text;
  EXPECT_EQ(value(refused + "{code=\"PERMISSION_DENIED\",identity_kind=\"server\","
                            "method=\"CreateHost\"}"),
            1) << *text;
  EXPECT_EQ(value(refused + "{code=\"PERMISSION_DENIED\",identity_kind=\"operator\","
                            "method=\"unknown\"}"),
            1) << *text;
  EXPECT_FALSE(absl::StrContains(*text, "NoSuchThing"));
}

TEST_F(TlsTest, ReadOnlyCertificateCannotSendHugeIds) {
  // The probe's repro: 40 MiB ids from a read-only certificate. The
  // operator API refuses them before decoding; a 1 MiB one is refused as
  // invalid, with the id cut short in the message.
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = Slurp(pki_ + "/ca.crt");
  o.pem_cert_chain = Slurp(pki_ + "/viewer.crt");
  o.pem_private_key = Slurp(pki_ + "/viewer.key");
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  auto stub = sv::Server::NewStub(grpc::CreateCustomChannel(server_address_, grpc::SslCredentials(o), args));
  sv::GetBackupRequest req;
  req.set_id(std::string(40 << 20, '1'));
  sv::Backup b;
  grpc::Status s = stub->GetBackup(Ctx().get(), req, &b);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  req.set_id(std::string(1 << 20, '1'));
  s = stub->GetBackup(Ctx().get(), req, &b);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_code();
  EXPECT_LT(s.error_message().size(), 200u);
}

TEST_F(TlsTest, AgentAcceptsOnlyItsServers) {
  av::CreateSnapshotRequest req;
  req.add_devices("vda");
  req.set_lease_ms(60000);
  for (const std::string& who : {"root", "rogue"}) {
    auto agent = av::Agent::NewStub(Channel(agent_address_, who));
    av::Snapshot snap;
    grpc::Status s = agent->CreateSnapshot(Ctx(10).get(), req, &snap);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << who << ": "
                                                                   << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), who)) << s.error_message();
  }
  {
    auto anonymous = av::Agent::NewStub(Channel(agent_address_, ""));
    av::Snapshot snap;
    EXPECT_EQ(anonymous->CreateSnapshot(Ctx(10).get(), req, &snap).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  // The allowed server sees no snapshot was made.
  auto srv = av::Agent::NewStub(Channel(agent_address_, "srv"));
  av::ListSnapshotsResponse list;
  grpc::Status s = srv->ListSnapshots(Ctx(10).get(), av::ListSnapshotsRequest(), &list);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(list.snapshots_size(), 0);
}

TEST_F(TlsTest, BadTlsFilesStopTheDaemonsAtStart) {
  auto start = [&](std::vector<std::string> argv, const std::string& log) {
    ChildProcess p;
    EXPECT_TRUE(p.Start(argv, log).ok());
    absl::StatusOr<int> rc = p.Wait(absl::Seconds(30));
    EXPECT_TRUE(rc.ok()) << rc.status();
    return std::make_pair(rc.value_or(-1), Slurp(log));
  };
  const std::string data = dir_ + "/bad-data";
  auto [rc1, log1] = start({Binaries::Server(), "--listen", "127.0.0.1:0", "--data-dir", data,
                            "--tls-ca", pki_ + "/ca.crt", "--tls-cert", pki_ + "/missing.crt",
                            "--tls-key", pki_ + "/srv.key"},
                           dir_ + "/bad1.log");
  EXPECT_NE(rc1, 0);
  EXPECT_TRUE(absl::StrContains(log1, "--tls-cert " + pki_ + "/missing.crt")) << log1;
  auto [rc2, log2] = start({Binaries::Server(), "--listen", "127.0.0.1:0", "--data-dir", data},
                           dir_ + "/bad2.log");
  EXPECT_NE(rc2, 0);
  EXPECT_TRUE(absl::StrContains(log2, "--insecure")) << log2;
  std::vector<std::string> with_agent_cert = {Binaries::Server(), "--listen", "127.0.0.1:0",
                                              "--data-dir", data};
  for (const std::string& f : TlsFlags(pki_, "h1")) with_agent_cert.push_back(f);
  auto [rc3, log3] = start(with_agent_cert, dir_ + "/bad3.log");
  EXPECT_NE(rc3, 0);
  EXPECT_TRUE(absl::StrContains(log3, "--kind server")) << log3;
  EXPECT_FALSE(std::filesystem::exists(data)) << "the server made its data folder anyway";

  std::vector<std::string> agent = {Binaries::Agent(), "--listen", "127.0.0.1:0", "--backend",
                                    "sim", "--sim-dir", dir_ + "/bad-sim"};
  for (const std::string& f : TlsFlags(pki_, "h1")) agent.push_back(f);
  auto [rc4, log4] = start(agent, dir_ + "/bad4.log");
  EXPECT_NE(rc4, 0);
  EXPECT_TRUE(absl::StrContains(log4, "--allowed-server")) << log4;
  // An unreadable key (a folder here: root reads any file).
  agent = {Binaries::Agent(), "--listen", "127.0.0.1:0", "--backend", "sim", "--sim-dir",
           dir_ + "/bad-sim", "--allowed-server", "srv", "--tls-ca", pki_ + "/ca.crt",
           "--tls-cert", pki_ + "/h1.crt", "--tls-key", pki_};
  auto [rc5, log5] = start(agent, dir_ + "/bad5.log");
  EXPECT_NE(rc5, 0);
  EXPECT_TRUE(absl::StrContains(log5, "--tls-key " + pki_ + ": cannot read")) << log5;
}

}  // namespace
}  // namespace blkfleet::testing
