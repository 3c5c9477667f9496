// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_CLIENT_PKI_H_
#define BLKFLEET_CLIENT_PKI_H_

// `blkfleet pki`: a small private CA for blkfleet's mutual TLS
// (docs/security.md). EC P-256 keys, SHA-256 signatures, made with
// OpenSSL's C API. Files of a PKI folder D:
//   D/ca.crt, D/ca.key          the CA (init)
//   D/NAME.crt, D/NAME.key      one identity per issue
// Keys are written mode 0600; no existing file is ever replaced.

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace CLI {
class App;
}

namespace blkfleet::pki {

struct InitRequest {
  std::string dir;
  int days = 3650;
};

struct IssueRequest {
  std::string dir;
  std::string kind;  // server, agent, operator
  std::string name;  // subject CN, file names, and a DNS/IP SAN for server and agent
  std::string role;  // operators: admin, operator, read-only (default read-only)
  int days = 365;
  std::vector<std::string> sans;  // more DNS names or IP addresses (server and agent)
  // Tests only (hidden option): the validity window starts this many days
  // in the past, so `--days 1 --backdate-days 2` gives an expired
  // certificate.
  int backdate_days = 0;
};

// Each returns a line for the operator, or an error with nothing written.
absl::StatusOr<std::string> InitCa(const InitRequest& req);
absl::StatusOr<std::string> Issue(const IssueRequest& req);

// Adds `pki init` and `pki issue` to the CLI; they set *rc when run.
void AddPkiCommands(CLI::App& app, std::ostream& out, std::ostream& err, int* rc);

}  // namespace blkfleet::pki

#endif  // BLKFLEET_CLIENT_PKI_H_
