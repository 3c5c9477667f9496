// SPDX-License-Identifier: Apache-2.0
#include "server/agent_client.h"

namespace blkfleet::server {

std::shared_ptr<agent::v1::Agent::StubInterface> AgentConnector::Stub(const std::string& address) {
  absl::MutexLock l(&mu_);
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect quickly after an agent restart: a resumed stream waits on it.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto channel = grpc::CreateCustomChannel(address, credentials_, args);
  std::shared_ptr<agent::v1::Agent::StubInterface> stub = agent::v1::Agent::NewStub(channel);
  stubs_[address] = stub;
  return stub;
}

}  // namespace blkfleet::server
