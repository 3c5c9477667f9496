// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_KERNEL_PROBE_H_
#define BLKFLEET_AGENT_KERNEL_PROBE_H_

// What the agent tells about the host's kernels (the preflight,
// docs/agent.md "Kernel and module report"): the running release, and for
// each kernel installed under a modules folder (/lib/modules) whether a
// blksnap module built for it lies there. Plain reads of the file system,
// cheap enough to run on every GetAgentInfo; nothing is cached, so a module
// DKMS builds while the agent runs shows at the next call.

#include <string>
#include <string_view>
#include <vector>

namespace blkfleet::agent {

struct InstalledKernelInfo {
  std::string release;      // the folder's name under the modules folder
  std::string module_path;  // blksnap module, relative to the kernel's folder; empty: none
  bool running = false;
  bool default_boot = false;  // the newest release (see ListInstalledKernels)
};

// uname -r; "unknown" if uname fails.
std::string RunningKernelRelease();

// Orders kernel releases as `sort -V` does for Debian's names: runs of
// digits compare as numbers, other characters one by one
// ("6.1.0-28-amd64" < "6.1.0-100-amd64" < "6.12.118+deb12-amd64").
// Negative, zero or positive.
int CompareKernelReleases(std::string_view a, std::string_view b);

// The blksnap module under `kernel_dir` (blksnap.ko, .ko.xz, .ko.zst or
// .ko.gz, at any depth; symbolic links such as build/ and source/ are not
// followed), relative to `kernel_dir`; empty when there is none. Where
// several exist (updates/dkms/ and extra/), the first in path order.
std::string FindBlksnapModule(const std::string& kernel_dir);

// The kernels installed under `modules_dir`: each folder that holds
// modules.builtin, modules.order or a kernel/ folder (a folder left behind
// by a removed kernel holds none of these), oldest release first. The newest
// release is marked default_boot: Debian's GRUB puts the newest kernel first
// and boots it unless GRUB_DEFAULT says otherwise, which the agent does not
// read. `running_release` marks the running one. A missing or unreadable
// `modules_dir` gives an empty list.
std::vector<InstalledKernelInfo> ListInstalledKernels(const std::string& modules_dir,
                                                      const std::string& running_release);

// Contents of <sys_module_dir>/parameters/intercept ("ftrace" or
// "native"), trimmed; empty when it cannot be read.
std::string ReadInterceptMode(const std::string& sys_module_dir);

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_KERNEL_PROBE_H_
