// SPDX-License-Identifier: Apache-2.0
// blkfleet-test-mkbackup: writes a full backup of an image file into a
// repository directory (created when missing), without a server or an
// agent, and prints the manifest's JSON. For tests and benchmarks.
#include <iostream>
#include <optional>

#include "CLI/CLI.hpp"
#include "google/protobuf/util/json_util.h"
#include "server/repository/repo_key.h"
#include "tests/tools/repo_builder.h"

int main(int argc, char** argv) {
  CLI::App app{"blkfleet-test-mkbackup: a full backup of an image file, straight into a repository"};
  std::string root, image, key_file;
  blkfleet::testing::BackupSpec spec;
  app.add_option("--repo", root, "repository directory")->required();
  app.add_option("--image", image, "image file (holes are not read)")->required();
  app.add_option("--repo-key-file", key_file, "key of an encrypted repository");
  app.add_option("--backup-id", spec.backup_id, "backup id");
  app.add_option("--host", spec.host, "host name in the manifest");
  app.add_option("--device", spec.device, "device name in the manifest");
  app.add_option("--chunk-size", spec.chunk_size_bytes, "chunk size in bytes");
  CLI11_PARSE(app, argc, argv);
  std::optional<blkfleet::repo::RepoKey> key;
  if (!key_file.empty()) {
    auto k = blkfleet::repo::LoadRepoKeyFile(key_file, "--repo-key-file");
    if (!k.ok()) {
      std::cerr << k.status().message() << "\n";
      return 2;
    }
    key = *k;
  }
  auto repo = blkfleet::repo::Repository::Open(root, key ? &*key : nullptr);
  if (!repo.ok()) {
    std::cerr << repo.status().message() << "\n";
    return 2;
  }
  auto b = blkfleet::testing::WriteBackupFromImage(repo->get(), image, spec);
  if (!b.ok()) {
    std::cerr << b.status().message() << "\n";
    return 1;
  }
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(*b, &json);
  std::cout << json << "\n";
  return 0;
}
