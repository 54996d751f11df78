// The distributed executor: every rank runs its part of the model (its layers, its share of
// the heads and FFN, the embedding on the first stage, its share of the vocabulary on the last)
// and passes hidden states down the pipeline; TP members sum their partial outputs with the
// ring allreduce. Rank 0 (on the first stage) drives: it sends each step's description to
// every rank and the tokens to the first stage, and gets the logits back from the last stage.
// The other ranks serve steps, in order, until told to stop.
//
// A step is a batch of sequences (each in its own KV-cache slot, at its own positions, prefill
// and decode mixed). Steps are pipelined: submit() returns once rank 0 has done its own part,
// so with several steps in flight (micro-batches) every stage works at once; collect() returns
// the logits of the oldest step.
//
//   rank 0:  submit(a) submit(b) collect(a) submit(c) collect(b) ... stop()
//   others:  serve()
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "comm/layout.h"
#include "comm/ring.h"
#include "io/gguf.h"
#include "kernels/threadpool.h"
#include "model/model.h"
#include "plan/plan.h"
#include "runtime/sampler.h"

namespace ranklm::runtime {

// What rank `rank` of plan `p` runs. `model` is the whole model's header (for the slicing
// shape); n_vocab is split evenly over the last stage's TP group.
ModelPart model_part(const plan::Plan& p, int rank, const gguf::File& model);

// Time split of one rank, for the bench report.
struct RankTimes {
  double compute_s = 0;  // inside the model (layers, head, embedding)
  double comm_s = 0;     // waiting for messages: transfers and waiting for other ranks
  int64_t steps = 0;
};

// One sequence of a step: n_tok tokens at positions pos0.. of KV slot `slot`; logits wanted for
// its last n_out tokens (0: none, e.g. a prompt chunk before its end).
struct SeqStep {
  int32_t slot, pos0, n_tok, n_out;
};

struct Batch {
  std::vector<SeqStep> seqs;
  std::vector<int32_t> tokens;  // every sequence's tokens, in order
};

class Executor {
 public:
  Executor(comm::Comm& c, const comm::Layout& layout, Model& m, kern::ThreadPool& pool, int n_slots,
           int64_t n_ctx, comm::Compression z);
  ~Executor();

  // Rank 0 only. Starts a step; returns once this rank's part is done (the rest runs on).
  void submit(const Batch& b);
  // Rank 0 only. Logits [sum of n_out, n_vocab] of the oldest step not yet collected, rows in
  // sequence order.
  void collect(std::vector<float>& logits);
  int in_flight() const { return static_cast<int>(flight_.size()); }

  // Sampling on the last stage (the "head" rank: its TP index 0), so only token ids travel back:
  // setup_slot starts a new request in a slot (its sampler and its history, the prompt, for the
  // repetition penalty); submit_sampled runs a step whose sequences ask for 0 or 1 logits rows,
  // and the head rank samples one token for each that asks; collect_tokens returns those of the
  // oldest step, in sequence order. Rank 0 only.
  void setup_slot(int slot, const SamplingParams& sp, const std::vector<int32_t>& prompt);
  void submit_sampled(const Batch& b);
  void collect_tokens(std::vector<int32_t>& tokens);
  // submit + collect for one sequence.
  void forward(int slot, const int32_t* tokens, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits);
  // Rank 0 only: every other rank's serve() returns.
  void stop();
  // Ranks other than 0: runs the steps rank 0 sends until it sends stop. Between steps it
  // waits as long as it takes (rank 0 may be reading prompts), or at most idle_limit.
  void serve(std::chrono::milliseconds idle_limit = std::chrono::milliseconds::max());

  int64_t n_vocab() const { return n_vocab_; }
  int64_t n_ctx() const { return n_ctx_; }
  int n_slots() const { return static_cast<int>(caches_.size()); }
  const RankTimes& times() const { return times_; }
  void reset_times();
  // Rank 0 only, with no step in flight: every rank's times (index = rank), each rank's then reset.
  std::vector<RankTimes> gather_times();

 private:
  struct Header {
    int32_t kind;  // 0 stop, 1 step (logits to rank 0), 2 report times, 3 slot setup, 4 step (sampled)
    int32_t n_seq, n_tok, n_out;
  };
  // Messages this rank has started sending, with the buffers they read from.
  struct Pending {
    std::vector<float> floats;
    std::vector<int32_t> ints;
    std::vector<comm::Request> reqs;
  };
  struct Flight {
    int64_t n_out = 0;
    bool sampled = false;
    std::vector<float> local;     // rank 0's own share of the logits (single-stage plans)
    std::vector<int32_t> tokens;  // sampled here (single-stage plans)
  };
  void check_batch(const Header& h, const std::vector<SeqStep>& seqs) const;
  void submit_step(const Batch& b, int kind);
  void run_step(const Header& h, const std::vector<SeqStep>& seqs, const int32_t* tokens, Flight* flight);
  void setup_here(int slot, const SamplingParams& sp, const int32_t* prompt, int64_t n);
  // The head rank: full logits rows from the last stage's shares, one token per row.
  void sample_rows(const Header& h, const std::vector<SeqStep>& seqs, std::vector<float>& own, Flight* flight);
  void reap(size_t keep);
  void drain();  // collects every step in flight

  comm::Comm& c_;
  comm::Layout l_;
  Model& m_;
  kern::ThreadPool& pool_;
  comm::Compression z_;
  int64_t n_vocab_, n_ctx_;
  std::vector<KvCache> caches_;
  std::vector<float> x_, gathered_;
  std::vector<int32_t> tokens_;
  comm::RingBuffers ring_;
  std::vector<int64_t> vocab_split_;  // offsets of the last stage members' vocabulary shares
  std::deque<Pending> pending_;
  std::deque<Flight> flight_;
  RankTimes times_;
  bool is_head_ = false;                          // last stage, TP index 0
  std::vector<std::unique_ptr<Sampler>> samplers_;  // per slot, on the head rank
  std::vector<std::vector<int32_t>> histories_;
};

}  // namespace ranklm::runtime
