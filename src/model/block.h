// The blocks a decoder layer is made of (docs/ARCHITECTURE.md, "Blocks"). An architecture
// declares a layer's blocks in order (model/arch.h, layer_blocks): an attention block (full or
// sliding-window), then a dense gated FFN or a mixture-of-experts FFN. Each block loads and owns
// its weights (its tensor-parallel or expert-parallel share of them), and its forward reads and
// updates the residual stream x [n_tok, n_embd] of a batched step.
//
// A block never calls a weight kernel itself: it asks BlockOps for its products, element-wise
// steps and the group's collectives. BlockOps is the seam a device backend implements (kernels,
// not the decoder); the CPU one is model/block_ops.cpp.
//
// Adding a block kind: one block_<kind>.cpp with its make_ function below, its BlockKind, and
// its kernels.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "io/gguf.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/threadpool.h"
#include "model/arch.h"
#include "model/kv_cache.h"

namespace ranklm {

// The part of the model one rank runs (docs/ARCHITECTURE.md, execution model): a range of
// layers, its tensor-parallel share of every layer's heads and FFN (or, in MoE layers, its
// share of the experts), and whether it embeds and/or applies the output head (its share of
// the vocabulary). The default is everything.
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
  // Expert parallelism (MoE layers): the experts [expert_begin, expert_end) held here (-1: to
  // the last), and every member's count in group order (empty: no expert split). exact_moe:
  // the members' expert outputs are gathered and summed in the one-rank order (bit-identical);
  // otherwise each member's weighted partial sum is all-reduced.
  int64_t expert_begin = 0, expert_end = -1;
  std::vector<int64_t> member_experts;
  bool exact_moe = true;
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
  // Concatenates every member's counts[i] floats (this member's: `mine`) in group order.
  std::function<void(const float* mine, const std::vector<int64_t>& counts, float* out)> gather_counts;
};

// One sequence's share of a batch: n_tok tokens at positions pos0.. of `cache`.
struct SeqSpan {
  KvCache* cache;
  int64_t pos0, n_tok;
};

// One batched step as a block sees it: the sequences, the tokens' positions, the thread pool.
struct Step {
  const SeqSpan* seqs;
  int n_seq;
  int64_t n_tok;
  const int32_t* pos;
  kern::ThreadPool& pool;
};

// What the blocks ask for (CPU implementation in block_ops.cpp).
class BlockOps {
 public:
  BlockOps(const HParams& hp, const ModelPart& pt) : hp_(hp), pt_(pt) {}
  const HParams& hp() const { return hp_; }
  const ModelPart& part() const { return pt_; }
  const TpHooks& tp() const { return tp_; }
  void set_tp(TpHooks hooks) { tp_ = std::move(hooks); }

  // Activation buffers shared by every layer, kept between steps (grown, never shrunk), so a
  // batch does not allocate and fault in fresh pages in every layer.
  enum Buf { kCur, kQ, kK, kV, kAttn, kAttnFull, kGate, kUp, kFfnFull, kRows, kRouter, kRouteW, kExpIn, kExpOut, kExpAll, kBufCount };
  float* buf(Buf b, int64_t n);
  std::vector<int32_t>& ints(int slot, int64_t n);  // integer scratch, slots 0..7

