// SPDX-License-Identifier: Apache-2.0
// /metrics of both daemons over real processes: the values move with a
// backup, the output passes `promtool check metrics`, and the server brings
// blkfleet_backup_last_success_timestamp_seconds back from its catalog.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/integration/fleet.h"

namespace blkfleet::testing {
namespace {

namespace sv = server::v1;
constexpr uint64_t kMiB = 1ull << 20;

double Value(const std::map<std::string, double>& s, const std::string& key) {
  auto it = s.find(key);
  EXPECT_NE(it, s.end()) << "no sample " << key;
  return it == s.end() ? -1 : it->second;
}

// Runs `promtool check metrics` on `text`; its output and exit status.
std::pair<int, std::string> PromtoolCheck(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/scrape.txt";
  std::ofstream(path) << text;
  FILE* p = ::popen(("promtool check metrics < " + path + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  return {rc, out};
}

// Metric family names from "# TYPE name kind" lines, with the sample names
// of histograms and summaries.
std::set<std::string> FamilyNames(const std::string& text) {
  std::set<std::string> names;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() != 4 || f[0] != "#" || f[1] != "TYPE") continue;
    names.insert(f[2]);
    if (f[3] == "histogram" || f[3] == "summary") {
      for (const char* s : {"_bucket", "_sum", "_count"}) names.insert(f[2] + s);
    }
  }
  return names;
}

// Every blkfleet_* name in `text`.
std::set<std::string> NamesIn(const std::string& text) {
  static const std::regex kName("blkfleet_[a-z0-9_]+");
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kName); it != std::sregex_iterator();
       ++it) {
    out.insert(it->str());
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The "expr" of every panel target of a Grafana dashboard.
void CollectExprs(const nlohmann::json& j, std::vector<std::string>* out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "expr" && it.value().is_string()) {
        out->push_back(it.value().get<std::string>());
      } else {
        CollectExprs(it.value(), out);
      }
    }
  } else if (j.is_array()) {
    for (const auto& e : j) CollectExprs(e, out);
  }
}

constexpr char kOld[] = "6.1.0-28-amd64";
constexpr char kNew[] = "6.12.118+deb12-amd64";

void Touch(const std::string& path) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << "x";
}

class MetricsTest : public FleetTest {
 protected:
  void SetUp() override {
    agent_.metrics = true;
    server_.metrics = true;
    // The agent's installed kernels: 6.1 with the DKMS module, 6.12 (an
    // upgrade whose headers were missing) without.
    modules_ = MakeTempDir("blkfleet-modules");
    ASSERT_FALSE(modules_.empty());
    Touch(modules_ + "/" + kOld + "/modules.order");
    Touch(modules_ + "/" + kOld + "/updates/dkms/blksnap.ko.xz");
    Touch(modules_ + "/" + kNew + "/modules.order");
    agent_.extra_args = {"--modules-dir", modules_};
    // vda gets random data; vdb stays zero, so its chunks repeat and all
    // but one travel as digests only (deduplicated).
    StartFleet({"vda=32MiB", "vdb=16MiB"});
    RegisterHost({"vda", "vdb"});
  }

  void TearDown() override {
    FleetTest::TearDown();
    if (!modules_.empty()) RemoveTree(modules_);
  }

  CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {Binaries::Cli(), "--server", server_.address, "--insecure"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  std::string modules_;

  std::map<std::string, double> ScrapeChecked(const std::string& who, const std::string& addr) {
    auto text = Scrape(addr);
    EXPECT_TRUE(text.ok()) << who << ": " << text.status();
    if (!text.ok()) return {};
    auto [rc, out] = PromtoolCheck(dir_, *text);
    EXPECT_EQ(rc, 0) << "promtool check metrics on the " << who
                     << "'s /metrics (promtool comes with Debian's prometheus package, "
                        "deploy/setup.sh):\n"
                     << out;
    return Samples(*text);
  }
};

TEST_F(MetricsTest, BackupMovesMetricsAndOutputPassesPromtool) {
  auto a0 = ScrapeChecked("agent", agent_.metrics_address);
  auto s0 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_EQ(Value(a0, "blkfleet_agent_image_read_bytes_total"), 0);
  EXPECT_EQ(Value(a0, "blkfleet_agent_snapshots"), 0);
  EXPECT_EQ(Value(s0, "blkfleet_server_jobs_total{kind=\"backup\",outcome=\"succeeded\"}"), 0);
  EXPECT_EQ(s0.count("blkfleet_backup_last_success_timestamp_seconds{device=\"vda\",host=\"h1\"}"),
            0u);
  EXPECT_GT(Value(s0, "blkfleet_server_repository_filesystem_size_bytes"), 0);

  ASSERT_TRUE(FillDevice(*agent_.workload, "vda", 32 * kMiB, 7).ok());
  const double before = absl::ToUnixSeconds(absl::Now());
  auto full = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->state(), sv::JOB_STATE_SUCCEEDED) << full->error();
  // An incremental reads the CBT maps.
  auto incr = RunBackupAndWait(*server_.stub, "h1", {});
  ASSERT_TRUE(incr.ok()) << incr.status();
  ASSERT_EQ(incr->state(), sv::JOB_STATE_SUCCEEDED) << incr->error();
  const double after = absl::ToUnixSeconds(absl::Now()) + 1;
  // A backup that fails: the agent has no such device.
  auto failed = RunBackupAndWait(*server_.stub, "h1", {"nope"});
  ASSERT_TRUE(failed.ok()) << failed.status();
  ASSERT_EQ(failed->state(), sv::JOB_STATE_FAILED);
  // A refused call shows as an error by kind.
  agent::v1::GetSnapshotRequest bad;
  bad.set_id("not-an-id");
  agent::v1::Snapshot snap;
  EXPECT_EQ(agent_.agent->GetSnapshot(Ctx().get(), bad, &snap).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  auto a1 = ScrapeChecked("agent", agent_.metrics_address);
  auto s1 = ScrapeChecked("server", server_.metrics_address);
  // The full backup read both devices whole.
  EXPECT_GE(Value(a1, "blkfleet_agent_image_read_bytes_total"), 48.0 * kMiB);
  EXPECT_GE(Value(a1, "blkfleet_agent_image_chunks_read_total"), 12);
  const double sent = Value(a1, "blkfleet_agent_image_sent_bytes_total");
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, 48.0 * kMiB);  // the zero chunks of vdb went as digests
  EXPECT_GE(Value(a1, "blkfleet_agent_stream_throughput_bytes_per_second_count"), 2);
  EXPECT_GE(Value(a1, "blkfleet_agent_cbt_map_read_duration_seconds_count"), 2);
  EXPECT_EQ(Value(a1, "blkfleet_agent_snapshots"), 0);  // both destroyed
  EXPECT_GE(Value(a1, "blkfleet_agent_grpc_server_handled_total{code=\"OK\",method=\"StreamImage\"}"),
            2);
  EXPECT_EQ(
      Value(a1, "blkfleet_agent_grpc_server_handled_total{code=\"INVALID_ARGUMENT\",method=\"GetSnapshot\"}"),
      1);

