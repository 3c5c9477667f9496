// SPDX-License-Identifier: Apache-2.0
// nbdkit-blkfleet-plugin: serves one device image of one backup, read-only,
// over NBD, reading chunks on demand from the repository through
// repo::DeviceImageReader (server/repository/image_reader.h).
//
// Why a plugin for Debian's nbdkit and not an NBD server of our own: nbdkit
// is the well-kept implementation of the whole protocol (fixed newstyle
// handshake, NBD_OPT_GO/INFO, structured replies, block status, multi-conn,
// STARTTLS with X.509 client certificates through GnuTLS, socket
// activation), used in production by libguestfs and virt-v2v; what is ours is
// the part that is blkfleet's: reading a backup's image and never returning
// bytes that fail their checks. blkfleet-server runs one nbdkit process per
// export (server/nbd/export_manager.h), so a crash while serving a client
// cannot take the server down.
//
//   nbdkit [--tls=require --tls-certificates=DIR --tls-verify-peer]
//     /usr/lib/blkfleet/nbdkit-blkfleet-plugin.so repo=DIR backup=ID device=/dev/vdb
//     [key-file=FILE] [index-sha256=HEX] [cache-mib=64] [idle-timeout=600]
//
// A read of a range whose chunk fails its checksum (or is missing) fails
// with EIO for that request, and nbdkit logs the device range, the chunk and
// its path; other ranges stay readable.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/repository/image_reader.h"
#include "server/repository/repo_key.h"
#include "server/repository/repository.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace {

using blkfleet::repo::DeviceImageReader;
using blkfleet::repo::Repository;

struct Config {
  std::string repo;
  std::string backup;
  std::string device;
  std::string key_file;
  std::string index_sha256_hex;
  uint64_t cache_mib = 64;
  uint64_t idle_timeout_s = 600;
};

Config* config = nullptr;
std::unique_ptr<Repository> repo;
std::unique_ptr<DeviceImageReader> reader;

// Ends the process (nbdkit_shutdown) once no client has been connected for
// idle_timeout_s seconds, so a forgotten export does not serve for ever.
class IdleWatch {
 public:
  void Start(uint64_t timeout_s) {
    if (timeout_s == 0) return;
    timeout_s_ = timeout_s;
    Touch();
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void Connected() {
    clients_.fetch_add(1);
    Touch();
  }
  void Disconnected() {
    Touch();
    clients_.fetch_sub(1);
  }

 private:
  static int64_t Now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void Touch() { last_.store(Now()); }
  void Run() {
    std::unique_lock<std::mutex> l(mu_);
    while (!stop_) {
      cv_.wait_for(l, std::chrono::seconds(1));
      if (stop_) return;
      if (clients_.load() == 0 && Now() - last_.load() >= static_cast<int64_t>(timeout_s_)) {
        nbdkit_debug("no client for %llu s: shutting down",
                     static_cast<unsigned long long>(timeout_s_));
        nbdkit_shutdown();
        return;
      }
    }
  }

  uint64_t timeout_s_ = 0;
  std::atomic<int> clients_{0};
  std::atomic<int64_t> last_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};
IdleWatch* idle = nullptr;

void plugin_load() {
  config = new Config;
  idle = new IdleWatch;
}

void plugin_unload() {
  if (idle) idle->Stop();
  reader.reset();
  repo.reset();
  delete idle;
  delete config;
  idle = nullptr;
  config = nullptr;
}

bool ParseCount(const char* key, const char* value, uint64_t max, uint64_t* out) {
  if (!absl::SimpleAtoi(value, out) || *out > max) {
    nbdkit_error("%s=%s: expected a whole number from 0 to %llu", key, value,
                 static_cast<unsigned long long>(max));
    return false;
  }
  return true;
}

int plugin_config(const char* key, const char* value) {
  const std::string k = key;
  if (k == "repo") {
    config->repo = value;
  } else if (k == "backup") {
    config->backup = value;
  } else if (k == "device") {
    config->device = value;
  } else if (k == "key-file") {
    config->key_file = value;
  } else if (k == "index-sha256") {
    config->index_sha256_hex = value;
  } else if (k == "cache-mib") {
    if (!ParseCount(key, value, 16384, &config->cache_mib)) return -1;
  } else if (k == "idle-timeout") {
    if (!ParseCount(key, value, 7 * 86400, &config->idle_timeout_s)) return -1;
  } else {
    nbdkit_error("unknown parameter %s (see nbdkit blkfleet --help)", key);
    return -1;
  }
  return 0;
}

int plugin_config_complete() {
  for (const auto& [name, v] : {std::pair<const char*, const std::string*>{"repo", &config->repo},
                                {"backup", &config->backup},
                                {"device", &config->device}}) {
    if (v->empty()) {
      nbdkit_error("the %s= parameter is required", name);
      return -1;
    }
  }
  return 0;
}

// Opens the repository and the image before nbdkit accepts a connection, so
// a wrong backup, device or key stops nbdkit at start with the reason
// instead of failing every client.
int plugin_get_ready() {
  std::optional<blkfleet::repo::RepoKey> key;
  if (!config->key_file.empty()) {
    auto k = blkfleet::repo::LoadRepoKeyFile(config->key_file, "key-file");
    if (!k.ok()) {
      nbdkit_error("%s", std::string(k.status().message()).c_str());
      return -1;
    }
    key = *k;
  }
  auto r = Repository::Open(config->repo, key ? &*key : nullptr);
  if (!r.ok()) {
    nbdkit_error("repository %s: %s", config->repo.c_str(),
                 std::string(r.status().message()).c_str());
    return -1;
  }
  repo = std::move(*r);
  auto backup = repo->ReadManifest(config->backup);
  if (!backup.ok()) {
    nbdkit_error("backup %s: %s", config->backup.c_str(),
                 std::string(backup.status().message()).c_str());
    return -1;
  }
  int ordinal = -1;
  for (int i = 0; i < backup->devices_size(); ++i) {
    if (backup->devices(i).device() == config->device) ordinal = i;
  }
  if (ordinal < 0) {
    nbdkit_error("backup %s has no device %s", config->backup.c_str(), config->device.c_str());
    return -1;
  }
  // The catalog's digest of the index, when the server passes it, must be
  // the manifest's: the catalog decides what a backup is.
  if (!config->index_sha256_hex.empty()) {
    const std::string& hex = config->index_sha256_hex;
    const bool well_formed =
        hex.size() == 64 && hex.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
    if (!well_formed ||
        absl::HexStringToBytes(hex) != backup->devices(ordinal).index_sha256()) {
      nbdkit_error("index-sha256 %s does not match the manifest of backup %s",
                   config->index_sha256_hex.c_str(), config->backup.c_str());
      return -1;
    }
  }
  auto img = blkfleet::repo::OpenDeviceImage(repo.get(), *backup, ordinal,
                                             {.cache_bytes = config->cache_mib << 20});
  if (!img.ok()) {
    nbdkit_error("%s", std::string(img.status().message()).c_str());
    return -1;
  }
  reader = std::move(*img);
  return 0;
}

// After nbdkit forked into the background (if it does): threads made before
// a fork would not survive it.
int plugin_after_fork() {
  idle->Start(config->idle_timeout_s);
  return 0;
}

void* plugin_open(int /*readonly*/) {
  idle->Connected();
  return reader.get();
}

void plugin_close(void* /*handle*/) { idle->Disconnected(); }

int64_t plugin_get_size(void* /*handle*/) { return static_cast<int64_t>(reader->size_bytes()); }

int plugin_can_write(void*) { return 0; }
int plugin_is_rotational(void*) { return 0; }
// Every connection sees the same immutable image.
int plugin_can_multi_conn(void*) { return 1; }
int plugin_can_extents(void*) { return 1; }

int plugin_block_size(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  *minimum = 1;
  // A power of two from 512 to 32 MiB: the chunk size when it is one.
  uint32_t p = reader->block_size_bytes();
  if (p < 512 || p > (32u << 20) || (p & (p - 1)) != 0) p = 4096;
  *preferred = p;
  *maximum = 32u << 20;
  return 0;
}

int plugin_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t /*flags*/) {
  absl::Status s = reader->ReadAt(offset, {static_cast<char*>(buf), count});
  if (!s.ok()) {
    nbdkit_error("%s", std::string(s.message()).c_str());
    nbdkit_set_error(EIO);
    return -1;
  }
  return 0;
}

