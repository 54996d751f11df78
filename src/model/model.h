// A decoder-only transformer loaded from GGUF: hyperparameters from metadata, weights as views
// into the mapped file (quantized blocks stay quantized), and a forward pass over a batch of
// consecutive tokens that fills a KV cache. Architectures (one file each: arch_*.cpp) describe
// their metadata keys, tensors and variants; this file holds what they share.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/threadpool.h"
#include "model/arch.h"
#include "model/kv_cache.h"

namespace ranklm {

struct LayerWeights {
  std::vector<float> attn_norm;         // [n_embd]
  kern::MatrixView wq, wk, wv, wo;      // [n_head*hd, n_embd], [n_kv*hd, n_embd] x2, [n_embd, n_head*hd]
  std::vector<float> bq, bk, bv;        // biases (empty when the architecture has none)
  std::vector<float> q_norm, k_norm;    // [head_dim] per-head norms (qk_norm)
  std::vector<float> attn_post_norm;    // [n_embd] (post_norms)
  std::vector<float> ffn_norm;          // [n_embd]
  kern::MatrixView w_gate, w_up, w_down;  // [n_ff, n_embd] x2, [n_embd, n_ff]
  std::vector<float> ffn_post_norm;     // [n_embd] (post_norms)
};

// The part of the model one rank runs (docs/ARCHITECTURE.md, execution model): a range of
// layers, its tensor-parallel share of every layer's heads and FFN, and whether it embeds
// and/or applies the output head (its share of the vocabulary). The default is everything.
struct ModelPart {
  int64_t layer_begin = 0, layer_end = -1;  // -1: to the last layer
  bool embed = true;
  bool head = true;
  int64_t n_head = 0, n_head_kv = 0, n_ff = 0;  // this rank's counts; 0: the model's
  bool wo_gather = false;      // attn_output whole here: gather the heads' outputs before it
  // Exact TP (plan/tp_slice.h): attn_output and ffn_down hold rows [out_begin, out_begin +
  // out_rows) of the output; their inputs are gathered whole before them and their outputs
  // gathered after. out_rows 0: every row, no gathers.
  int64_t out_rows = 0;
  // Every TP member's share, in TP order (what the gathers collect): heads' output columns,
  // FFN activations and (exact mode) output rows. Empty on one rank.
  std::vector<int64_t> member_heads, member_ffn, member_rows;
  int64_t vocab_begin = 0, vocab_end = -1;      // output rows this rank computes; -1: all
};

// What a TP gather collects: each member's share of the attention heads' outputs, of the FFN
// activations, or of the output rows of attn_output / ffn_down.
enum class TpGather { kHeads, kFfn, kRows };

// Tensor-parallel collectives the layers call (the backend sets them; unset on one rank).
struct TpHooks {
  // Sums x[0..n) over the TP group (after attention output and FFN down, sum mode).
  std::function<void(float* x, int64_t n)> allreduce;
  // Gathers every member's [n_tok, local] share into [n_tok, full], members' columns in TP
  // order (wo_gather, exact mode).
  std::function<void(const float* local, int64_t n_tok, TpGather what, float* full)> gather;
};

// One sequence's share of a batch: n_tok tokens at positions pos0.. of `cache`.
struct SeqSpan {
  KvCache* cache;
  int64_t pos0, n_tok;
};

class Model {
 public:
  // Loads the architecture named in general.architecture (model/arch.h). The File must outlive the Model.
  // With a part, the file holds only that part's tensors (sliced shapes, GGUF names) and the
  // whole model's metadata (io/shard.h builds such files from shards).
  static std::unique_ptr<Model> load(const gguf::File& file, const ModelPart& part = {});

