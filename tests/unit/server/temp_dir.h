// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_TESTS_UNIT_SERVER_TEMP_DIR_H_
#define BLKFLEET_TESTS_UNIT_SERVER_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace blkfleet::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its content.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/blkfleet-test-XXXXXX";
    path_ = mkdtemp(tmpl.data()) ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace blkfleet::testing

#endif  // BLKFLEET_TESTS_UNIT_SERVER_TEMP_DIR_H_
