// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_VALIDATION_H_
#define BLKFLEET_SERVER_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/catalog/catalog.h"

namespace blkfleet::server {

// INVALID_ARGUMENT naming `field` unless `name` is 1..253 characters of
// letters, digits, '.', '-', '_'.
absl::Status ValidateHostName(const std::string& name, const std::string& field);

// INVALID_ARGUMENT naming `field` unless `address` is host:port (host a name,
// an IPv4 address or a bracketed IPv6 address; port 1..65535).
absl::Status ValidateAgentAddress(const std::string& address, const std::string& field);

// INVALID_ARGUMENT naming `field` unless `id` is a positive decimal number.
absl::Status ValidateId(const std::string& id, const std::string& field);

// page_size 0..1000 (0: 100) and a page_token from a previous answer (empty:
// first page).
absl::StatusOr<catalog::PageRequest> ParsePage(int32_t page_size, const std::string& page_token);
// The token of the page after `page` when it came back full, else empty.
std::string NextPageToken(const catalog::PageRequest& page, size_t returned);

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_VALIDATION_H_
