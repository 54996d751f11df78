// The distributed executor: every rank runs its part of the model (its layers, its share of
// the heads and FFN, the embedding on the first stage, its share of the vocabulary on the last)
// and passes hidden states down the pipeline; TP members sum their partial outputs with the
// ring allreduce. Rank 0 drives: it sends each step's description to every rank and the
// tokens to the first stage, and gets the logits back from the last stage. The other ranks
// serve steps until told to stop. Sequences live in KV-cache slots (one cache per slot on
// every rank, for that rank's layers and KV heads).
//
//   rank 0:  forward(slot, tokens, ...) ... forward(...) stop()
//   others:  serve()
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "comm/layout.h"
#include "comm/ring.h"
#include "io/gguf.h"
#include "kernels/threadpool.h"
#include "model/model.h"
#include "plan/plan.h"

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

class Executor {
 public:
  Executor(comm::Comm& c, const comm::Layout& layout, Model& m, kern::ThreadPool& pool, int n_slots,
           int64_t n_ctx, comm::Compression z);

  // Rank 0 only. Runs tokens[0..n_tok) of slot `slot` at positions pos0.. through every rank;
  // fills logits [n_out, n_vocab] for the last n_out tokens.
  void forward(int slot, const int32_t* tokens, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits);
  // Rank 0 only: every other rank's serve() returns.
  void stop();
  // Ranks other than 0: runs the steps rank 0 sends until it sends stop. Between steps it
  // waits as long as it takes (rank 0 may be reading prompts), or at most idle_limit.
  void serve(std::chrono::milliseconds idle_limit = std::chrono::milliseconds::max());

  int64_t n_vocab() const { return n_vocab_; }
  int64_t n_ctx() const { return n_ctx_; }
  const RankTimes& times() const { return times_; }
  void reset_times();

 private:
  struct Step {
    int32_t kind;  // 0 stop, 1 forward
    int32_t slot, n_tok, pos0, n_out;
  };
  void run_step(const Step& s, const int32_t* tokens, float* logits);

  comm::Comm& c_;
  comm::Layout l_;
  Model& m_;
  kern::ThreadPool& pool_;
  comm::Compression z_;
  int64_t n_vocab_, n_ctx_;
  std::vector<KvCache> caches_;
  std::vector<float> x_, logits_part_, gathered_;
  std::vector<int32_t> tokens_;
  comm::RingBuffers ring_;
  std::vector<int64_t> vocab_split_;  // offsets of the last stage members' vocabulary shares
  RankTimes times_;
};

}  // namespace ranklm::runtime
