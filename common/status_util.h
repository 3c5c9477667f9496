// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_STATUS_UTIL_H_
#define BLKFLEET_COMMON_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace blkfleet {

// The two status types share the canonical code space; these keep the code
// and the message across the RPC boundary.
grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);

}  // namespace blkfleet

// Returns from the enclosing function when `expr` (an absl::Status) fails.
#define BLKFLEET_RETURN_IF_ERROR(expr)          \
  do {                                          \
    ::absl::Status blkfleet_status_ = (expr);   \
    if (!blkfleet_status_.ok()) return blkfleet_status_; \
  } while (0)

#define BLKFLEET_CONCAT_INNER_(a, b) a##b
#define BLKFLEET_CONCAT_(a, b) BLKFLEET_CONCAT_INNER_(a, b)

// `BLKFLEET_ASSIGN_OR_RETURN(auto x, F());` declares x from an
// absl::StatusOr or returns its error.
#define BLKFLEET_ASSIGN_OR_RETURN(lhs, rexpr) \
  BLKFLEET_ASSIGN_OR_RETURN_IMPL_(BLKFLEET_CONCAT_(blkfleet_statusor_, __LINE__), lhs, rexpr)
#define BLKFLEET_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

#endif  // BLKFLEET_COMMON_STATUS_UTIL_H_
