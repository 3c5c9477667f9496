// SPDX-License-Identifier: Apache-2.0
#include "common/metrics_grpc.h"

#include <google/protobuf/descriptor.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/metrics.h"

namespace blkfleet::metrics {
namespace {

constexpr char kUnknown[] = "unknown";

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(const std::string& prefix, const char* method)
      : prefix_(prefix), method_(MethodLabel(method == nullptr ? "" : method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      got_request_ = true;
    }
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status st = methods->GetSendStatus();
      // gRPC answers a request it cannot parse with INTERNAL and no message,
      // before any handler runs; our handlers always say what went wrong.
      // The caller sent bad bytes, so say so (and count it as such).
      if (st.error_code() == grpc::StatusCode::INTERNAL && st.error_message().empty() &&
          !got_request_) {
        st = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("request to ", method_,
                                       " is not a valid protobuf message of its type"));
        methods->ModifySendStatus(st);
      }
      GetCounter(prefix_ + "_grpc_server_handled_total",
                 "RPCs answered, by method and gRPC status code (errors: code != \"OK\")",
                 {{"method", method_},
                  {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(st.error_code()))}})
          .Increment();
    }
    methods->Proceed();
  }

 private:
  const std::string& prefix_;
  const std::string method_;
  bool got_request_ = false;
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

std::string MethodLabel(absl::string_view path) {
  // "/pkg.Service/Method"
  if (path.size() < 4 || path[0] != '/') return kUnknown;
  const size_t slash = path.rfind('/');
  if (slash == 0) return kUnknown;
  const absl::string_view service = path.substr(1, slash - 1);
  const absl::string_view method = path.substr(slash + 1);
  // The default health service is not built from a generated descriptor.
  if (service == "grpc.health.v1.Health" && (method == "Check" || method == "Watch")) {
    return std::string(method);
  }
  const google::protobuf::ServiceDescriptor* sd =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(std::string(service));
  if (sd == nullptr || sd->FindMethodByName(std::string(method)) == nullptr) return kUnknown;
  return std::string(method);
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RpcMetricsInterceptors(const std::string& prefix) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> v;
  v.push_back(std::make_unique<Factory>(prefix));
  return v;
}

}  // namespace blkfleet::metrics
