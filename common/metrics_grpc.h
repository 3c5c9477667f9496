// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_METRICS_GRPC_H_
#define BLKFLEET_COMMON_METRICS_GRPC_H_

// Counts every RPC a gRPC server answers, by method and status code:
// `<prefix>_grpc_server_handled_total{method="StreamImage",code="NOT_FOUND"}`.
// Errors by kind are the series with code != "OK".

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>
#include <vector>

namespace blkfleet::metrics {

// For grpc::ServerBuilder::experimental().SetInterceptorCreators().
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RpcMetricsInterceptors(const std::string& prefix);

}  // namespace blkfleet::metrics

#endif  // BLKFLEET_COMMON_METRICS_GRPC_H_