// Zero runs (chunks whose id is the all-zero chunk's) as holes, the rest as
// data, one chunk at a time: a sparse copy (nbdcopy, qemu-img convert)
// skips them without reading.
int plugin_extents(void*, uint32_t count, uint64_t offset, uint32_t /*flags*/,
                   struct nbdkit_extents* extents) {
  const uint64_t bs = reader->block_size_bytes();
  const uint64_t end = offset + count;
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t next = std::min(end, (pos / bs + 1) * bs);
    const uint32_t type =
        reader->KnownZero(pos, next - pos) ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;
    if (nbdkit_add_extent(extents, pos, next - pos, type) == -1) return -1;
    pos = next;
  }
  return 0;
}

struct nbdkit_plugin plugin = [] {
  struct nbdkit_plugin p;
  std::memset(&p, 0, sizeof p);
  p.name = "blkfleet";
  p.longname = "blkfleet backup image (read-only)";
  p.version = "1";
  p.description = "one device image of one blkfleet backup, chunks read on demand";
  p.load = plugin_load;
  p.unload = plugin_unload;
  p.config = plugin_config;
  p.config_complete = plugin_config_complete;
  p.config_help =
      "repo=DIR           repository directory (required)\n"
      "backup=ID          backup id (required)\n"
      "device=NAME        device of the backup, as its manifest names it (required)\n"
      "key-file=FILE      key of an encrypted repository\n"
      "index-sha256=HEX   the catalog's digest of the device's index (checked)\n"
      "cache-mib=N        decoded chunks kept in memory (default 64)\n"
      "idle-timeout=S     exit after S seconds without a client (default 600, 0: never)";
  p.magic_config_key = nullptr;
  p.get_ready = plugin_get_ready;
  p.after_fork = plugin_after_fork;
  p.open = plugin_open;
  p.close = plugin_close;
  p.get_size = plugin_get_size;
  p.can_write = plugin_can_write;
  p.is_rotational = plugin_is_rotational;
  p.can_multi_conn = plugin_can_multi_conn;
  p.can_extents = plugin_can_extents;
  p.extents = plugin_extents;
  p.block_size = plugin_block_size;
  p.pread = plugin_pread;
  p.errno_is_preserved = 0;
  return p;
}();

}  // namespace

NBDKIT_REGISTER_PLUGIN(plugin)
