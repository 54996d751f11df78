// Continuous batching over the executor (rank 0). Sequences live in KV slots; the slots are
// split into micro-batches (slot % n_micro), and up to n_micro steps are in flight at once so
// every pipeline stage has work. Each step carries, for every ready sequence of its group,
// either the next chunk of its prompt (prefill) or its last sampled token (decode): prefill of
// new prompts interleaves with decode of running ones. A finished sequence's slot is refilled
// from the queue at once; a new prompt that starts like one already in the KV cache shares that
// prefix's blocks (computed once, runtime/backend.h kv_share), waiting for them if the other
// sequence has not run that far yet. Sequences are admitted while the KV blocks they may need
// fit the job's pool (the smallest rank's). A scoring request (prompt log-probabilities) asks
// for every row of its prompt chunks and shares a prefix only with a sequence whose prompt
// entries cover it (copied, so its prefix still runs once). The last stage samples (seeded per request: the same tokens whatever
// the layout); only token ids come back to rank 0.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/executor.h"
#include "runtime/sampler.h"

namespace ranklm::runtime {

struct Request {
  int64_t id = 0;
  std::vector<int32_t> prompt;
  int max_tokens = 16;  // 0: score the prompt only (one prefill, nothing generated)
  LogprobAsk logprobs;  // log-probabilities to report (runtime/logprobs.h)
  int32_t grammar_kind = 0;  // structured output (runtime/constraint.h): 0 none, else its spec
  std::string grammar;
  SamplingParams sampling;
  std::vector<int32_t> end_tokens;  // any of these ends the sequence (finish reason "stop")
  // Optional: called with the tokens generated so far after each one; true ends the sequence
  // (finish reason "stop"), e.g. for stop strings.
  std::function<bool(const std::vector<int32_t>&)> stop;
};

struct Finished {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // generated, the end token excluded
  std::string finish_reason;    // "stop", "length", or "error" (the model's logits were NaN)
  std::vector<TokenLogprob> logprobs;         // per generated token, when asked
  std::vector<TokenLogprob> prompt_logprobs;  // per prompt token after the first, when asked
  int64_t n_prompt = 0;
  int64_t n_cached = 0;         // prompt tokens whose KV came from another sequence (a shared prefix)
  double first_token_s = 0;     // from admission to the first generated token
  double total_s = 0;           // from admission to the end
};

// Where a run's requests come from and where their ends go. A batch job's source is closed
// (next() gives nullopt once all are taken); a server's stays open: nullopt then means "none
// now", and wait() blocks until one may have come. Every call is made on the scheduler's thread.
class Source {
 public:
  virtual ~Source() = default;
  // The next request, or nullopt.
  virtual std::optional<Request> next() = 0;
  // Whether requests may still come after next() gave nullopt.
  virtual bool open() const { return false; }
  // Nothing to run and open(): returns once next() may give a request, open() may have
  // changed, or want_drain() may have become true.
  virtual void wait() {}
  // True once request `id` is no longer wanted (its client left): it ends at once (a sequence
  // in a step in flight, when the step comes back) with finish reason "cancelled".
  virtual bool cancelled(int64_t /*id*/) { return false; }
  virtual void done(Finished&& f) = 0;
  // A prompt that cannot fit the context (or is empty): not run.
  virtual void reject(const Request& r, const std::string& why) = 0;
  // While true, no new step starts; once none is in flight, drained() is called (the executor
  // may then gather the ranks' times).
  virtual bool want_drain() { return false; }
  virtual void drained() {}
  // Slots holding a request, and requests taken but waiting for KV blocks; after each change.
  virtual void load(int /*slots_in_use*/, int /*waiting*/) {}
};

struct SchedulerOptions {
  int n_micro = 1;              // steps in flight (the number of pipeline stages is a good value)
  int64_t prefill_chunk = 512;  // prompt tokens per sequence per step
  // A prompt that starts like a sequence already in the KV cache (running, or finished and
  // still held by its slot) takes that prefix's KV blocks by reference instead of computing
  // them again. Off where the backend's results depend on chunking (unpacked float weights).
  bool share_prefixes = true;
};

class Scheduler {
 public:
  Scheduler(Executor& ex, const SchedulerOptions& o);
  // Takes requests from next() (nullopt: no more) while slots are free, runs them to the end,
  // and reports each through done() as it finishes. A prompt that cannot fit the context is
  // reported through reject() and not run.
  void run(const std::function<std::optional<Request>()>& next, const std::function<void(Finished&&)>& done,
           const std::function<void(const Request&, const std::string&)>& reject);
  // The same with a Source; with an open source it returns once the source closes and every
  // request taken has ended.
  void run(Source& src);

 private:
  class Run;
  Executor& ex_;
  SchedulerOptions o_;
};

}  // namespace ranklm::runtime
