// The distributed executor: every rank runs its part of the model through its backend
// (runtime/backend.h: its layers, its share of the heads and FFN, the embedding on the first
// stage, its share of the vocabulary on the last) and passes hidden states down the pipeline;
// TP members combine their partial outputs with the ring collectives. Rank 0 (on the first
// stage) drives: it sends each step (runtime/protocol.h: the sequence table and the tokens) to
// every rank and gets the logits, or the sampled tokens, back from the last stage. The other
// ranks serve steps, in order, until told to stop. One rank alone is the same with no messages.
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
#include "runtime/backend.h"
#include "runtime/constraint.h"
#include "runtime/logprobs.h"
#include "runtime/protocol.h"
#include "runtime/sampler.h"

namespace ranklm::runtime {

// Time split of one rank, for the bench report.
struct RankTimes {
  double compute_s = 0;  // inside the model (layers, head, embedding)
  double comm_s = 0;     // waiting for messages: transfers and waiting for other ranks
  int64_t steps = 0;
};

// One sequence of a step: n_tok tokens at positions pos0.. of KV slot `slot`; logits wanted for
// its last n_out tokens (0: none, e.g. a prompt chunk before its end). On the wire as it is.
using SeqStep = proto::SeqEntry;

struct Batch {
  std::vector<SeqStep> seqs;
  std::vector<int32_t> tokens;  // every sequence's tokens, in order
};

class Executor {
 public:
  // n_slots sequences of up to n_ctx positions each, whose KV blocks come from a pool of at most
  // kv_blocks blocks on this rank (0: enough for every slot's whole context).
  Executor(comm::Comm& c, const comm::Layout& layout, Backend& b, int n_slots, int64_t n_ctx, comm::Compression z,
           int64_t kv_blocks = 0);
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
  // `ask`: the log-probabilities the head rank reports for this slot's rows (runtime/logprobs.h).
  // A sampled step may ask a sequence for several rows (a scoring prompt's chunk): rows before
  // the prompt's last position are prompt rows, whose token is the prompt's next one (nothing is
  // sampled); collect_tokens gives one token per row, and in `entries` (when not null) the
  // log-probability entries of the rows their slots asked for, in row order.
  // `grammar_kind` > 0: the head rank masks the slot's sampling rows with the constraint its
  // factory makes of `grammar` (set_constraints); a spec it cannot use ends the request as an
  // error (kBadLogits).
  void setup_slot(int slot, const SamplingParams& sp, const std::vector<int32_t>& prompt, const LogprobAsk& ask = {},
                  int32_t grammar_kind = 0, const std::string& grammar = {});
  // The head rank's maker of constraints (not owned; null: requests with a spec end as errors).
  void set_constraints(ConstraintFactory* f) { constraints_ = f; }
  bool is_head() const { return is_head_; }
  void submit_sampled(const Batch& b);
  void collect_tokens(std::vector<int32_t>& tokens, std::vector<TokenLogprob>* entries = nullptr);
  // submit + collect for one sequence.
  void forward(int slot, const int32_t* tokens, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits);
  // Rank 0 only: on every rank, slot dst gives back its KV blocks and takes slot src's
  // positions 0..n_pos-1 by reference (n_pos 0: dst is emptied). In order with the steps, so
  // positions submitted before are there.
  void share_kv(int dst, int src, int64_t n_pos);
  // KV blocks the scheduler may plan with (the smallest pool of any rank; rank 0 sets it from
  // the ranks' ready messages), and positions per block.
  int64_t kv_budget() const { return kv_budget_; }
  void set_kv_budget(int64_t blocks) { kv_budget_ = blocks; }
  int64_t kv_block_len() const { return b_.info().kv_block_len; }
  bool chunk_invariant() const { return b_.info().chunk_invariant; }
  int64_t kv_window() const { return b_.info().kv_window; }
  KvStats kv_stats() const { return b_.kv_stats(); }
  // Hidden states between pipeline stages as f32 (default) or Q8_0 blocks (a quarter of the
  // bytes over slow links; every rank of the job must use the same).
  void set_hop_payload(comm::Compression z) { hop_z_ = z; }
  // Rank 0 only: every other rank's serve() returns.
  void stop();
  // Ranks other than 0: runs the steps rank 0 sends until it sends stop. Between steps it
  // waits as long as it takes (rank 0 may be reading prompts), or at most idle_limit.
  void serve(std::chrono::milliseconds idle_limit = std::chrono::milliseconds::max());

