// SPDX-License-Identifier: Apache-2.0
// Who may call which server method (server/authz) and who may call an
// agent (tls::AllowedServersProcessor).
#include <gtest/gtest.h>

#include "server/authz.h"

namespace blkfleet::server {
namespace {

using tls::Identity;
using tls::Kind;
using tls::Role;

Identity Op(Role r) { return Identity{"alice", Kind::kOperator, r}; }
std::string Path(const std::string& m) { return "/blkfleet.server.v1.Server/" + m; }

TEST(AuthzTest, RolesOfMethods) {
  for (const char* m : {"ListHosts", "GetHost", "ListBackups", "GetBackup", "ListPolicies",
                        "ListJobs", "GetJob", "WatchJob"}) {
    EXPECT_EQ(RequiredRole(Path(m)), Role::kReadOnly) << m;
  }
  for (const char* m : {"RunBackup", "Restore", "VerifyBackup", "CancelJob"}) {
    EXPECT_EQ(RequiredRole(Path(m)), Role::kOperator) << m;
  }
  for (const char* m : {"CreateHost", "DeleteHost", "ProtectBackup", "Prune", "CollectGarbage",
                        "ApplyPolicies", "SomeMethodAddedLater"}) {
    EXPECT_EQ(RequiredRole(Path(m)), Role::kAdmin) << m;
  }
  EXPECT_EQ(RequiredRole("/blkfleet.agent.v1.Agent/ListDevices"), Role::kAdmin);
  EXPECT_EQ(RequiredRole(""), Role::kAdmin);
  EXPECT_EQ(RequiredRole("/grpc.health.v1.Health/Check"), Role::kReadOnly);
  EXPECT_EQ(RequiredRole("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Role::kReadOnly);
}

TEST(AuthzTest, HigherRolesIncludeLowerOnes) {
  EXPECT_TRUE(Authorize(Op(Role::kReadOnly), Path("ListJobs")).ok());
  EXPECT_FALSE(Authorize(Op(Role::kReadOnly), Path("RunBackup")).ok());
  EXPECT_TRUE(Authorize(Op(Role::kOperator), Path("RunBackup")).ok());
  EXPECT_TRUE(Authorize(Op(Role::kOperator), Path("GetBackup")).ok());
  EXPECT_FALSE(Authorize(Op(Role::kOperator), Path("CreateHost")).ok());
  EXPECT_TRUE(Authorize(Op(Role::kAdmin), Path("CreateHost")).ok());
  EXPECT_TRUE(Authorize(Op(Role::kAdmin), Path("CollectGarbage")).ok());
  EXPECT_FALSE(Authorize(Op(Role::kNone), Path("ListJobs")).ok());  // operator without role
}

TEST(AuthzTest, RefusalNamesTheIdentityAndTheRole) {
  grpc::Status s = Authorize(Op(Role::kReadOnly), Path("RunBackup"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("operator 'alice' (role read-only)"), std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("RunBackup"), std::string::npos);
  EXPECT_NE(s.error_message().find("needs role operator or higher"), std::string::npos)
      << s.error_message();
  s = Authorize(Op(Role::kOperator), Path("DeleteHost"));
  EXPECT_NE(s.error_message().find("needs role admin"), std::string::npos) << s.error_message();
}

TEST(AuthzTest, OnlyOperatorsMayCallTheServer) {
  for (Kind k : {Kind::kAgent, Kind::kServer, Kind::kUnknown}) {
    grpc::Status s = Authorize(Identity{"x", k, Role::kAdmin}, Path("ListHosts"));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(s.error_message().find("only operator certificates"), std::string::npos);
  }
  grpc::Status s = Authorize(absl::UnauthenticatedError("no certificate"), Path("ListHosts"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(AuthzTest, AgentAdmitsOnlyListedServers) {
  tls::AllowedServersProcessor p({"backup1", "backup2"});
  const std::string path = "/blkfleet.agent.v1.Agent/CreateSnapshot";
  EXPECT_TRUE(p.Check(Identity{"backup2", Kind::kServer}, path).ok());
  grpc::Status s = p.Check(Identity{"rogue", Kind::kServer}, path);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("server 'rogue'"), std::string::npos) << s.error_message();
  s = p.Check(Identity{"backup1", Kind::kOperator, Role::kAdmin}, path);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("operator 'backup1'"), std::string::npos);
  EXPECT_FALSE(p.Check(Identity{"backup1", Kind::kAgent}, path).ok());
  EXPECT_FALSE(p.Check(absl::UnauthenticatedError("none"), path).ok());
}

}  // namespace
}  // namespace blkfleet::server