  const HParams& hparams() const { return hp_; }
  const ModelPart& part() const { return part_; }
  // Pools of at most max_blocks KV blocks each: one for this part's full-attention layers, one
  // for its sliding-window layers (none when it has none).
  KvPools make_pools(int64_t max_blocks) const;
  // One sequence of n_ctx positions with pools of its own (enough blocks for all of them).
  KvCache make_cache(int64_t n_ctx) const;
  // Bytes of one KV block of every layer of this part, and what one sequence of n_ctx positions
  // holds at most when its steps are at most max_step tokens (windowed layers: the window and
  // one step).
  int64_t kv_block_bytes() const;
  int64_t kv_cache_bytes(int64_t n_ctx, int64_t max_step = 512) const;
  // The sliding window of this part's windowed layers (0: it has none).
  int64_t kv_window() const { return n_windowed_ > 0 ? hp_.swa_window : 0; }
  // Whether every weight product gives a token the same bits in a batch or chunk of any size
  // (packed weights and the quantized types do; unpacked float weights take sgemm for long chunks).
  bool chunk_invariant() const;
  // The TP group's collectives (required on a rank whose part is a TP share).
  void set_tp_hooks(TpHooks hooks) { tp_ = std::move(hooks); }

  // The three pieces of forward, for ranks that hold only some of them. x is [n_tok, n_embd].
  void embed(const int32_t* tokens, int64_t n_tok, float* x) const;
  // Runs the part's layers over a batch of sequences: sequence i's n_tok tokens (consecutive
  // rows of x, in the order given) at positions pos0.. of its own cache.
  void run_layers(float* x, const SeqSpan* seqs, int n_seq, kern::ThreadPool& pool);
  void run_layers(float* x, int64_t n_tok, int64_t pos0, KvCache& cache, kern::ThreadPool& pool);
  // Output norm and head for rows[0..n_rows) of x: logits [n_rows, vocab_end - vocab_begin].
  void head(const float* x, const int64_t* rows, int64_t n_rows, float* logits, kern::ThreadPool& pool);

  // Runs tokens[0..n_tok) at positions pos0.. (the cache must hold 0..pos0-1). Writes logits
  // [n_tok, n_vocab] when all_logits, else only the last token's [n_vocab].
  void forward(const int32_t* tokens, int64_t n_tok, int64_t pos0, KvCache& cache,
               bool all_logits, float* logits, kern::ThreadPool& pool);

  // The loader fills these.
  HParams hp_;
  ModelPart part_;
  kern::MatrixView tok_embd{};
  kern::MatrixView output{};
  std::vector<float> output_norm;
  std::vector<float> rope_freq_factors;
  std::vector<LayerWeights> layers;

 private:
  // Repacks weight matrices for the active instruction set (kern::pack_matrix) and releases
  // the file pages they came from.
  void pack_weights(const gguf::File& f);

  // Loads the part's tensors (the architecture's, model/arch.h) from f.
  void load_weights(const gguf::File& f);
  void product(const kern::MatrixView& w, const float* in, float* out, const SeqSpan* seqs, int n_seq, int64_t n_tok,
               kern::ThreadPool& pool);
  void out_product(const kern::MatrixView& w, const float* in, bool reduce, const SeqSpan* seqs, int n_seq, int64_t n_tok,
                   kern::ThreadPool& pool);
  void layer_forward(int64_t il, float* x, const SeqSpan* seqs, int n_seq, int64_t n_tok, kern::ThreadPool& pool);
  void attend(int64_t il, const float* q, const float* k, const float* v, const SeqSpan* seqs, int n_seq, float* attn,
              kern::ThreadPool& pool);
  std::vector<uint8_t> scratch_;
  TpHooks tp_;
  // Activation buffers of layer_forward, kept between calls (grown, never shrunk) so a batch
  // does not allocate and fault in fresh pages in every layer.
  struct Buffers {
    std::vector<float> cur, q, k, v, attn, attn_full, gate, up, ffn_full, rows;
    std::vector<int32_t> pos;
    std::vector<const uint16_t*> kv_rows;  // every sequence's K then V block pointers, one layer
    std::vector<kern::AttnSeq> attn_seqs;
  } buf_;
  std::vector<std::vector<uint8_t>> packed_;  // storage of repacked matrices
  // Each part layer's place in its KV pool: windowed layers in one, the others in the other.
  std::vector<int64_t> kv_slot_;
  int64_t n_windowed_ = 0;
};

// ---- helpers of the loader ----
// A 2-D weight [rows, cols] checked against the expected shape; names the tensor on mismatch.
kern::MatrixView matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols);
// A 1-D tensor of n elements as floats (any supported type).
std::vector<float> vector_f32(const gguf::File& f, const std::string& name, int64_t n);

}  // namespace ranklm
