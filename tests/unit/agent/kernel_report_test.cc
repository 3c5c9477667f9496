// SPDX-License-Identifier: Apache-2.0
// The preflight on the agent's side: the kernel probe over a fake modules
// folder, the kernel backend without its module (it opens, names the cause,
// refuses what needs the module), and GetAgentInfo's kernel report.

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/agent_service.h"
#include "agent/kernel_backend.h"
#include "agent/kernel_probe.h"
#include "agent/sim_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/test_util.h"

namespace blkfleet::agent {
namespace {

namespace fs = std::filesystem;
using ::blkfleet::testing::TempDir;

constexpr char kOld[] = "6.1.0-28-amd64";
constexpr char kNew[] = "6.12.118+deb12-amd64";

void Touch(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << "x";
}

// A modules folder as Debian leaves it: 6.1 with the DKMS module, 6.12
// without, a folder left by a removed kernel (its module only), a stray
// file, and build/ links that lead to a tree holding a blksnap.ko.
std::string FakeModulesDir(const TempDir& dir) {
  const std::string root = dir.Sub("lib/modules");
  Touch(root + "/" + kOld + "/kernel/drivers/block/loop.ko.xz");
  Touch(root + "/" + kOld + "/modules.builtin");
  Touch(root + "/" + kOld + "/updates/dkms/blksnap.ko.xz");
  Touch(root + "/" + kNew + "/modules.order");
  Touch(root + "/" + kNew + "/kernel/drivers/block/loop.ko.xz");
  Touch(root + "/6.1.0-25-amd64/updates/dkms/blksnap.ko");
  Touch(root + "/README");
  Touch(dir.path() + "/headers/blksnap/blksnap.ko");
  fs::create_directory_symlink(dir.path() + "/headers", root + "/" + kNew + "/build");
  return root;
}

TEST(KernelProbe, ReleasesSortAsVersions) {
  EXPECT_LT(CompareKernelReleases("6.1.0-28-amd64", "6.1.0-100-amd64"), 0);
  EXPECT_LT(CompareKernelReleases("6.1.0-100-amd64", "6.12.118+deb12-amd64"), 0);
  EXPECT_GT(CompareKernelReleases("6.12.118+deb12-amd64", "6.12.9+deb12-amd64"), 0);
  EXPECT_EQ(CompareKernelReleases("6.12.1", "6.12.1"), 0);
  EXPECT_LT(CompareKernelReleases("6.12.1", "6.12.1-rt"), 0);
}

TEST(KernelProbe, ListsInstalledKernelsWithOrWithoutTheModule) {
  TempDir dir;
  const std::string root = FakeModulesDir(dir);
  std::vector<InstalledKernelInfo> ks = ListInstalledKernels(root, kOld);
  ASSERT_EQ(ks.size(), 2u) << "the removed kernel's folder and the file are no kernels";
  EXPECT_EQ(ks[0].release, kOld);
  EXPECT_EQ(ks[0].module_path, "updates/dkms/blksnap.ko.xz");
  EXPECT_TRUE(ks[0].running);
  EXPECT_FALSE(ks[0].default_boot);
  EXPECT_EQ(ks[1].release, kNew);
  EXPECT_EQ(ks[1].module_path, "") << "build/ is a link and is not followed";
  EXPECT_FALSE(ks[1].running);
  EXPECT_TRUE(ks[1].default_boot) << "the newest release";
  EXPECT_TRUE(ListInstalledKernels(dir.path() + "/none", kOld).empty());
}

TEST(KernelProbe, FindsEveryCompressionAndReadsTheInterceptMode) {
  TempDir dir;
  for (const char* name : {"blksnap.ko", "blksnap.ko.xz", "blksnap.ko.zst", "blksnap.ko.gz"}) {
    const std::string k = dir.Sub(std::string("k-") + name);
    Touch(k + "/extra/" + name);
    EXPECT_EQ(FindBlksnapModule(k), std::string("extra/") + name);
  }
  const std::string other = dir.Sub("k-other");
  Touch(other + "/extra/blksnap.ko.bak");
  Touch(other + "/extra/notblksnap.ko");
  EXPECT_EQ(FindBlksnapModule(other), "");
  const std::string sys = dir.Sub("sys/module/blksnap");
  EXPECT_EQ(ReadInterceptMode(sys), "");
  Touch(sys + "/parameters/intercept");
  std::ofstream(sys + "/parameters/intercept") << "native\n";
  EXPECT_EQ(ReadInterceptMode(sys), "native");
}

// A block device of this machine for the backend to open (it is only
// opened, listed and closed: nothing is written).
std::string AnyBlockDevice() {
  std::string found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev", ec)) {
    struct stat st;
    if (::stat(e.path().c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) continue;
    const std::string name = e.path().filename().string();
    if (found.empty() || (name.rfind("loop", 0) == 0 && found.find("/dev/loop") != 0)) {
      found = e.path().string();
    }
  }
  return found;
}

KernelBackendOptions NoModule(const std::string& modules_dir, const std::string& release) {
  KernelBackendOptions o;
  o.devices = {AnyBlockDevice()};
  o.control_path = "/nonexistent/blksnap-control";
  o.modules_dir = modules_dir;
  o.running_release = release;
  o.start_without_module = true;
  return o;
}

TEST(KernelBackendWithoutModule, OpensNamesTheCauseAndRefusesWhatNeedsTheModule) {
  TempDir dir;
  const std::string root = FakeModulesDir(dir);
  const std::string dev = AnyBlockDevice();
  ASSERT_FALSE(dev.empty()) << "this test needs a block device in /dev (e.g. /dev/loop0)";

  // Without the option, the old behaviour: NOT_FOUND naming the module.
  KernelBackendOptions strict = NoModule(root, kNew);
  strict.start_without_module = false;
  absl::Status st = KernelBackend::Open(strict).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_NE(st.message().find("no blksnap module for 6.12.118+deb12-amd64"), std::string::npos)
      << st;

  auto opened = KernelBackend::Open(NoModule(root, kNew));
  ASSERT_TRUE(opened.ok()) << opened.status();
  KernelBackend& b = **opened;
  st = b.Usable();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("no blksnap module for 6.12.118+deb12-amd64"), std::string::npos)
      << st;
  EXPECT_EQ(b.module_version(), "");
  EXPECT_EQ(b.intercept_mode(), "");

