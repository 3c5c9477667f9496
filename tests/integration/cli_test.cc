// The operator CLI against real daemons: tables for people, JSON for scripts,
// non-zero exits with the server's message on errors.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "tests/integration/fleet.h"

namespace blkfleet::testing {
namespace {

class CliTest : public FleetTest {
 protected:
  void SetUp() override { StartFleet({"vda=16MiB"}); }

  CommandResult Cli(std::vector<std::string> args, bool json = false) {
    std::vector<std::string> argv = {Binaries::Cli(), "--server", server_.address, "--insecure"};
    if (json) argv.push_back("--json");
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, /*merge_stderr=*/!json);
  }
};

TEST_F(CliTest, HostBackupRestoreRoundTrip) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 16 << 20, 7).ok());
  CommandResult add = Cli({"host", "add", "h1", "--agent", agent_.address, "--device", "vda"});
  ASSERT_EQ(add.exit_code, 0) << add.output;

  CommandResult hosts = Cli({"host", "list"}, /*json=*/true);
  ASSERT_EQ(hosts.exit_code, 0) << hosts.output;
  nlohmann::json hj = nlohmann::json::parse(hosts.output, nullptr, false);
  ASSERT_FALSE(hj.is_discarded()) << "host list --json is not JSON: " << hosts.output;
  EXPECT_NE(hosts.output.find("\"h1\""), std::string::npos) << hosts.output;

  CommandResult table = Cli({"host", "list"});
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("h1"), std::string::npos);
  EXPECT_NE(table.output.find(agent_.address), std::string::npos);

  CommandResult run = Cli({"backup", "run", "h1", "--wait"});
  ASSERT_EQ(run.exit_code, 0) << run.output;

  CommandResult list = Cli({"backup", "list"}, /*json=*/true);
  ASSERT_EQ(list.exit_code, 0) << list.output;
  nlohmann::json lj = nlohmann::json::parse(list.output, nullptr, false);
  ASSERT_FALSE(lj.is_discarded()) << "backup list --json is not JSON: " << list.output;
  // Find the backup id and snapshot id wherever the list puts them.
  const nlohmann::json& arr = lj.is_array() ? lj : lj.value("backups", nlohmann::json::array());
  ASSERT_EQ(arr.size(), 1u) << list.output;
  std::string id = arr[0].value("id", "");
  std::string snap = arr[0].value("snapshot_id", arr[0].value("snapshotId", ""));
  ASSERT_FALSE(id.empty()) << list.output;
  ASSERT_FALSE(snap.empty()) << list.output;

  std::string out = dir_ + "/restored.img";
  CommandResult restore = Cli({"restore", id, "--to", out, "--wait"});
  ASSERT_EQ(restore.exit_code, 0) << restore.output;
  EXPECT_EQ(FileSha256(out), FileSha256(agent_.OracleImage(snap, "vda")));

  // The target exists now: without --overwrite the restore is refused.
  CommandResult again = Cli({"restore", id, "--to", out, "--wait"});
  EXPECT_NE(again.exit_code, 0) << again.output;
}

TEST_F(CliTest, ErrorsExitNonZeroWithTheServersMessage) {
  CommandResult run = Cli({"backup", "run", "no-such-host", "--wait"});
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("no-such-host"), std::string::npos) << run.output;

  CommandResult dead =
      RunCommand({Binaries::Cli(), "--server", "127.0.0.1:1", "--insecure", "host", "list"});
  EXPECT_NE(dead.exit_code, 0) << dead.output;
  EXPECT_FALSE(dead.output.empty());
}

}  // namespace
}  // namespace blkfleet::testing
