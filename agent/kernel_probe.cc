// SPDX-License-Identifier: Apache-2.0
#include "agent/kernel_probe.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/ascii.h"

namespace blkfleet::agent {
namespace {

namespace fs = std::filesystem;

bool IsModuleName(const std::string& name) {
  for (const char* n : {"blksnap.ko", "blksnap.ko.xz", "blksnap.ko.zst", "blksnap.ko.gz"}) {
    if (name == n) return true;
  }
  return false;
}

bool IsKernelFolder(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "modules.builtin", ec) || fs::exists(dir / "modules.order", ec) ||
         fs::is_directory(dir / "kernel", ec);
}

}  // namespace

std::string RunningKernelRelease() {
  struct utsname u {};
  if (::uname(&u) != 0) return "unknown";
  return u.release;
}

int CompareKernelReleases(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
    const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
    if (da && db) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      // Compare the numbers without converting (no overflow): drop leading
      // zeros, then the longer is larger, then digit by digit.
      std::string_view na = a.substr(i, ie - i), nb = b.substr(j, je - j);
      while (na.size() > 1 && na[0] == '0') na.remove_prefix(1);
      while (nb.size() > 1 && nb[0] == '0') nb.remove_prefix(1);
      if (na.size() != nb.size()) return na.size() < nb.size() ? -1 : 1;
      if (int c = na.compare(nb); c != 0) return c < 0 ? -1 : 1;
      i = ie;
      j = je;
      continue;
    }
    if (a[i] != b[j])
      return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]) ? -1 : 1;
    ++i;
    ++j;
  }
  if (i < a.size()) return 1;
  if (j < b.size()) return -1;
  return 0;
}

std::string FindBlksnapModule(const std::string& kernel_dir) {
  std::error_code ec;
  std::vector<std::string> found;
  // Symbolic links (build -> /usr/src/linux-headers-*) are not followed.
  fs::recursive_directory_iterator it(kernel_dir, fs::directory_options::skip_permission_denied,
                                      ec);
  if (ec) return "";
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec) && !it->is_symlink(ec) &&
        IsModuleName(it->path().filename().string())) {
      found.push_back(fs::relative(it->path(), kernel_dir, ec).string());
    }
  }
  if (found.empty()) return "";
  return *std::min_element(found.begin(), found.end());
}

std::vector<InstalledKernelInfo> ListInstalledKernels(const std::string& modules_dir,
                                                      const std::string& running_release) {
  std::vector<InstalledKernelInfo> out;
  std::error_code ec;
  for (fs::directory_iterator it(modules_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec) || !IsKernelFolder(it->path())) continue;
    InstalledKernelInfo k;
    k.release = it->path().filename().string();
    k.module_path = FindBlksnapModule(it->path().string());
    k.running = k.release == running_release;
    out.push_back(std::move(k));
  }
  std::sort(out.begin(), out.end(), [](const InstalledKernelInfo& a, const InstalledKernelInfo& b) {
    return CompareKernelReleases(a.release, b.release) < 0;
  });
  if (!out.empty()) out.back().default_boot = true;
  return out;
}

std::string ReadInterceptMode(const std::string& sys_module_dir) {
  std::ifstream in(sys_module_dir + "/parameters/intercept");
  std::string mode;
  if (!std::getline(in, mode)) return "";
  return std::string(absl::StripAsciiWhitespace(mode));
}

}  // namespace blkfleet::agent