  int64_t n_vocab() const { return n_vocab_; }
  int64_t n_ctx() const { return n_ctx_; }
  int n_slots() const { return static_cast<int>(slots_.size()); }
  const RankTimes& times() const { return times_; }
  void reset_times();
  // Rank 0 only, with no step in flight: every rank's times (index = rank), each rank's then reset.
  std::vector<RankTimes> gather_times();

 private:
  // Messages this rank has started sending, with the buffers they read from.
  struct Pending {
    std::vector<float> floats;
    std::vector<uint8_t> bytes;  // hidden states as Q8_0 blocks
    std::vector<int32_t> ints;
    proto::Message msg;
    std::vector<comm::Request> reqs;
  };
  struct Flight {
    int64_t n_out = 0;
    int64_t n_entries = 0;  // log-probability records the head rank sends after the tokens
    bool sampled = false;
    std::vector<LogprobWire> entries;  // made here (the head rank is rank 0)
    std::vector<float> local;     // rank 0's own share of the logits (single-stage plans)
    std::vector<int32_t> tokens;  // sampled here (single-stage plans)
  };
  class Collectives;  // the TP group's ring collectives, for the backend
  void check_slots(const proto::StepBody& s) const;
  void send_control(proto::Message m, const std::vector<int>& to);
  void submit_step(const Batch& b, proto::Kind kind);
  void run_step(const proto::Header& h, const proto::StepBody& s, Flight* flight);
  void setup_here(const proto::SlotSetup& s);
  void share_here(const proto::KvShare& k);
  // The head rank: full logits rows from the last stage's shares, one token per row.
  void sample_rows(const proto::Header& h, const proto::StepBody& s, std::vector<float>& own, Flight* flight);
  int32_t sample_constrained(int slot, Sampler& sm, const float* row, const std::vector<int32_t>& hist);
  void reap(size_t keep);
  void drain();  // collects every step in flight

  comm::Comm& c_;
  comm::Layout l_;
  Backend& b_;
  comm::Compression z_;
  comm::Compression hop_z_ = comm::Compression::kNone;
  std::vector<uint8_t> hop_in_;  // Q8_0 hidden states received
  int64_t n_vocab_, n_ctx_;
  int64_t kv_budget_ = 0;
  std::unique_ptr<Collectives> tp_;
  std::vector<KvHandle> slots_;
  std::vector<int> others_;            // every rank but 0 (what rank 0 sends control messages to)
  std::vector<uint8_t> body_;          // a control message's body, kept between steps
  std::vector<SeqRun> runs_;
  std::vector<int64_t> rows_;          // the step's rows that want logits
  std::vector<float> x_;
  std::vector<float> head_out_, full_rows_;  // the head rank's logits share and full rows, kept between steps
  std::deque<Pending> pending_;
  std::deque<Flight> flight_;
  RankTimes times_;
  std::vector<int64_t> vocab_split_;  // offsets of the last stage members' vocabulary shares
  bool is_head_ = false;                          // last stage, TP index 0
  std::vector<std::unique_ptr<Sampler>> samplers_;  // per slot, on the head rank
  std::vector<std::vector<int32_t>> histories_;
  // Per slot, on rank 0 and the head rank: what it asked for and its prompt's length.
  std::vector<LogprobAsk> asks_;
  std::vector<int64_t> n_prompt_;
  // The head rank: each slot's constraint (null: none), or that its spec could not be used.
  ConstraintFactory* constraints_ = nullptr;
  std::vector<std::unique_ptr<TokenConstraint>> slot_constraints_;
  std::vector<char> slot_broken_;
  std::vector<float> masked_;  // a sampling row with its constraint applied
  int64_t count_entries(const std::vector<SeqStep>& seqs) const;
};

}  // namespace ranklm::runtime
