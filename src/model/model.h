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
#include "model/block.h"
#include "model/kv_cache.h"

namespace ranklm {

class Model {
 public:
  Model() = default;
  Model(const Model&) = delete;  // the blocks' ops refer to the model's hyperparameters and part
  Model& operator=(const Model&) = delete;
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
  void set_tp_hooks(TpHooks hooks) { ops_.set_tp(std::move(hooks)); }

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

 private:
  // Repacks weight matrices for the active instruction set (kern::pack_matrix) and releases
  // the file pages they came from.
  void pack_weights(const gguf::File& f);

  // Loads the part's tensors (the architecture's blocks, model/arch.h) from f.
  void load_weights(const gguf::File& f);
  BlockOps ops_{hp_, part_};
  // Every layer of the part: its blocks in order (model/block.h).
  std::vector<std::vector<std::unique_ptr<Block>>> layers_;
  std::vector<int32_t> pos_;  // the step's token positions
  std::vector<uint8_t> scratch_;  // the head's converted activations
  std::vector<std::vector<uint8_t>> packed_;  // storage of repacked matrices
  int64_t n_windowed_ = 0;
};

}  // namespace ranklm
