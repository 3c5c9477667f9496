// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_AGENT_THREAD_POOL_H_
#define BLKFLEET_AGENT_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace blkfleet::agent {

// A fixed set of threads running queued tasks in FIFO order. Used for the
// CPU work of image streaming (read, SHA-256, zstd) so that every core
// works while the RPC thread writes to the network.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  // Runs the tasks already queued, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> task);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace blkfleet::agent

#endif  // BLKFLEET_AGENT_THREAD_POOL_H_
