// Continuous batching over the executor (rank 0). Sequences live in KV slots; the slots are
// split into micro-batches (slot % n_micro), and up to n_micro steps are in flight at once so
// every pipeline stage has work. Each step carries, for every ready sequence of its group,
// either the next chunk of its prompt (prefill) or its last sampled token (decode): prefill of
// new prompts interleaves with decode of running ones. A finished sequence's slot is refilled
// from the queue at once; a new prompt that starts like one already in the KV cache shares that
// prefix's blocks (computed once, runtime/backend.h kv_share), waiting for them if the other
// sequence has not run that far yet. Sequences are admitted while the KV blocks they may need
// fit the job's pool (the smallest rank's). The last stage samples (seeded per request: the same tokens whatever
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
  int max_tokens = 16;
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
  int64_t n_prompt = 0;
  int64_t n_cached = 0;         // prompt tokens whose KV came from another sequence (a shared prefix)
  double first_token_s = 0;     // from admission to the first generated token
  double total_s = 0;           // from admission to the end
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

 private:
  class Run;
  Executor& ex_;
  SchedulerOptions o_;
};

}  // namespace ranklm::runtime