  EXPECT_EQ(Value(s1, "blkfleet_server_jobs_total{kind=\"backup\",outcome=\"succeeded\"}"), 2);
  EXPECT_EQ(Value(s1, "blkfleet_server_jobs_total{kind=\"backup\",outcome=\"failed\"}"), 1);
  EXPECT_EQ(Value(s1, "blkfleet_server_backup_failures_total{host=\"h1\"}"), 1);
  EXPECT_GE(Value(s1, "blkfleet_backup_last_failure_timestamp_seconds{host=\"h1\"}"), after - 1);
  EXPECT_EQ(Value(s1, "blkfleet_server_job_duration_seconds_count{kind=\"backup\"}"), 3);  // 2 good, 1 failed
  EXPECT_EQ(Value(s1, "blkfleet_server_ingested_bytes_total"), sent);
  // vdb: 4 chunks of zeros, one sent, three deduplicated.
  EXPECT_GE(Value(s1, "blkfleet_server_deduplicated_bytes_total"), 12.0 * kMiB);
  EXPECT_GE(Value(s1, "blkfleet_server_repository_chunks"), 9);  // 8 of vda, 1 of vdb
  EXPECT_GT(Value(s1, "blkfleet_server_repository_chunk_bytes"), 0);
  EXPECT_GE(Value(s1, "blkfleet_server_grpc_server_handled_total{code=\"OK\",method=\"RunBackup\"}"),
            2);
  const std::string vda = "blkfleet_backup_last_success_timestamp_seconds{device=\"vda\",host=\"h1\"}";
  const double last = Value(s1, vda);
  EXPECT_GE(last, before);
  EXPECT_LE(last, after);

  // A daily policy: the scheduler exports h1's age limit per device (24 h
  // between slots + retries 5m*1.2 + 10m*1.2 + 1 h = 91080 s) at its next
  // pass (every second).
  {
    absl::Status applied = ApplyPolicies(*server_.stub, R"(
version: 1
host_groups:
  all: {hosts: [h1]}
device_sets:
  sys: {devices: [vda]}
policies:
  - name: daily
    host_group: all
    device_set: sys
    schedule: {cron: "0 3 * * *"}
)");
    ASSERT_TRUE(applied.ok()) << applied;
  }
  const std::string max_age = "blkfleet_backup_max_age_seconds{device=\"vda\",host=\"h1\"}";
  std::map<std::string, double> s_policy;
  for (int i = 0; i < 50 && !s_policy.count(max_age); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    s_policy = ScrapeChecked("server", server_.metrics_address);
  }
  EXPECT_EQ(Value(s_policy, max_age), 91080);

  // Every metric the alert rules and the dashboard name exists in the live
  // output of one of the daemons.
  std::set<std::string> live = FamilyNames(*Scrape(agent_.metrics_address));
  live.merge(FamilyNames(*Scrape(server_.metrics_address)));
  const std::string prom = std::string(BLKFLEET_SOURCE_DIR) + "/deploy/prometheus";
  const std::string rules = ReadFile(prom + "/rules/blkfleet.rules.yml");
  ASSERT_FALSE(rules.empty());
  for (const std::string& name : NamesIn(rules)) {
    EXPECT_TRUE(live.contains(name))
        << "rules/blkfleet.rules.yml names " << name << ", which neither daemon exports";
  }
  const nlohmann::json dashboard =
      nlohmann::json::parse(ReadFile(prom + "/grafana/blkfleet-fleet.json"));
  std::vector<std::string> exprs;
  CollectExprs(dashboard, &exprs);
  EXPECT_GE(exprs.size(), 10u);
  for (const std::string& e : exprs) {
    for (const std::string& name : NamesIn(e)) {
      EXPECT_TRUE(live.contains(name)) << "the dashboard's \"" << e << "\" names " << name
                                      << ", which neither daemon exports";
    }
    // Recorded series come from the rules.
    static const std::regex kRecorded("blkfleet:[a-z0-9_:]+");
    for (auto it = std::sregex_iterator(e.begin(), e.end(), kRecorded);
         it != std::sregex_iterator(); ++it) {
      EXPECT_NE(rules.find("record: " + it->str()), std::string::npos)
          << "the dashboard uses " << it->str() << ", which no rule records";
    }
  }

  // Restarted, the server knows the last success from its catalog.
  server_.stub.reset();
  server_.process.Kill(SIGTERM);
  ASSERT_TRUE(server_.Start().ok()) << server_.process.LogTail();
  auto s2 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_NEAR(Value(s2, vda), last, 1e-3);
  EXPECT_NEAR(
      Value(s2, "blkfleet_backup_last_success_timestamp_seconds{device=\"vdb\",host=\"h1\"}"), last,
      1e-3);
  EXPECT_EQ(Value(s2, "blkfleet_server_jobs_total{kind=\"backup\",outcome=\"succeeded\"}"), 0);
}

