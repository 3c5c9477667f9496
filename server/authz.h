// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_AUTHZ_H_
#define BLKFLEET_SERVER_AUTHZ_H_

// Who may call what on blkfleet.server.v1.Server (docs/security.md).
//
// Only operator certificates may call the server's API. Each method needs a
// role: read-only (list, get, watch), operator (backups, restores, verify,
// cancel) or admin (everything, including hosts, policies, prune, gc and
// any method not in the table). A higher role includes the lower ones.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "common/tls.h"

namespace blkfleet::server {

// The role a method ("/pkg.Service/Method") needs.
tls::Role RequiredRole(absl::string_view path);

// OK, or PERMISSION_DENIED naming the identity, the method and the role it
// needs (UNAUTHENTICATED when there is no identity at all).
grpc::Status Authorize(const absl::StatusOr<tls::Identity>& peer, absl::string_view path);

// blkfleet_server_grpc_server_refused_total{method,code,identity_kind}.
metrics::Counter RefusedCounter(const std::string& method, const std::string& code,
                                const std::string& identity_kind);

// Applies Authorize to every call of a TLS server.
class ServerAuthzProcessor : public grpc::AuthMetadataProcessor {
 public:
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_AUTHZ_H_
