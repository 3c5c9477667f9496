// SPDX-License-Identifier: Apache-2.0
// The operator CLI against real daemons: tables for people, JSON for scripts,
// non-zero exits with the server's message on errors.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

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

TEST_F(CliTest, PruneListsKeptAndRemovedBackupsAndBackupShowGivesOneInFull) {
  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 16 << 20, 9).ok());
  ASSERT_EQ(Cli({"host", "add", "h1", "--agent", agent_.address, "--device", "vda"}).exit_code, 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    CommandResult run = Cli({"backup", "run", "h1", "--wait"}, /*json=*/true);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    nlohmann::json j = nlohmann::json::parse(run.output, nullptr, false);
    ASSERT_TRUE(j.is_object()) << run.output;
    ids.push_back(j.value("backup_id", ""));
  }
  // Not yet: no policies.
  CommandResult none = Cli({"prune"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("no policies applied"), std::string::npos) << none.output;

  const std::string policy = dir_ + "/policy.yaml";
  {
    std::ofstream f(policy);
    f << "version: 1\nhost_groups:\n  g: {hosts: [h1]}\ndevice_sets:\n  d: {devices: [vda]}\n"
         "policies:\n  - name: keep1\n    host_group: g\n    device_set: d\n"
         "    schedule: {cron: \"0 0 1 1 *\"}\n    retention: {keep_last: 1}\n";
  }
  CommandResult applied = Cli({"policy", "apply", policy});
  ASSERT_EQ(applied.exit_code, 0) << applied.output;
  ASSERT_EQ(Cli({"backup", "protect", ids[0]}).exit_code, 0);

  CommandResult dry = Cli({"prune", "--host", "h1", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("would remove 1 of 3 backups"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("DECISION"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("last 1"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("protected"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("would remove"), std::string::npos) << dry.output;

  CommandResult pruned = Cli({"prune"}, /*json=*/true);
  ASSERT_EQ(pruned.exit_code, 0) << pruned.output;
  nlohmann::json pj = nlohmann::json::parse(pruned.output, nullptr, false);
  ASSERT_TRUE(pj.is_object()) << pruned.output;
  EXPECT_EQ(pj.value("kind", ""), "JOB_KIND_PRUNE");
  std::map<std::string, bool> removed;
  for (const auto& d : pj["prune_result"]["decisions"]) {
    removed[d.value("backup_id", "")] = d.value("removed", false);
  }
  EXPECT_EQ(removed, (std::map<std::string, bool>{{ids[0], false}, {ids[1], true}, {ids[2], false}}))
      << pruned.output;

  CommandResult list = Cli({"backup", "list"}, /*json=*/true);
  ASSERT_EQ(list.exit_code, 0);
  nlohmann::json lj = nlohmann::json::parse(list.output, nullptr, false);
  ASSERT_EQ(lj["backups"].size(), 2u) << list.output;

  CommandResult show = Cli({"backup", "show", ids[2]});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("host:      h1"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("vda"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("incremental"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find(ids[1]), std::string::npos) << "base backup: " << show.output;
  CommandResult showj = Cli({"backup", "show", ids[0]}, /*json=*/true);
  ASSERT_EQ(showj.exit_code, 0) << showj.output;
  nlohmann::json sj = nlohmann::json::parse(showj.output, nullptr, false);
  EXPECT_EQ(sj.value("id", ""), ids[0]);
  EXPECT_TRUE(sj.value("protected", false)) << showj.output;
  CommandResult gone = Cli({"backup", "show", ids[1]});
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.output.find("not found"), std::string::npos) << gone.output;
}

}  // namespace
}  // namespace blkfleet::testing
