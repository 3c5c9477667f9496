// SPDX-License-Identifier: Apache-2.0
#include "server/authz.h"

#include <cstdio>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "common/metrics_grpc.h"

namespace blkfleet::server {
namespace {

using tls::Role;

constexpr char kServerService[] = "/blkfleet.server.v1.Server/";

// Methods below admin. Anything else, including methods added later and
// not listed here, needs admin: fail closed.
const std::map<absl::string_view, Role>& Table() {
  static const auto* table = new std::map<absl::string_view, Role>{
      {"ListHosts", Role::kReadOnly},     {"GetHost", Role::kReadOnly},
      {"ListBackups", Role::kReadOnly},   {"GetBackup", Role::kReadOnly},
      {"ListPolicies", Role::kReadOnly},  {"ListJobs", Role::kReadOnly},
      {"GetJob", Role::kReadOnly},        {"WatchJob", Role::kReadOnly},
      {"RunBackup", Role::kOperator},     {"Restore", Role::kOperator},
      {"VerifyBackup", Role::kOperator},  {"CancelJob", Role::kOperator},
  };
  return *table;
}

int Rank(Role r) {
  switch (r) {
    case Role::kReadOnly: return 1;
    case Role::kOperator: return 2;
    case Role::kAdmin: return 3;
    default: return 0;
  }
}

absl::string_view MethodName(absl::string_view path) {
  size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

Role RequiredRole(absl::string_view path) {
  // Health and reflection (with --grpc-reflection) tell no more than the
  // published protos.
  if (path == "/grpc.health.v1.Health/Check" || path == "/grpc.health.v1.Health/Watch" ||
      path == "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") {
    return Role::kReadOnly;
  }
  if (path.substr(0, sizeof(kServerService) - 1) != kServerService) return Role::kAdmin;
  auto it = Table().find(path.substr(sizeof(kServerService) - 1));
  return it == Table().end() ? Role::kAdmin : it->second;
}

grpc::Status Authorize(const absl::StatusOr<tls::Identity>& peer, absl::string_view path) {
  if (!peer.ok()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("blkfleet-server: ", peer.status().message()));
  }
  const absl::string_view method = path.empty() ? "(unknown method)" : MethodName(path);
  if (peer->kind != tls::Kind::kOperator) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("blkfleet-server: ", peer->Describe(), " may not call ",
                                     method, ": only operator certificates may use the "
                                     "server's API"));
  }
  const Role needed = RequiredRole(path);
  if (Rank(peer->role) >= Rank(needed)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat("blkfleet-server: ", peer->Describe(), " may not call ",
                                   method, ": it needs role ", tls::RoleName(needed),
                                   needed == Role::kAdmin ? "" : " or higher"));
}

metrics::Counter RefusedCounter(const std::string& method, const std::string& code,
                               const std::string& identity_kind) {
  return metrics::GetCounter(
      "blkfleet_server_grpc_server_refused_total",
      "RPCs refused by authorization, by method, gRPC code and the caller's certificate kind",
      {{"method", method}, {"code", code}, {"identity_kind", identity_kind}});
}

grpc::Status ServerAuthzProcessor::Process(const InputMetadata& auth_metadata,
                                           grpc::AuthContext* context, OutputMetadata*,
                                           OutputMetadata*) {
  absl::StatusOr<tls::Identity> peer =
      context ? tls::PeerIdentity(*context) : absl::UnauthenticatedError("no auth context");
  const std::string path = tls::CallPath(auth_metadata);
  grpc::Status s = Authorize(peer, path);
  if (!s.ok()) {
    std::fprintf(stderr, "%s (refused)\n", s.error_message().c_str());
    // A refused call never reaches the RPC interceptor, so it is counted
    // here; the method label is bounded the same way.
    RefusedCounter(metrics::MethodLabel(path),
                   absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())),
                   std::string(peer.ok() ? tls::KindName(peer->kind) : "none"))
        .Increment();
  }
  return s;
}

}  // namespace blkfleet::server
