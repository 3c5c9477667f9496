// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_INTEGRATION_FLEET_H_
#define BLKFLEET_TESTS_INTEGRATION_FLEET_H_

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/sim_workload.grpc.pb.h"
#include "blkfleet/agent/v1/agent.grpc.pb.h"
#include "blkfleet/server/v1/server.grpc.pb.h"
#include "tests/integration/child_process.h"

namespace blkfleet::testing {

// Paths of the binaries under test, compiled in by CMake.
struct Binaries {
  static std::string Agent();
  static std::string Server();
  static std::string Cli();
};

// A sim-backed agent process with its SimWorkload service.
struct SimAgent {
  std::string name;
  std::string dir;
  std::vector<std::string> devices;  // "vda=64MiB" specs
  std::vector<std::string> extra_args;  // more agent flags
  ChildProcess process;
  std::string address;
  std::unique_ptr<agent::v1::Agent::Stub> agent;
  std::unique_ptr<agent::simtest::v1::SimWorkload::Stub> workload;
  bool metrics = false;  // serve /metrics on a free port, found in metrics_address
  std::string metrics_address;

  // Starts (or restarts) the agent on a fresh port, or on `listen` when
  // given ("127.0.0.1:PORT"); the sim dir (device contents) survives restarts.
  absl::Status Start(const std::string& listen = "127.0.0.1:0");
  std::string OracleImage(const std::string& snapshot_id, const std::string& device) const;
};

// A server process with its data directory.
struct ServerProcess {
  std::string dir;
  ChildProcess process;
  std::string address;
  std::unique_ptr<server::v1::Server::Stub> stub;
  std::vector<std::string> extra_args;  // appended to the server's flags
  bool metrics = false;  // serve /metrics on a free port, found in metrics_address
  std::string metrics_address;
  absl::Status Start();
};

// Creates a fresh temporary directory under $TMPDIR; removed by the caller.
std::string MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& path);

// A client context with a deadline.
std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30);

// Applies the policy document `yaml` (ApplyPolicies); the error names the RPC.
absl::Status ApplyPolicies(server::v1::Server::Stub& s, const std::string& yaml);

// Starts a backup of `host` and follows it to its end.
absl::StatusOr<server::v1::Job> RunBackupAndWait(server::v1::Server::Stub& s,
                                                 const std::string& host,
                                                 const std::vector<std::string>& devices,
                                                 int timeout_s = 300);
// Restores one device of a backup to `path` and follows the job.
absl::StatusOr<server::v1::Job> RestoreAndWait(server::v1::Server::Stub& s,
                                               const std::string& backup_id,
                                               const std::string& device, const std::string& path,
                                               int timeout_s = 300);
// Follows a job until it ends.
absl::StatusOr<server::v1::Job> WaitJob(server::v1::Server::Stub& s, const std::string& id,
                                        int timeout_s);

// Fills a whole sim device with pseudo-random data.
absl::Status FillDevice(agent::simtest::v1::SimWorkload::Stub& w, const std::string& device,
                        uint64_t size, uint64_t seed);

// GET http://ADDRESS/metrics; the body, or an error.
absl::StatusOr<std::string> Scrape(const std::string& address);
// Sample lines "name{labels} value" -> value, keyed by "name{labels}" as
// printed.
std::map<std::string, double> Samples(const std::string& text);

// SHA-256 hex of a file.
std::string FileSha256(const std::string& path);

// A fixture with one sim agent ("h1") and one server in a fresh directory;
// TearDown stops both and shows their logs when the test failed.
class FleetTest : public ::testing::Test {
 protected:
  // Starts the agent with `devices` ("vda=64MiB" specs) and the server.
  void StartFleet(const std::vector<std::string>& devices);
  // (Re-)registers h1 at the agent's current address.
  void RegisterHost(const std::vector<std::string>& default_devices);
  void TearDown() override;

  std::string dir_;
  SimAgent agent_;
  ServerProcess server_;
};

}  // namespace blkfleet::testing

#endif  // BLKFLEET_TESTS_INTEGRATION_FLEET_H_
