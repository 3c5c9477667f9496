// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_CLIENT_FORMAT_H_
#define BLKFLEET_CLIENT_FORMAT_H_

// Human and machine output of the `blkfleet` CLI.

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "blkfleet/server/v1/server.pb.h"

namespace blkfleet::cli {

// "0 B", "512 B", "1.5 KiB", "12.0 MiB", ...
std::string HumanBytes(uint64_t bytes);
// "2026-11-25 09:13:20" (UTC), "-" when unset.
std::string HumanTime(const google::protobuf::Timestamp& t);
// "SUCCEEDED" from JOB_STATE_SUCCEEDED, and the like.
std::string JobStateName(server::v1::JobState s);
std::string JobKindName(server::v1::JobKind k);
// "reading vda  42%  3.0 MiB / 7.1 MiB  12/30 chunks".
std::string ProgressLine(const server::v1::Job& job);

// A table with a header row and left-aligned columns separated by two spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  void Print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// The message as indented JSON with the .proto field names.
std::string ToJson(const google::protobuf::Message& m);

// "ok", "NOT LOADED", "MISSING for K1,K2" (installed kernels without a
// blksnap module) or "-" (no kernel report), from Host.kernel.
std::string ModuleReadiness(const server::v1::Host& h);
void PrintHosts(const server::v1::ListHostsResponse& r, std::ostream& out);
// One host in full: agent, running kernel, module, installed kernels.
void PrintHost(const server::v1::Host& h, std::ostream& out);
void PrintBackups(const server::v1::ListBackupsResponse& r, std::ostream& out);
void PrintJobs(const server::v1::ListJobsResponse& r, std::ostream& out);
void PrintJob(const server::v1::Job& j, std::ostream& out);
// One backup in full, device by device.
void PrintBackup(const server::v1::Backup& b, std::ostream& out);
// A prune's decisions: kept (with the rules that kept each) and removed.
void PrintPruneResult(const server::v1::PruneResult& r, std::ostream& out);

}  // namespace blkfleet::cli

#endif  // BLKFLEET_CLIENT_FORMAT_H_
