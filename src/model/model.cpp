#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "kernels/fp16.h"
#include "util/error.h"

namespace ranklm {

std::unique_ptr<Model> Model::load(const gguf::File& f, const ModelPart& part) {
  auto m = std::make_unique<Model>();
  m->hp_ = read_hparams(f);
  m->part_ = part;
  m->load_weights(f);
  m->pack_weights(f);
  return m;
}

void Model::pack_weights(const gguf::File& f) {
  auto pack = [&](kern::MatrixView& w) {
    std::vector<uint8_t> storage;
    const kern::MatrixView p = kern::pack_matrix(w, storage);
    if (!p.packed) return;
    f.release(w.data, kern::row_bytes(kern::traits(w.type), w.cols) * static_cast<size_t>(w.rows));
    packed_.push_back(std::move(storage));
    w = p;
  };
  if (tok_embd.data) pack(tok_embd);
  if (hp_.tied_output) {
    output = tok_embd;
  } else if (output.data) {
    pack(output);
  }
  for (auto& layer : layers_) {
    for (auto& block : layer) block->for_each_matrix(pack);
  }
}

namespace {
// K and V of one layer, one block (fp16).
int64_t layer_block_bytes(const ModelPart& pt, const HParams& hp) {
  return kKvBlockLen * pt.n_head_kv * hp.head_dim * 2 * int64_t{sizeof(uint16_t)};
}
}  // namespace

int64_t Model::kv_block_bytes() const { return (part_.layer_end - part_.layer_begin) * layer_block_bytes(part_, hp_); }

int64_t Model::kv_cache_bytes(int64_t n_ctx, int64_t max_step) const {
  const int64_t n_full = part_.layer_end - part_.layer_begin - n_windowed_;
  const int64_t windowed = kv_positions_held(n_ctx, kv_window(), max_step);
  return (n_full * kv_blocks_for(n_ctx) + n_windowed_ * kv_blocks_for(windowed)) * layer_block_bytes(part_, hp_);
}

KvPools Model::make_pools(int64_t max_blocks) const {
  const int64_t kv_dim = part_.n_head_kv * hp_.head_dim;
  const int64_t n_layer = part_.layer_end - part_.layer_begin;
  KvPools p;
  p.full = std::make_shared<KvPool>(n_layer - n_windowed_, kv_dim, max_blocks);
  if (n_windowed_ > 0) {
    p.windowed = std::make_shared<KvPool>(n_windowed_, kv_dim, max_blocks);
    p.window = hp_.swa_window;
  }
  return p;
}

KvCache Model::make_cache(int64_t n_ctx) const { return KvCache(make_pools(std::max<int64_t>(1, kv_blocks_for(n_ctx))), n_ctx); }

namespace {

// Fills the defaults of a part (everything) and checks it against the hyperparameters.
void settle_part(const gguf::File& f, const HParams& hp, ModelPart& pt) {
  if (pt.layer_end < 0) pt.layer_end = hp.n_layer;
  if (pt.n_head == 0) pt.n_head = hp.n_head;
  if (pt.n_head_kv == 0) pt.n_head_kv = hp.n_head_kv;
  if (pt.n_ff == 0) pt.n_ff = hp.n_ff;
  if (pt.out_rows < 0 || pt.out_rows > hp.n_embd || (pt.out_rows > 0 && pt.wo_gather)) {
    fail("{}: this rank's share of output rows ({}) does not fit the model's {}", f.path(), pt.out_rows, hp.n_embd);
  }
  if (pt.layer_begin < 0 || pt.layer_begin > pt.layer_end || pt.layer_end > hp.n_layer) {
    fail("{}: layers [{}, {}) are not a range of the model's {} layers", f.path(), pt.layer_begin, pt.layer_end, hp.n_layer);
  }
  if (pt.n_head < 1 || pt.n_head > hp.n_head || pt.n_head_kv < 1 || pt.n_head_kv > hp.n_head_kv ||
      pt.n_head % pt.n_head_kv != 0 || pt.n_ff < 1 || pt.n_ff > hp.n_ff) {
    fail("{}: this rank's share ({} heads, {} KV heads, FFN {}) does not fit the model ({}, {}, {})", f.path(),
         pt.n_head, pt.n_head_kv, pt.n_ff, hp.n_head, hp.n_head_kv, hp.n_ff);
  }
}

// The vocabulary size, from whichever of the embedding, the head or the tokenizer this file has.
int64_t vocab_size(const gguf::File& f) {
  for (const TensorId id : {TensorId::kTokEmbd, TensorId::kOutput}) {
    if (const gguf::TensorInfo* t = f.find_tensor(tensor_name(id)); t && t->ne.size() == 2) return t->ne[1];
  }
  if (const gguf::Value* v = f.find("tokenizer.ggml.tokens"); v && v->type == gguf::ValueType::ARRAY) {
    return static_cast<int64_t>(v->arr.size());
  }
  return 0;
}

}  // namespace

void Model::load_weights(const gguf::File& f) {
  HParams& hp = hp_;
  ModelPart& pt = part_;
  settle_part(f, hp, pt);
  hp.n_vocab = vocab_size(f);
  const std::string embd_name = tensor_name(TensorId::kTokEmbd);
  // The tokenizer and the embedding must agree: a sampled id past either reads out of bounds.
  if (const gguf::Value* v = f.find("tokenizer.ggml.tokens"); v && v->type == gguf::ValueType::ARRAY) {
    const gguf::TensorInfo* emb = f.find_tensor(embd_name);
    const int64_t n_tok = static_cast<int64_t>(v->arr.size());
    if (emb && emb->ne.size() == 2 && emb->ne[1] != n_tok) {
      fail("{}: the vocabulary has {} tokens (metadata 'tokenizer.ggml.tokens') but tensor '{}' has "
           "{} rows; the file is inconsistent (convert the model again)", f.path(), n_tok, embd_name, emb->ne[1]);
    }
  }
  hp.tied_output = hp.tied_output && (pt.embed || pt.head);
  if (pt.embed || (pt.head && hp.tied_output)) {
    const gguf::TensorInfo& emb = f.tensor(embd_name);
    if (emb.ne.size() != 2 || emb.ne[0] != hp.n_embd) {
      fail("{}: tensor '{}': shape {} (expected [{}, n_vocab])", f.path(), embd_name, emb.shape_string(), hp.n_embd);
    }
    tok_embd = matrix(f, embd_name, hp.n_vocab, hp.n_embd);
  }
  if (pt.head) {
    if (pt.vocab_end < 0) pt.vocab_end = hp.n_vocab;
    if (pt.vocab_begin < 0 || pt.vocab_begin >= pt.vocab_end || pt.vocab_end > hp.n_vocab) {
      fail("{}: vocabulary rows [{}, {}) are not a range of the {} tokens", f.path(), pt.vocab_begin, pt.vocab_end, hp.n_vocab);
    }
    output_norm = vector_f32(f, tensor_name(TensorId::kOutputNorm), hp.n_embd);
    output = hp.tied_output ? tok_embd : matrix(f, tensor_name(TensorId::kOutput), hp.n_vocab, hp.n_embd);
  }
  if (f.find_tensor(tensor_name(TensorId::kRopeFreqs))) {
    rope_freq_factors = vector_f32(f, tensor_name(TensorId::kRopeFreqs), hp.rope.n_dims / 2);
  } else if (hp.llama3_rope) {
    rope_freq_factors = llama3_freq_factors(hp);
  }
  // Windowed layers keep their KV in a pool of their own, given back as the window moves on.
  int64_t n_full = 0;
  for (int64_t il = pt.layer_begin; il < pt.layer_end; ++il) {
    const int64_t kv_slot = hp.windowed(il) ? n_windowed_++ : n_full++;
    const BlockInit in{f, hp, pt, il, rope_freq_factors, kv_slot};
    std::vector<std::unique_ptr<Block>>& layer = layers_.emplace_back();
    for (const BlockKind k : layer_blocks(hp, il)) {
      switch (k) {
        case BlockKind::kAttention: layer.push_back(make_attention_block(in)); break;
        case BlockKind::kDenseFfn: layer.push_back(make_dense_ffn_block(in)); break;
        case BlockKind::kMoeFfn: layer.push_back(make_moe_ffn_block(in)); break;
      }
    }
  }
}

bool Model::chunk_invariant() const {
  for (const auto& layer : layers_) {
    for (const auto& block : layer) {
      if (!block->chunk_invariant()) return false;
    }
  }
  return true;
}

void Model::embed(const int32_t* tokens, int64_t n_tok, float* x) const {
  const HParams& hp = hp_;
  if (!tok_embd.data) fail("this rank holds no embedding (it is not on the first pipeline stage)");
  for (int64_t t = 0; t < n_tok; ++t) {
    if (tokens[t] < 0 || tokens[t] >= hp.n_vocab) {
      fail("token id {} at batch index {} is outside the vocabulary (0..{})", tokens[t], t,
           hp.n_vocab - 1);
    }
    kern::get_row(tok_embd, tokens[t], x + t * hp.n_embd);
    if (hp.embd_scale > 0) {
      for (int64_t i = 0; i < hp.n_embd; ++i) x[t * hp.n_embd + i] *= hp.embd_scale;
    }
  }
}

void Model::run_layers(float* x, const SeqSpan* seqs, int n_seq, kern::ThreadPool& pool) {
  int64_t n_tok = 0;
  for (int s = 0; s < n_seq; ++s) {
    const SeqSpan& sp = seqs[s];
    if (sp.n_tok <= 0) fail("forward: empty sequence in a batch");
    if (sp.pos0 < 0 || sp.pos0 + sp.n_tok > sp.cache->n_ctx) {
      fail("context full: positions {}..{} exceed the context size {}; raise --ctx-size or shorten "
           "the prompt",
           sp.pos0, sp.pos0 + sp.n_tok - 1, sp.cache->n_ctx);
    }
    for (int o = 0; o < s; ++o) {
      if (seqs[o].cache == sp.cache) fail("forward: one KV cache twice in a batch (a bug)");
    }
    n_tok += sp.n_tok;
  }
  // Blocks for the positions this step writes (copies of shared ones), before any layer runs.
  for (int s = 0; s < n_seq; ++s) seqs[s].cache->prepare(seqs[s].pos0, seqs[s].n_tok);
  if (n_tok <= 0) fail("forward: empty batch");
  if (static_cast<int64_t>(pos_.size()) < n_tok) pos_.resize(static_cast<size_t>(n_tok));
  int64_t t = 0;
  for (int s = 0; s < n_seq; ++s) {
    for (int64_t j = 0; j < seqs[s].n_tok; ++j) pos_[static_cast<size_t>(t++)] = static_cast<int32_t>(seqs[s].pos0 + j);
  }
  const Step step{seqs, n_seq, n_tok, pos_.data(), pool};
  for (auto& layer : layers_) {
    for (auto& block : layer) block->forward(ops_, step, x);
  }
}

void Model::run_layers(float* x, int64_t n_tok, int64_t pos0, KvCache& cache, kern::ThreadPool& pool) {
  const SeqSpan one{&cache, pos0, n_tok};
  run_layers(x, &one, 1, pool);
}

namespace {

// A hidden state holding NaN or infinity (damaged weights or hyperparameters) would be hidden
// by the quantized kernels, which turn such activations into ordinary integers: its logits row
// is made NaN, so the sampler reports it instead of picking text from garbage.
void mark_non_finite_rows(const float* normed, int64_t n_rows, int64_t n_embd, float* logits, int64_t n_vocab) {
  for (int64_t i = 0; i < n_rows; ++i) {
    const float* h = normed + i * n_embd;
    float sum = 0;
    for (int64_t k = 0; k < n_embd; ++k) sum += h[k] * 0.0f;  // 0 unless some h[k] is NaN or infinite
    if (sum != 0.0f || std::isnan(sum)) std::fill(logits + i * n_vocab, logits + (i + 1) * n_vocab, std::nanf(""));
  }
}

}  // namespace

void Model::head(const float* x, const int64_t* rows, int64_t n_rows, float* logits, kern::ThreadPool& pool) {
  const HParams& hp = hp_;
  if (!output.data) fail("this rank holds no output head (it is not on the last pipeline stage)");
  std::vector<float> normed(static_cast<size_t>(n_rows * hp.n_embd));
  for (int64_t i = 0; i < n_rows; ++i) {
    kern::rms_norm(x + rows[i] * hp.n_embd, output_norm.data(), 1, hp.n_embd, hp.rms_eps, normed.data() + i * hp.n_embd);
  }
  const kern::MatrixView w = kern::row_range(output, part_.vocab_begin, part_.vocab_end);
  if (!per_token_exact(w)) {
    // One row at a time, so a row's logits do not depend on how many rows are asked (above).
    for (int64_t i = 0; i < n_rows; ++i) {
      kern::matmul(w, normed.data() + i * hp.n_embd, 1, logits + i * w.rows, pool, scratch_);
    }
  } else {
    kern::matmul(w, normed.data(), n_rows, logits, pool, scratch_);
  }
  if (hp.final_softcap > 0) {
    const float c = hp.final_softcap;
    for (int64_t i = 0; i < n_rows * w.rows; ++i) logits[i] = c * std::tanh(logits[i] / c);
  }
  mark_non_finite_rows(normed.data(), n_rows, hp.n_embd, logits, w.rows);
}

void Model::forward(const int32_t* tokens, int64_t n_tok, int64_t pos0, KvCache& cache,
                    bool all_logits, float* logits, kern::ThreadPool& pool) {
  if (n_tok <= 0) fail("forward: empty batch");
  std::vector<float> x(static_cast<size_t>(n_tok * hp_.n_embd));  // [n_tok, n_embd] residual stream
  embed(tokens, n_tok, x.data());
  run_layers(x.data(), n_tok, pos0, cache, pool);
  const int64_t n_out = all_logits ? n_tok : 1;
  std::vector<int64_t> rows(static_cast<size_t>(n_out));
  for (int64_t i = 0; i < n_out; ++i) rows[static_cast<size_t>(i)] = n_tok - n_out + i;
  head(x.data(), rows.data(), n_out, logits, pool);
}

}  // namespace ranklm
