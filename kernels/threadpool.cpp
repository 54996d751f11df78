#include "threadpool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RL_PAUSE() _mm_pause()
#else
#define RL_PAUSE() std::this_thread::yield()
#endif

namespace ranklm::kern {

namespace {
constexpr int kSpinRounds = 1 << 11;

inline void chunk(int64_t n, int parts, int index, int64_t& b, int64_t& e) {
  b = n * index / parts;
  e = n * (index + 1) / parts;
}
}  // namespace

ThreadPool::ThreadPool(int n_threads, const StartFn& on_start) : n_threads_(std::max(1, n_threads)) {
  if (on_start) on_start(0);
  // Workers start only after every member is set; each copies on_start before this returns.
  std::atomic<int> started{0};
  for (int i = 1; i < n_threads_; ++i) {
    workers_.emplace_back([this, i, &on_start, &started] {
      const StartFn f = on_start;
      started.fetch_add(1);
      worker(i, f);
    });
  }
  while (started.load() != n_threads_ - 1) std::this_thread::yield();
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lk(mu_);
    wake_.notify_all();
  }
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n == 1) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  // seq_cst pairs with the sleeper count: either a worker going to sleep sees the new
  // generation, or this thread sees it asleep and wakes it (under the mutex, so the wake-up
  // cannot fall between its check and its wait).
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lk(mu_);
    wake_.notify_all();
  }
  int64_t b, e;
  chunk(n, n_threads_, 0, b, e);
  if (b < e) fn(b, e, 0);
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kSpinRounds) {
      RL_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
}

bool ThreadPool::wait_for_generation(uint64_t seen) {
  for (int i = 0; i < kSpinRounds; ++i) {
    if (generation_.load(std::memory_order_acquire) != seen) return !stop_.load();
    RL_PAUSE();
  }
  std::unique_lock<std::mutex> lk(mu_);
  sleepers_.fetch_add(1);
  wake_.wait(lk, [&] { return generation_.load() != seen; });
  sleepers_.fetch_sub(1);
  return !stop_.load();
}

void ThreadPool::worker(int index, const StartFn& on_start) {
  if (on_start) on_start(index);
  uint64_t seen = 0;
  while (wait_for_generation(seen)) {
    seen = generation_.load(std::memory_order_acquire);
    int64_t b, e;
    chunk(job_n_, n_threads_, index, b, e);
    if (b < e) (*job_)(b, e, index);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

}  // namespace ranklm::kern