  // out [n_tok, w.rows] = in [n_tok, w.cols] x W^T for the step's tokens. Float weights take
  // OpenBLAS sgemm for 16+ tokens, in another summation order, so they go sequence by sequence:
  // a sequence's bits then depend only on its own chunk. The other types give the same bits for
  // a token in any batch.
  void product(const kern::MatrixView& w, const float* in, float* out, const Step& s);
  // Several products in one pass over the pool (kern::matmul_grouped): each output the bits a
  // lone product of its rows gives it (the same as `product` for the per-token-exact types).
  void products(const std::vector<kern::MatmulJob>& jobs, kern::ThreadPool& pool);
  // n rows, each with the bits it gets alone whatever n is (float weights in groups small enough
  // for the per-token kernels): for products whose result picks a path, such as an MoE router.
  void product_per_token(const kern::MatrixView& w, const float* in, int64_t n, float* out, kern::ThreadPool& pool);
  // The output of attn_output or ffn_down into `out` [n_tok, n_embd], whole on every TP member:
  // this member's rows then a gather (exact TP), a partial sum then an all-reduce (sum TP, when
  // `reduce`), or the whole product.
  void out_product(const kern::MatrixView& w, const float* in, bool reduce, const Step& s, float* out);
  // Element-wise work split over tokens like the products (one token runs inline).
  void per_token(const Step& s, const std::function<void(int64_t, int64_t)>& f);
  // RMS norm of n_per_tok rows of `width` per token, from `in` into `out` (may be the same).
  void norm(const Step& s, const float* in, const std::vector<float>& w, int64_t n_per_tok, int64_t width, float* out);
  // x += y over [n_tok, n_embd].
  void add_residual(const Step& s, float* x, const float* y);
  // y[t] += b for each of the step's tokens (a bias of b.size(); none when empty).
  void add_bias(const Step& s, float* y, const std::vector<float>& b);
  // RoPE over n_head heads of head_dim per token, at the step's positions; then, when scale is
  // not 0, every element multiplied by it (queries pre-scaled as Gemma does).
  void rope(const Step& s, float* x, int64_t n_head, int64_t head_dim, const kern::RopeParams& rp, float scale = 0);
  // g = act(g) * u over n rows of width (SiLU or GELU-tanh gating), split over the pool.
  void gate(kern::ThreadPool& pool, float* g, const float* u, int64_t n, int64_t width, FfnAct act);
  // Attention of every sequence over its own paged KV (kern::attention_batch).
  void attention(const kern::AttnSeq* seqs, int n_seq, int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale,
                 kern::ThreadPool& pool, int64_t window);

 private:
  const HParams& hp_;
  const ModelPart& pt_;
  TpHooks tp_;
  std::vector<uint8_t> scratch_;
  std::vector<float> bufs_[kBufCount];
  std::vector<int32_t> ints_[8];
};

class Block {
 public:
  virtual ~Block() = default;
  virtual void forward(BlockOps& ops, const Step& s, float* x) = 0;
  // Every weight matrix the block holds (for packing).
  virtual void for_each_matrix(const std::function<void(kern::MatrixView&)>& fn) = 0;
  // Whether a token's results are the same bits in a batch or chunk of any size.
  virtual bool chunk_invariant() = 0;
};

// What a block's loader reads: the (part's) file, the model, the rank's part and the layer.
struct BlockInit {
  const gguf::File& f;
  const HParams& hp;
  const ModelPart& pt;
  int64_t il;                               // the model's layer index
  const std::vector<float>& rope_freq_factors;
  int64_t kv_slot;                          // the layer's index in its KV pool
};

std::unique_ptr<Block> make_attention_block(const BlockInit& in);  // block_attention.cpp
std::unique_ptr<Block> make_dense_ffn_block(const BlockInit& in);  // block_ffn.cpp
std::unique_ptr<Block> make_moe_ffn_block(const BlockInit& in);    // block_moe.cpp

// ---- helpers of the loaders ----
// A 2-D weight [rows, cols] checked against the expected shape; names the tensor on mismatch.
kern::MatrixView matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols);
// A 1-D tensor of n elements as floats (any supported type).
std::vector<float> vector_f32(const gguf::File& f, const std::string& name, int64_t n);
// Whether kern::matmul gives a token's outputs the same bits in a batch of any size (true for
// packed views and the quantized types; unpacked float weights switch to sgemm for large batches).
bool per_token_exact(const kern::MatrixView& w);
// Whether every one of `ws` is (a block's chunk_invariant).
bool all_per_token_exact(std::initializer_list<const kern::MatrixView*> ws);

}  // namespace ranklm
