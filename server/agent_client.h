// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_AGENT_CLIENT_H_
#define BLKFLEET_SERVER_AGENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "blkfleet/agent/v1/agent.grpc.pb.h"

namespace blkfleet::server {

// Largest gRPC message the server accepts from agents and clients: a whole
// chunk of the largest size (64 MiB) plus its framing.
constexpr int kMaxMessageBytes = 64 * 1024 * 1024 + 1024 * 1024;

// Hands out one channel (and stub) per agent address, reused by every job.
// The channels use `credentials`: mutual TLS with the server's certificate
// (tls::MutualTlsChannelCredentials), or plaintext with --insecure.
class AgentConnector {
 public:
  explicit AgentConnector(std::shared_ptr<grpc::ChannelCredentials> credentials =
                              grpc::InsecureChannelCredentials())
      : credentials_(std::move(credentials)) {}
  virtual ~AgentConnector() = default;
  virtual std::shared_ptr<agent::v1::Agent::StubInterface> Stub(const std::string& address);

 private:
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<agent::v1::Agent::StubInterface>> stubs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_AGENT_CLIENT_H_
