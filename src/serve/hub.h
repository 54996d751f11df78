// The meeting point of the HTTP threads and the scheduler (ranklm serve, rank 0). Each request
// becomes a Job: an HTTP thread queues it (refused when the queue is full or the server is
// closing) and waits on it; the scheduler's thread takes it through the runtime::Source
// interface, runs it with every other request in flight, and fills in its text as tokens come
// and its end. A client that leaves marks its job cancelled and the scheduler ends the sequence
// at the next pass, freeing its slot and KV blocks. Nothing here calls MPI: only the scheduler's
// thread (the main thread) talks to the other ranks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "batch/prompts.h"
#include "runtime/executor.h"
#include "runtime/scheduler.h"
#include "tokenizer/stop.h"
#include "tokenizer/tokenizer.h"

namespace ranklm::serve {

// What ends a job other than its own tokens.
enum class JobEnd { kNone, kDone, kCancelled, kFailed };

struct Job {
  Job(const Tokenizer& tok, std::vector<std::string> stops) : text_stream(tok, std::move(stops)) {}

  int64_t id = 0;
  std::string public_id;  // "chatcmpl-…" / "cmpl-…": random, unique across requests and restarts
  int64_t created = 0;    // Unix time the request arrived
  batch::Endpoint endpoint = batch::Endpoint::kCompletion;
  batch::StreamOptions stream;
  runtime::Request req;  // prompt ids, limits, sampling; the scheduler gets a copy

  // Filled by the scheduler's thread, read by the job's HTTP thread; guarded by m.
  std::mutex m;
  std::condition_variable cv;
  std::string text;           // the completion so far (whole UTF-8 characters, stop strings cut)
  JobEnd end = JobEnd::kNone;
  std::string finish_reason;  // "stop" or "length" (kDone)
  int status = 200;           // kFailed: the HTTP status and message to answer with
  std::string error, error_type;
  int64_t n_prompt = 0, n_cached = 0, n_completion = 0;
  double first_token_s = 0, total_s = 0;
  std::vector<int32_t> tokens;  // generated, once done
  std::vector<runtime::TokenLogprob> logprobs, prompt_logprobs;  // when asked, once done
  std::shared_ptr<const batch::PromptItem> item;  // the request it answers (one of its choices)
  size_t choice = 0;

  std::atomic<bool> client_gone{false};

  // The scheduler's thread only.
  TextStream text_stream;
};

// Counters for /metrics.
struct RankSeconds {
  double compute_s = 0, comm_s = 0;
};
struct Metrics {
  std::map<int, int64_t> requests;  // by HTTP status
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  int64_t cancelled = 0;
  int queued = 0, slots_in_use = 0, slots = 0, waiting_for_kv = 0;
  int64_t kv_blocks_in_use = 0, kv_blocks = 0;
  std::vector<RankSeconds> ranks;  // index = rank; totals since start
};

struct HubLimits {
  int max_queue = 64;  // requests waiting for a slot beyond which new ones get 429
  std::chrono::milliseconds grace{30000};  // after close(): how long running requests may finish
};

class Hub : public runtime::Source {
 public:
  explicit Hub(const HubLimits& limits) : limits_(limits) {}
  // The executor, once the model is loaded (metrics come from it).
  void attach(runtime::Executor* ex);
  // A flag set from a signal handler: when it is up, the scheduler's thread closes the hub.
  void set_stop_flag(const std::atomic<bool>* f) { stop_flag_ = f; }
  // A flag set with the stop flag when the launcher itself started the stop (Ctrl-C under
  // mpirun): it kills the job `window` later, so running requests get at most that long and
  // then end with 503 (a stream with its error event) while they still can.
  void set_launcher_stop(const std::atomic<bool>* f, std::chrono::milliseconds window) {
    launcher_stop_ = f;
    launcher_window_ = window;
  }

  // --- HTTP threads ---
  enum class Admit { kQueued, kFull, kClosed };
  Admit submit(const std::shared_ptr<Job>& job);
  // The client left: the job ends at the scheduler's next pass (no answer is sent).
  void client_left(Job& job);
  // A copy of the counters; with ranks, first waits (up to `wait`) for the scheduler to gather
  // every rank's compute and communication seconds at a point where no step is in flight.
  Metrics metrics(std::chrono::milliseconds wait);
  void count_status(int status);
  bool closing() const { return closing_.load(); }

  // --- any thread ---
  // Stops taking requests: queued ones are answered 503 at once, running ones get the grace
  // period, then end with 503 too.
  void close(const std::string& why);
  // Every job not yet ended ends with `status` and `why` (a rank failed), and the hub closes.
  void fail_all(int status, const std::string& why);
  // After a stop signal, whether the scheduler has stopped making progress with requests in
  // flight (no pass for max(500 ms, 3 x the longest recent step)): the other ranks are gone
  // (under mpirun a rank's death reaches rank 0 as SIGTERM, and SIGKILL follows 1 s later).
  // If so, every job ends with 503 now. Called by the waiting HTTP threads.
  void check_stall();
  // Jobs whose HTTP thread has not yet seen their end.
  int unanswered() const;
  void answered();

  // --- the scheduler's thread (runtime::Source) ---
  std::optional<runtime::Request> next() override;
  bool open() const override { return !closing_.load(); }
  void wait() override;
  bool cancelled(int64_t id) override;
  void done(runtime::Finished&& f) override;
  void reject(const runtime::Request& r, const std::string& why) override;
  bool want_drain() override;
  void drained() override;
  void load(int slots_in_use, int waiting) override;

  // Called for every token on the scheduler's thread (the Request's stop hook).
  bool on_token(Job& job, const std::vector<int32_t>& out);

 private:
  void end_job(Job& job, JobEnd end, int status, const std::string& type, const std::string& why);

  runtime::Executor* ex_ = nullptr;
  HubLimits limits_;
  mutable std::mutex m_;
  std::condition_variable cv_;            // the scheduler's wait: a job queued, a metrics request, close
  std::condition_variable times_cv_;      // metrics waiters: the ranks' times gathered
  std::deque<std::shared_ptr<Job>> queue_;
  std::map<int64_t, std::shared_ptr<Job>> running_;  // taken by the scheduler, not ended
  std::atomic<bool> closing_{false};
  std::chrono::steady_clock::time_point close_at_;
  std::string close_why_;
  std::atomic<bool> want_times_{false};
  std::atomic<int64_t> last_pass_ns_{0};  // steady clock of the scheduler's last pass
  std::atomic<int64_t> max_gap_ns_{0};    // the longest recent time between passes (decaying)
  const std::atomic<bool>* stop_flag_ = nullptr;
  const std::atomic<bool>* launcher_stop_ = nullptr;
  std::chrono::milliseconds launcher_window_{0};
  std::chrono::milliseconds grace() const {
    return launcher_stop_ && launcher_stop_->load() ? std::min(limits_.grace, launcher_window_) : limits_.grace;
  }
  int64_t times_epoch_ = 0;
  int unanswered_ = 0;
  Metrics metrics_;
};

}  // namespace ranklm::serve
