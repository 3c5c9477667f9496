// SPDX-License-Identifier: Apache-2.0
#include "common/metrics_grpc.h"

#include "absl/status/status.h"
#include "common/metrics.h"

namespace blkfleet::metrics {
namespace {

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(const std::string& prefix, const char* method)
      : prefix_(prefix), method_(method == nullptr ? "" : method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status st = methods->GetSendStatus();
      // "/blkfleet.agent.v1.Agent/StreamImage" -> "StreamImage": the service
      // is known from the daemon.
      const size_t slash = method_.rfind('/');
      const std::string method = slash == std::string::npos ? method_ : method_.substr(slash + 1);
      GetCounter(prefix_ + "_grpc_server_handled_total",
                 "RPCs answered, by method and gRPC status code (errors: code != \"OK\")",
                 {{"method", method},
                  {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(st.error_code()))}})
          .Increment();
    }
    methods->Proceed();
  }

 private:
  const std::string& prefix_;
  const std::string method_;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(std::string prefix) : prefix_(std::move(prefix)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(prefix_, info->method());
  }

 private:
  const std::string prefix_;
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RpcMetricsInterceptors(const std::string& prefix) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> v;
  v.push_back(std::make_unique<Factory>(prefix));
  return v;
}

}  // namespace blkfleet::metrics
