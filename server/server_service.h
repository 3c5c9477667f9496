// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_SERVER_SERVER_SERVICE_H_
#define BLKFLEET_SERVER_SERVER_SERVICE_H_

#include "blkfleet/server/v1/server.grpc.pb.h"
#include "server/agent_client.h"
#include "server/backup_job.h"
#include "server/catalog/catalog.h"
#include "server/chunk_pins.h"
#include "server/prune_job.h"
#include "server/job_manager.h"
#include "server/repository/repository.h"
#include "server/scheduler.h"

namespace blkfleet::server {

// blkfleet.server.v1.Server over the catalog, the repository and the job
// manager. Validates every request (INVALID_ARGUMENT naming the field,
// NOT_FOUND for unknown ids) before anything changes.
class ServerService final : public v1::Server::Service {
 public:
  ServerService(catalog::Catalog* catalog, repo::Repository* repo, AgentConnector* agents,
                JobManager* jobs, Clock* clock, BackupOptions backup_options,
                absl::Duration gc_grace = absl::Hours(24));

  grpc::Status CreateHost(grpc::ServerContext*, const v1::CreateHostRequest*, v1::Host*) override;
  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest*,
                         v1::ListHostsResponse*) override;
  grpc::Status GetHost(grpc::ServerContext*, const v1::GetHostRequest*, v1::Host*) override;
  grpc::Status DeleteHost(grpc::ServerContext*, const v1::DeleteHostRequest*,
                          v1::DeleteHostResponse*) override;
  grpc::Status RunBackup(grpc::ServerContext*, const v1::RunBackupRequest*, v1::Job*) override;
  grpc::Status ListBackups(grpc::ServerContext*, const v1::ListBackupsRequest*,
                           v1::ListBackupsResponse*) override;
  grpc::Status GetBackup(grpc::ServerContext*, const v1::GetBackupRequest*, v1::Backup*) override;
  grpc::Status ProtectBackup(grpc::ServerContext*, const v1::ProtectBackupRequest*,
                             v1::Backup*) override;
  grpc::Status Restore(grpc::ServerContext*, const v1::RestoreRequest*, v1::Job*) override;
  grpc::Status VerifyBackup(grpc::ServerContext*, const v1::VerifyBackupRequest*,
                            v1::Job*) override;
  grpc::Status Prune(grpc::ServerContext*, const v1::PruneRequest*, v1::Job*) override;
  grpc::Status CollectGarbage(grpc::ServerContext*, const v1::CollectGarbageRequest*,
                              v1::Job*) override;
  grpc::Status ListPolicies(grpc::ServerContext*, const v1::ListPoliciesRequest*,
                            v1::ListPoliciesResponse*) override;
  grpc::Status ApplyPolicies(grpc::ServerContext*, const v1::ApplyPoliciesRequest*,
                             v1::ApplyPoliciesResponse*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::Job*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*,
                        grpc::ServerWriter<v1::Job>*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*, v1::Job*) override;

  // The scheduler behind ApplyPolicies/ListPolicies and Prune (null: all
  // three answer FAILED_PRECONDITION). Set before
  // serving; also makes the scheduler prune a host after its scheduled
  // backups when the policy says prune_after_backup.
  void SetScheduler(Scheduler* scheduler);
  // Validates `req` and starts its backup job (RunBackup and the scheduler).
  absl::StatusOr<v1::Job> StartBackup(const v1::RunBackupRequest& req);
  // Validates `req` and starts its prune job (Prune and, after a scheduled
  // backup, the scheduler). The policies are read when the job runs.
  absl::StatusOr<v1::Job> StartPrune(const v1::PruneRequest& req);

 private:
  // Fills agent_version and backend of `hosts` from the agents that answer
  // within a short deadline (asked in parallel).
  void AskAgents(std::vector<v1::Host*> hosts);
  // Restore with a host_device target: a job streaming to the agent's
  // WriteImage (restore_job.h).
  grpc::Status RestoreToHostDevice(const v1::RestoreRequest& req, v1::Job* resp);

  catalog::Catalog* const catalog_;
  repo::Repository* const repo_;
  AgentConnector* const agents_;
  JobManager* const jobs_;
  Clock* const clock_;
  const BackupOptions backup_options_;
  const absl::Duration gc_grace_;
  // Chunks of running backups, kept from garbage collection.
  ChunkPins pins_;
  // Backups read by restores and verifies, kept from prune.
  BackupUses uses_;
  Scheduler* scheduler_ = nullptr;
};

}  // namespace blkfleet::server

#endif  // BLKFLEET_SERVER_SERVER_SERVICE_H_
