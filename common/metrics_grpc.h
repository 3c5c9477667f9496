// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_METRICS_GRPC_H_
#define BLKFLEET_COMMON_METRICS_GRPC_H_

// Counts every RPC a gRPC server answers, by method and status code:
// `<prefix>_grpc_server_handled_total{method="StreamImage",code="NOT_FOUND"}`.
// Errors by kind are the series with code != "OK".
//
// The method label comes from a bounded set: methods of services compiled
// into the binary (and the gRPC health service); any other request path is
// counted as method="unknown", so callers cannot add series at will.
//
// The same interceptor turns gRPC's answer to an undecodable request
// (INTERNAL with an empty message) into INVALID_ARGUMENT naming the method.

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace blkfleet::metrics {

// "StreamImage" for "/blkfleet.agent.v1.Agent/StreamImage" when that method
// exists in a service linked into this binary; "unknown" otherwise.
std::string MethodLabel(absl::string_view path);

// For grpc::ServerBuilder::experimental().SetInterceptorCreators().
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RpcMetricsInterceptors(const std::string& prefix);

}  // namespace blkfleet::metrics

#endif  // BLKFLEET_COMMON_METRICS_GRPC_H_
