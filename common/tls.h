// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_TLS_H_
#define BLKFLEET_COMMON_TLS_H_

// TLS material and identities of blkfleet's private PKI (docs/security.md).
//
// Every certificate `blkfleet pki issue` makes names its holder in three
// places: subject CN=<name>, subject OU=<kind>, and a SAN URI
// "blkfleet:kind:<kind>"; operator certificates also carry the SAN URI
// "blkfleet:role:<role>". Peers are identified from the SAN URIs (kind,
// role) and the CN (name) of the verified certificate.

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace blkfleet::tls {

enum class Kind { kUnknown, kServer, kAgent, kOperator };
enum class Role { kNone, kReadOnly, kOperator, kAdmin };

absl::string_view KindName(Kind k);           // "server", "agent", "operator", "unknown"
absl::string_view RoleName(Role r);           // "read-only", "operator", "admin", "none"
std::optional<Kind> ParseKind(absl::string_view s);
std::optional<Role> ParseRole(absl::string_view s);  // only the three real roles

inline constexpr char kKindUriPrefix[] = "blkfleet:kind:";
inline constexpr char kRoleUriPrefix[] = "blkfleet:role:";

// Who a certificate says its holder is.
struct Identity {
  std::string name;  // subject CN
  Kind kind = Kind::kUnknown;
  Role role = Role::kNone;  // operators only
  // "operator 'alice' (role admin)", "agent 'h1'", "unknown certificate 'x'".
  std::string Describe() const;
};

// Reads the identity out of a PEM certificate. A certificate without the
// blkfleet URIs gives kind kUnknown (not an error); unparsable PEM is one.
absl::StatusOr<Identity> IdentityFromPem(absl::string_view cert_pem);

// The verified peer of a TLS call (from the x509_pem_cert property gRPC puts
// in the auth context). Error when the call carried no client certificate.
absl::StatusOr<Identity> PeerIdentity(const grpc::AuthContext& context);

// Paths of one party's TLS files, as given on its command line.
struct TlsFiles {
  std::string ca;    // the CA certificate peers must chain to
  std::string cert;  // this party's certificate
  std::string key;   // this party's private key
};

// The PEM contents of TlsFiles, checked: every file readable and PEM, the
// key matching the certificate, the certificate signed by the CA and within
// its validity window. Errors name the flag (`flag_prefix` + "ca" etc.) and
// the path, e.g. "--tls-cert /x/y.crt: No such file or directory".
struct TlsMaterial {
  std::string ca_pem, cert_pem, key_pem;
  Identity identity;  // of cert_pem
};
absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files,
                                            absl::string_view flag_prefix = "--tls-");

// Server credentials that require and verify a client certificate signed by
// the CA; `processor` (may be null) then decides per call.
std::shared_ptr<grpc::ServerCredentials> MutualTlsServerCredentials(
    const TlsMaterial& m, std::shared_ptr<grpc::AuthMetadataProcessor> processor);

// Channel credentials presenting this party's certificate and verifying the
// peer's against the CA and the target host name (DNS or IP SAN).
std::shared_ptr<grpc::ChannelCredentials> MutualTlsChannelCredentials(const TlsMaterial& m);

// The method of a call as seen by an AuthMetadataProcessor
// ("/pkg.Service/Method"), empty when absent.
std::string CallPath(const grpc::AuthMetadataProcessor::InputMetadata& md);

// For the agent: admits only calls from certificates of kind server whose
// name is in `allowed_servers`; refuses the rest with PERMISSION_DENIED
// naming the peer.
class AllowedServersProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit AllowedServersProcessor(std::vector<std::string> allowed_servers,
                                   std::string component = "blkfleet-agent");
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;
  // The decision alone, for tests.
  grpc::Status Check(const absl::StatusOr<Identity>& peer, absl::string_view path) const;

 private:
  const std::vector<std::string> allowed_;
  const std::string component_;
};

}  // namespace blkfleet::tls

#endif  // BLKFLEET_COMMON_TLS_H_
