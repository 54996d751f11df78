// A fixed pool of worker threads, created once per process (never per token). parallel_for
// splits [0, n) into contiguous chunks, one per thread; the calling thread takes chunk 0.
//
// Hand-off is by spinning on an atomic generation counter, because a decode step issues a few
// hundred short parallel sections and a condition-variable wake-up costs more than many of
// them. A worker that sees no work for a while (kSpinRounds pauses, ~0.1 ms) sleeps on a
// condition variable instead, so an idle or oversubscribed pool does not burn its cores.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ranklm::kern {

class ThreadPool {
 public:
  // Called once in each thread of the pool with its index before any work: index 0 on the
  // constructing thread (which runs chunk 0 of every parallel_for), 1.. in the workers. The
  // runtime uses it to bind threads to cores; the kernels library itself knows nothing of that.
  using StartFn = std::function<void(int)>;

  explicit ThreadPool(int n_threads, const StartFn& on_start = {});
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(begin, end, thread_index) over a partition of [0, n).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void worker(int index, const StartFn& on_start);
  bool wait_for_generation(uint64_t seen);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
};

}  // namespace ranklm::kern