  auto devices = b.ListDevices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].name, dev);
  EXPECT_FALSE((*devices)[0].tracked);

  auto refused = [&](const absl::Status& s, const char* what) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << what << ": " << s;
    EXPECT_NE(s.message().find("no blksnap module for"), std::string::npos) << what << ": " << s;
  };
  refused(b.CreateSnapshot({dir.path(), 1 << 20}).status(), "CreateSnapshot");
  refused(b.Attach(dev), "Attach");
  refused(b.Detach(dev), "Detach");
  refused(b.GetCbtInfo(dev).status(), "GetCbtInfo");
  std::vector<uint8_t> map(1);
  refused(b.ReadCbtMap(dev, 0, map), "ReadCbtMap");
  const Uuid id = Uuid::Random();
  refused(b.AddDevice(id, dev), "AddDevice");
  refused(b.TakeSnapshot(id), "TakeSnapshot");
  refused(b.GetSnapshotStatus(id).status(), "GetSnapshotStatus");
  refused(b.OpenImage(id, dev).status(), "OpenImage");
  auto ids = b.ListSnapshots();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_TRUE(ids->empty());
  EXPECT_EQ(b.DestroySnapshot(id).code(), absl::StatusCode::kNotFound)
      << "no module, no snapshot: a destroy that allows a missing one goes on";

  // The module is installed for the running kernel, only not loaded.
  auto loaded_not = KernelBackend::Open(NoModule(root, kOld));
  ASSERT_TRUE(loaded_not.ok()) << loaded_not.status();
  st = (*loaded_not)->Usable();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("blksnap module not loaded: no /nonexistent/blksnap-control"),
            std::string::npos)
      << st;
  EXPECT_NE(st.message().find("updates/dkms/blksnap.ko.xz is installed"), std::string::npos) << st;

  // Configuration errors still stop the start.
  KernelBackendOptions missing = NoModule(root, kNew);
  missing.devices = {dir.path() + "/no-such-device"};
  EXPECT_EQ(KernelBackend::Open(missing).status().code(), absl::StatusCode::kNotFound);
}

// An AgentService over `backend` behind an in-process gRPC server.
struct ServedAgent {
  ServedAgent(Backend* backend, AgentServiceOptions o) {
    o.lease_check_interval = absl::ZeroDuration();
    service = std::make_unique<AgentService>(backend, std::move(o));
    grpc::ServerBuilder builder;
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    stub = v1::Agent::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  }
  ~ServedAgent() {
    service->Shutdown();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return ctx;
  }
  std::unique_ptr<AgentService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Agent::Stub> stub;
};

