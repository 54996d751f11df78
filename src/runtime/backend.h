// What the executor asks of a rank's part of the model: the seam between the distributed
// runtime (executor, scheduler, step protocol) and the code that computes. The CPU backend
// (src/backend/cpu.h) is the one implementation today; a GPU rank implements the same interface
// and nothing above it changes (docs/ARCHITECTURE.md, "Adding a backend").
//
// Hidden states cross the interface as host float arrays [n_tok, n_embd] (they travel between
// ranks from host memory); the KV storage of every sequence slot lives behind it, named by
// opaque handles, so a backend may keep it in device memory or in pages of its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ranklm::runtime {

// One sequence's KV storage on a backend.
struct KvHandle {
  int32_t id = -1;
  bool valid() const { return id >= 0; }
  bool operator==(const KvHandle&) const = default;
};

// One sequence's share of a step: n_tok tokens (consecutive rows of the step's hidden states)
// at positions pos0.. of its KV storage.
struct SeqRun {
  KvHandle kv;
  int64_t pos0 = 0, n_tok = 0;
};

// The collectives a tensor-parallel group's members call in the middle of a step; the executor
// provides them (ring allreduce and allgather over its communicator). Members call them in the
// same order with the same sizes.
class TpCollectives {
 public:
  virtual ~TpCollectives() = default;
  // Sums x[0..n) over the group, in place.
  virtual void allreduce(float* x, int64_t n) = 0;
  // Member i's block [n_tok, widths[i]] (local, on this member) into full [n_tok, sum of
  // widths], members' columns in group order.
  virtual void allgather_columns(const float* local, int64_t n_tok, const std::vector<int64_t>& widths, float* full) = 0;
};

// What the KV storage of a backend holds now.
struct KvStats {
  int64_t block_bytes = 0;   // one block (block_len positions of this rank's layers)
  int64_t max_blocks = 0;    // the limit set by kv_reserve
  int64_t in_use = 0, peak = 0;  // blocks held now, and at most so far
  int64_t bytes_in_use = 0;      // what the blocks held now take (sliding-window layers hold fewer)
};

struct BackendInfo {
  std::string name;             // "cpu", with its instruction set
  int64_t n_embd = 0;           // hidden-state width
  int64_t n_vocab = 0;          // the whole vocabulary
  int64_t n_ctx_train = 0;
  bool embeds = false;          // runs the embedding (first stage)
  bool has_head = false;        // runs the output head (last stage)
  int64_t vocab_begin = 0, vocab_end = 0;  // logits columns head() writes
  int64_t kv_block_len = 0;     // positions per KV block
  // Whether a token's results are the same bits whatever else is in its step and however its
  // prompt is chunked (false where float weights switch to a blocked product for long chunks):
  // what makes a shared prompt prefix give the same tokens as computing it again.
  bool chunk_invariant = true;
  // The model's sliding window (0: no windowed layers): windowed layers give back KV blocks
  // once a sequence's steps start past them, which limits what a later sequence may share.
  int64_t kv_window = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const BackendInfo& info() const = 0;

  // ---- KV storage: blocks of kv_block_len positions (model/kv_cache.h) ----
  // Bytes of the blocks one sequence of n_ctx positions takes on this backend.
  virtual int64_t kv_bytes(int64_t n_ctx) const = 0;
  // At most max_blocks blocks in use at once (called once, before kv_create).
  virtual void kv_reserve(int64_t max_blocks) = 0;
  // A sequence of up to n_ctx positions; it takes blocks as it is written.
  virtual KvHandle kv_create(int64_t n_ctx) = 0;
  virtual void kv_free(KvHandle kv) = 0;
  // dst gives back its blocks and takes src's positions 0..n_pos-1 by reference (a shared
  // prefix: later writes into a shared block copy it first). With n_pos 0, dst is emptied; with
  // src == dst, dst keeps its own first n_pos positions.
  virtual void kv_share(KvHandle src, KvHandle dst, int64_t n_pos) = 0;
  virtual KvStats kv_stats() const = 0;

  // ---- one step ----
  // The collectives run_layers uses (null on a rank without TP partners); not owned.
  virtual void set_collectives(TpCollectives* c) = 0;
  // tokens[0..n_tok) into x [n_tok, n_embd] (embedding ranks only).
  virtual void embed(const int32_t* tokens, int64_t n_tok, float* x) = 0;
  // This rank's layers over a batch of sequences, x [sum of n_tok, n_embd] in place.
  virtual void run_layers(float* x, const SeqRun* seqs, int n_seq) = 0;
  // Output norm and head for rows[0..n_rows) of x: logits [n_rows, vocab_end - vocab_begin].
  virtual void head(const float* x, const int64_t* rows, int64_t n_rows, float* logits) = 0;
};

}  // namespace ranklm::runtime