// The preflight end to end: the agent's kernel report reaches the catalog
// (host list/show), the module metrics the alert reads, follows a module
// DKMS builds later (refreshed by a backup), outlives the agent's answer
// and the server's restart, and goes with the host.
TEST_F(MetricsTest, KernelReportIsKeptPerHostShownAndExported) {
  const std::string ready_old =
      absl::StrCat("blkfleet_host_module_ready{host=\"h1\",kernel=\"", kOld, "\"}");
  const std::string ready_new =
      absl::StrCat("blkfleet_host_module_ready{host=\"h1\",kernel=\"", kNew, "\"}");
  const std::string loaded = "blkfleet_host_module_loaded{host=\"h1\"}";
  // RegisterHost (CreateHost) asked the agent already.
  auto s0 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_EQ(Value(s0, ready_old), 1);
  EXPECT_EQ(Value(s0, ready_new), 0);
  EXPECT_EQ(Value(s0, loaded), 1) << "the sim backend can always snapshot";

  CommandResult list = Cli({"host", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("KERNEL"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find(absl::StrCat("MISSING for ", kNew)), std::string::npos)
      << list.output;
  CommandResult show = Cli({"host", "show", "h1"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  struct utsname u {};
  ASSERT_EQ(::uname(&u), 0);
  EXPECT_NE(show.output.find(absl::StrCat("kernel           ", u.release, " (reported ")),
            std::string::npos)
      << show.output;
  EXPECT_NE(show.output.find("interception sim"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find(absl::StrCat("installed kernels (", modules_, "):")),
            std::string::npos)
      << show.output;
  EXPECT_NE(show.output.find(absl::StrCat(kNew, "  NO ")), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("updates/dkms/blksnap.ko.xz"), std::string::npos) << show.output;

  // DKMS builds the module for 6.12; the next backup refreshes the report.
  Touch(modules_ + "/" + kNew + "/updates/dkms/blksnap.ko.zst");
  auto job = RunBackupAndWait(*server_.stub, "h1", {"vdb"});
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), sv::JOB_STATE_SUCCEEDED) << job->error();
  auto s1 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_EQ(Value(s1, ready_new), 1);

  // A kernel removed: its series goes at the next report (host show).
  std::filesystem::remove_all(modules_ + "/" + kOld);
  ASSERT_EQ(Cli({"host", "show", "h1"}).exit_code, 0);
  auto s2 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_EQ(s2.count(ready_old), 0u);
  EXPECT_EQ(Value(s2, ready_new), 1);

  // The agent gone: the stored report still shows. Restarted, the server
  // exports it again from its catalog.
  agent_.agent.reset();
  agent_.workload.reset();
  agent_.process.Kill(SIGTERM);
  server_.stub.reset();
  server_.process.Kill(SIGTERM);
  ASSERT_TRUE(server_.Start().ok()) << server_.process.LogTail();
  auto s3 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_EQ(Value(s3, ready_new), 1);
  EXPECT_EQ(Value(s3, loaded), 1);
  show = Cli({"host", "show", "h1"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("(no answer now)"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find(absl::StrCat(kNew, "  yes")), std::string::npos) << show.output;

  // The host deleted: its series go.
  sv::DeleteHostRequest del;
  del.set_name("h1");
  sv::DeleteHostResponse dr;
  ASSERT_TRUE(server_.stub->DeleteHost(Ctx().get(), del, &dr).ok());
  auto s4 = ScrapeChecked("server", server_.metrics_address);
  EXPECT_EQ(s4.count(ready_new), 0u);
  EXPECT_EQ(s4.count(loaded), 0u);
}

}  // namespace
}  // namespace blkfleet::testing