TEST(AgentKernelReport, AnAgentWithoutTheModuleReportsWhyAndRefusesSnapshots) {
  TempDir dir;
  const std::string root = FakeModulesDir(dir);
  auto backend = KernelBackend::Open(NoModule(root, kNew));
  ASSERT_TRUE(backend.ok()) << backend.status();
  AgentServiceOptions o;
  o.hostname = "web1";
  o.default_diff_storage_path = dir.Sub("diff");
  o.modules_dir = root;
  o.running_release = kNew;
  ServedAgent agent(backend->get(), o);

  v1::AgentInfo info;
  ASSERT_TRUE(agent.stub->GetAgentInfo(ServedAgent::Ctx().get(), {}, &info).ok());
  const auto& k = info.kernel();
  EXPECT_EQ(info.backend(), "kernel");
  EXPECT_EQ(k.running_release(), kNew);
  EXPECT_FALSE(k.module_loaded());
  EXPECT_NE(k.module_error().find("no blksnap module for 6.12.118+deb12-amd64"), std::string::npos)
      << k.module_error();
  EXPECT_EQ(k.intercept_mode(), "");
  EXPECT_EQ(k.modules_dir(), root);
  ASSERT_EQ(k.installed_kernels_size(), 2);
  EXPECT_EQ(k.installed_kernels(0).release(), kOld);
  EXPECT_TRUE(k.installed_kernels(0).module_present());
  EXPECT_EQ(k.installed_kernels(0).module_path(), "updates/dkms/blksnap.ko.xz");
  EXPECT_FALSE(k.installed_kernels(0).running());
  EXPECT_EQ(k.installed_kernels(1).release(), kNew);
  EXPECT_FALSE(k.installed_kernels(1).module_present());
  EXPECT_TRUE(k.installed_kernels(1).running());
  EXPECT_TRUE(k.installed_kernels(1).default_boot());

  // A module DKMS builds meanwhile shows at the next call.
  Touch(root + "/" + kNew + "/updates/dkms/blksnap.ko.xz");
  ASSERT_TRUE(agent.stub->GetAgentInfo(ServedAgent::Ctx().get(), {}, &info).ok());
  EXPECT_TRUE(info.kernel().installed_kernels(1).module_present());

  const std::string dev = AnyBlockDevice();
  v1::CreateSnapshotRequest create;
  create.add_devices(dev);
  create.set_lease_ms(60'000);
  v1::Snapshot snap;
  grpc::Status s = agent.stub->CreateSnapshot(ServedAgent::Ctx().get(), create, &snap);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("no blksnap module for 6.12.118+deb12-amd64"), std::string::npos)
      << s.error_message();

  v1::ReadCbtMapRequest cbt;
  cbt.set_snapshot_id(Uuid::Random().ToString());
  cbt.set_device(dev);
  auto cbt_ctx = ServedAgent::Ctx();
  auto reader = agent.stub->ReadCbtMap(cbt_ctx.get(), cbt);
  v1::ReadCbtMapResponse piece;
  while (reader->Read(&piece)) {
  }
  s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  auto ctx = ServedAgent::Ctx();
  auto stream = agent.stub->StreamImage(ctx.get());
  v1::StreamImageRequest start;
  start.mutable_start()->set_snapshot_id(Uuid::Random().ToString());
  start.mutable_start()->set_device(dev);
  stream->Write(start);
  stream->WritesDone();
  v1::StreamImageResponse resp;
  while (stream->Read(&resp)) {
  }
  s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("blksnap module"), std::string::npos) << s.error_message();

  v1::ListDevicesResponse devices;
  ASSERT_TRUE(agent.stub->ListDevices(ServedAgent::Ctx().get(), {}, &devices).ok());
  EXPECT_EQ(devices.devices_size(), 1);
}

TEST(AgentKernelReport, TheSimBackendIsReadyInModeSimAndLooksOnlyWhenTold) {
  TempDir dir;
  SimOptions so;
  so.dir = dir.Sub("devices");
  so.devices = {{"vda", 1 << 20}};
  auto sim = SimBackend::Open(so);
  ASSERT_TRUE(sim.ok()) << sim.status();
  AgentServiceOptions o;
  o.default_diff_storage_path = dir.Sub("diff");
  {
    ServedAgent agent(sim->get(), o);
    v1::AgentInfo info;
    ASSERT_TRUE(agent.stub->GetAgentInfo(ServedAgent::Ctx().get(), {}, &info).ok());
    EXPECT_EQ(info.kernel().running_release(), RunningKernelRelease());
    EXPECT_TRUE(info.kernel().module_loaded());
    EXPECT_EQ(info.kernel().module_error(), "");
    EXPECT_EQ(info.kernel().intercept_mode(), "sim");
    EXPECT_EQ(info.kernel().modules_dir(), "");
    EXPECT_EQ(info.kernel().installed_kernels_size(), 0);
  }
  o.modules_dir = FakeModulesDir(dir);
  ServedAgent agent(sim->get(), o);
  v1::AgentInfo info;
  ASSERT_TRUE(agent.stub->GetAgentInfo(ServedAgent::Ctx().get(), {}, &info).ok());
  EXPECT_EQ(info.kernel().installed_kernels_size(), 2);
}

}  // namespace
}  // namespace blkfleet::agent
