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
  for (LayerWeights& L : layers) {
    for (kern::MatrixView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) pack(*w);
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

kern::MatrixView matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
  const gguf::TensorInfo& t = f.tensor(name);
  if (t.ne.size() != 2 || t.ne[0] != cols || t.ne[1] != rows) {
    fail("{}: tensor '{}': shape {} does not match the metadata (expected [{}, {}])", f.path(),
         name, t.shape_string(), cols, rows);
  }
  if (!kern::traits(t.type).supported) {
    fail("{}: tensor '{}': type {} has no kernels in ranklm (supported: F32, F16, BF16, Q4_0, "
         "Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); requantize the model",
         f.path(), name, kern::type_name(t.type));
  }
  return kern::MatrixView{t.type, t.data, rows, cols};
}

std::vector<float> vector_f32(const gguf::File& f, const std::string& name, int64_t n) {
  const gguf::TensorInfo& t = f.tensor(name);
  if (t.n_elements() != n) {
    fail("{}: tensor '{}': {} elements {} (expected {})", f.path(), name, t.n_elements(),
         t.shape_string(), n);
  }
  const kern::TypeTraits& tt = kern::traits(t.type);
  if (!tt.supported) fail("{}: tensor '{}': type {} not supported", f.path(), name, tt.name);
  std::vector<float> out(static_cast<size_t>(n));
  tt.dequantize(t.data, out.data(), n);
  return out;
}

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
  const int64_t q_dim = pt.n_head * hp.head_dim;
  const int64_t kv_dim = pt.n_head_kv * hp.head_dim;
  const bool exact = pt.out_rows > 0;
  const int64_t wo_cols = pt.wo_gather || exact ? hp.n_head * hp.head_dim : q_dim;
  const int64_t out_rows = exact ? pt.out_rows : hp.n_embd;
  const int64_t down_cols = exact ? hp.n_ff : pt.n_ff;
  layers.resize(static_cast<size_t>(pt.layer_end - pt.layer_begin));
  for (int64_t il = pt.layer_begin; il < pt.layer_end; ++il) {
    auto name = [il](TensorId id) { return tensor_name(id, il); };
    auto vec = [&](TensorId id, int64_t n) { return vector_f32(f, name(id), n); };
    LayerWeights& L = layers[static_cast<size_t>(il - pt.layer_begin)];
    L.attn_norm = vec(TensorId::kAttnNorm, hp.n_embd);
    L.wq = matrix(f, name(TensorId::kAttnQ), q_dim, hp.n_embd);
    L.wk = matrix(f, name(TensorId::kAttnK), kv_dim, hp.n_embd);
    L.wv = matrix(f, name(TensorId::kAttnV), kv_dim, hp.n_embd);
    L.wo = matrix(f, name(TensorId::kAttnOut), out_rows, wo_cols);
    if (hp.qkv_bias) {
      L.bq = vec(TensorId::kAttnQBias, q_dim);
      L.bk = vec(TensorId::kAttnKBias, kv_dim);
      L.bv = vec(TensorId::kAttnVBias, kv_dim);
    }
    if (hp.qk_norm) {
      L.q_norm = vec(TensorId::kAttnQNorm, hp.head_dim);
      L.k_norm = vec(TensorId::kAttnKNorm, hp.head_dim);
    }
    L.ffn_norm = vec(TensorId::kFfnNorm, hp.n_embd);
    L.w_gate = matrix(f, name(TensorId::kFfnGate), pt.n_ff, hp.n_embd);
    L.w_up = matrix(f, name(TensorId::kFfnUp), pt.n_ff, hp.n_embd);
    L.w_down = matrix(f, name(TensorId::kFfnDown), out_rows, down_cols);
    if (hp.post_norms) {
      L.attn_post_norm = vec(TensorId::kAttnPostNorm, hp.n_embd);
      L.ffn_post_norm = vec(TensorId::kFfnPostNorm, hp.n_embd);
    }
  }
  // Windowed layers keep their KV in a pool of their own, given back as the window moves on.
  int64_t n_full = 0;
  for (int64_t il = pt.layer_begin; il < pt.layer_end; ++il) kv_slot_.push_back(hp.windowed(il) ? n_windowed_++ : n_full++);
}

namespace {
void add_bias(float* y, const std::vector<float>& b, int64_t n_tok) {
  if (b.empty()) return;
  const int64_t n = static_cast<int64_t>(b.size());
  for (int64_t t = 0; t < n_tok; ++t) kern::add_inplace(y + t * n, b.data(), n);
}
}  // namespace

namespace {
// Whether kern::matmul gives a token's outputs the same bits in a batch of any size (true for
// packed views and the quantized types; unpacked float weights switch to sgemm for large
// batches).
bool per_token_exact(const kern::MatrixView& w) {
  return w.packed || (w.type != kern::GgmlType::F32 && w.type != kern::GgmlType::F16 && w.type != kern::GgmlType::BF16);
}
}  // namespace

bool Model::chunk_invariant() const {
  for (const LayerWeights& L : layers) {
    for (const kern::MatrixView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
      if (!per_token_exact(*w)) return false;
    }
  }
  return true;
}

// Each sequence's keys and values (rows of k, v) into its cache at its positions, then the
// attention of every sequence over its own cache in one batched call: attn [n_tok, n_head * head_dim].
void Model::attend(int64_t il, const float* q, const float* k, const float* v, const SeqSpan* seqs, int n_seq, float* attn,
                   kern::ThreadPool& pool) {
  const int64_t hd = hp_.head_dim, q_dim = part_.n_head * hd, kv_dim = part_.n_head_kv * hd;
  const bool windowed = hp_.windowed(part_.layer_begin + il);
  const int64_t slot = kv_slot_[static_cast<size_t>(il)];  // the layer's index in its pool
  auto table = [windowed](const KvCache& c) -> const std::vector<int32_t>& { return windowed ? c.windowed_blocks() : c.blocks(); };
  int64_t n_ptr = 0;
  for (int s = 0; s < n_seq; ++s) n_ptr += 2 * static_cast<int64_t>(table(*seqs[s].cache).size());
  buf_.kv_rows.resize(static_cast<size_t>(n_ptr));
  buf_.attn_seqs.resize(static_cast<size_t>(n_seq));
  const uint16_t** ptr = buf_.kv_rows.data();
  int64_t row = 0;  // the sequence's first row in the batch
  for (int s = 0; s < n_seq; row += seqs[s].n_tok, ++s) {
    const SeqSpan& sp = seqs[s];
    KvPool& kp = windowed ? *sp.cache->windowed_pool() : sp.cache->pool();
    const std::vector<int32_t>& blocks = table(*sp.cache);
    for (int64_t t = 0; t < sp.n_tok; ++t) {
      const int64_t p = sp.pos0 + t;
      const int32_t b = blocks[static_cast<size_t>(p / kKvBlockLen)];
      uint16_t* kd = kp.k(b, slot) + (p % kKvBlockLen) * kv_dim;
      uint16_t* vd = kp.v(b, slot) + (p % kKvBlockLen) * kv_dim;
      const float* ks = k + (row + t) * kv_dim;
      const float* vs = v + (row + t) * kv_dim;
      for (int64_t i = 0; i < kv_dim; ++i) {
        kd[i] = kern::fp32_to_fp16(ks[i]);
        vd[i] = kern::fp32_to_fp16(vs[i]);
      }
    }
    const size_t nb = blocks.size();
    for (size_t i = 0; i < nb; ++i) {  // given-back windowed blocks: before every query's window
      ptr[i] = blocks[i] < 0 ? nullptr : kp.k(blocks[i], slot);
      ptr[nb + i] = blocks[i] < 0 ? nullptr : kp.v(blocks[i], slot);
    }
    buf_.attn_seqs[static_cast<size_t>(s)] = {q + row * q_dim, attn + row * q_dim, ptr, ptr + nb, kKvBlockLen, sp.n_tok, sp.pos0};
    ptr += 2 * nb;
  }
  const int64_t window = windowed ? hp_.swa_window : 0;
  kern::attention_batch(buf_.attn_seqs.data(), n_seq, static_cast<int>(part_.n_head), static_cast<int>(part_.n_head_kv),
                        static_cast<int>(hd), hp_.scores_scale(), pool, window);
}

namespace {
template <class V>
V& sized(V& vec, int64_t n) {
  if (static_cast<int64_t>(vec.size()) < n) vec.resize(static_cast<size_t>(n));
  return vec;
}
}  // namespace

// Products of the whole batch. Float weights take OpenBLAS sgemm for 16+ tokens, in another
// summation order than the per-token dot products, so they go sequence by sequence: the path
// (and so every bit of a sequence's result) then depends only on that sequence's own chunk,
// never on what it is batched with. The other types give the same bits for a token in any batch.
void Model::product(const kern::MatrixView& w, const float* in, float* out, const SeqSpan* seqs, int n_seq, int64_t n_tok,
                    kern::ThreadPool& pool) {
  if (per_token_exact(w) || n_seq == 1) return kern::matmul(w, in, n_tok, out, pool, scratch_);
  int64_t row = 0;
  for (int s = 0; s < n_seq; row += seqs[s].n_tok, ++s) {
    kern::matmul(w, in + row * w.cols, seqs[s].n_tok, out + row * w.rows, pool, scratch_);
  }
}

// The output of attn_output or ffn_down (input `in`, [n_tok, w.cols]) into buf_.cur, whole on
// every TP member: this member's rows then a gather (exact TP), or a partial sum then an
// all-reduce (sum TP, when `reduce`), or the whole product (one rank; attn_output replicated).
void Model::out_product(const kern::MatrixView& w, const float* in, bool reduce, const SeqSpan* seqs, int n_seq,
                        int64_t n_tok, kern::ThreadPool& pool) {
  if (part_.out_rows > 0) {
    std::vector<float>& rows = sized(buf_.rows, n_tok * part_.out_rows);
    product(w, in, rows.data(), seqs, n_seq, n_tok, pool);
    tp_.gather(rows.data(), n_tok, TpGather::kRows, buf_.cur.data());
    return;
  }
  product(w, in, buf_.cur.data(), seqs, n_seq, n_tok, pool);
  if (tp_.allreduce && reduce) tp_.allreduce(buf_.cur.data(), n_tok * hp_.n_embd);
}

void Model::layer_forward(int64_t il, float* x, const SeqSpan* seqs, int n_seq, int64_t n_tok,
                          kern::ThreadPool& pool) {
  const HParams& hp = hp_;
  const ModelPart& pt = part_;
  const LayerWeights& L = layers[static_cast<size_t>(il)];  // il: this part's layer index
  const int64_t global_il = pt.layer_begin + il;
  const int64_t n_embd = hp.n_embd, hd = hp.head_dim;
  const int64_t n_head = pt.n_head, n_head_kv = pt.n_head_kv, n_ff = pt.n_ff;
  const int64_t q_dim = n_head * hd, kv_dim = n_head_kv * hd;

  std::vector<float>& cur = sized(buf_.cur, n_tok * n_embd);  // [n_tok, n_embd]
  std::vector<float>& q = sized(buf_.q, n_tok * q_dim);
  std::vector<float>& k = sized(buf_.k, n_tok * kv_dim);
  std::vector<float>& v = sized(buf_.v, n_tok * kv_dim);
  std::vector<float>& attn = sized(buf_.attn, n_tok * q_dim);  // [n_tok, q_dim]
  std::vector<int32_t>& pos = sized(buf_.pos, n_tok);
  {
    int64_t t = 0;
    for (int s = 0; s < n_seq; ++s) {
      for (int64_t j = 0; j < seqs[s].n_tok; ++j) pos[t++] = static_cast<int32_t>(seqs[s].pos0 + j);
    }
  }

  // Element-wise steps split over tokens (prefill) like the products; one token runs inline.
  auto per_token = [&](const std::function<void(int64_t, int64_t)>& f) {
    pool.parallel_for(n_tok, [&](int64_t t0, int64_t t1, int) { f(t0, t1); });
  };
  // RMS norm of rows of `width` (n_per_tok per token) from `in` into `out` (may be the same).
  auto norm = [&](const float* in, const std::vector<float>& w, int64_t n_per_tok, int64_t width, float* out) {
    per_token([&](int64_t t0, int64_t t1) {
      const int64_t o = t0 * n_per_tok * width;
      kern::rms_norm(in + o, w.data(), (t1 - t0) * n_per_tok, width, hp.rms_eps, out + o);
    });
  };
  auto add_residual = [&] {
    per_token([&](int64_t t0, int64_t t1) { kern::add_inplace(x + t0 * n_embd, cur.data() + t0 * n_embd, (t1 - t0) * n_embd); });
  };
  auto mm = [&](const kern::MatrixView& w, const float* in, float* out) { product(w, in, out, seqs, n_seq, n_tok, pool); };

  // --- attention block ---
  norm(x, L.attn_norm, 1, n_embd, cur.data());
  mm(L.wq, cur.data(), q.data());
  mm(L.wk, cur.data(), k.data());
  mm(L.wv, cur.data(), v.data());
  add_bias(q.data(), L.bq, n_tok);
  add_bias(k.data(), L.bk, n_tok);
  add_bias(v.data(), L.bv, n_tok);
  if (hp.qk_norm) {
    norm(q.data(), L.q_norm, n_head, hd, q.data());
    norm(k.data(), L.k_norm, n_head_kv, hd, k.data());
  }
  kern::RopeParams rp = hp.rope;
  rp.freq_factors = rope_freq_factors.empty() ? nullptr : rope_freq_factors.data();
  if (hp.windowed(global_il)) {
    rp.freq_base = hp.rope_base_swa;
    rp.freq_scale = 1.0f;
  }
  per_token([&](int64_t t0, int64_t t1) {
    kern::rope_inplace(q.data() + t0 * q_dim, t1 - t0, static_cast<int>(n_head), static_cast<int>(hd), pos.data() + t0, rp);
    kern::rope_inplace(k.data() + t0 * kv_dim, t1 - t0, static_cast<int>(n_head_kv), static_cast<int>(hd), pos.data() + t0, rp);
    if (hp.q_prescaled) {
      for (int64_t i = t0 * q_dim; i < t1 * q_dim; ++i) q[static_cast<size_t>(i)] *= hp.attn_scale;
    }
  });
  attend(il, q.data(), k.data(), v.data(), seqs, n_seq, attn.data(), pool);
  if (pt.wo_gather || pt.out_rows > 0) {
    // Whole attn_output columns here: every member's heads first, then no sum afterwards.
    std::vector<float>& full = sized(buf_.attn_full, n_tok * hp.n_head * hd);
    tp_.gather(attn.data(), n_tok, TpGather::kHeads, full.data());
    out_product(L.wo, full.data(), false, seqs, n_seq, n_tok, pool);
  } else {
    out_product(L.wo, attn.data(), true, seqs, n_seq, n_tok, pool);
  }
  if (hp.post_norms) norm(cur.data(), L.attn_post_norm, 1, n_embd, cur.data());
  add_residual();

  // --- feed-forward block (gated: SiLU or GELU) ---
  std::vector<float>& gate = sized(buf_.gate, n_tok * n_ff);  // [n_tok, n_ff]
  std::vector<float>& up = sized(buf_.up, n_tok * n_ff);
  norm(x, L.ffn_norm, 1, n_embd, cur.data());
  mm(L.w_gate, cur.data(), gate.data());
  mm(L.w_up, cur.data(), up.data());
  per_token([&](int64_t t0, int64_t t1) {
    const int64_t o = t0 * n_ff, n = (t1 - t0) * n_ff;
    if (hp.ffn_act == FfnAct::kGeluTanh) {
      kern::gelu_mul_inplace(gate.data() + o, up.data() + o, n);
    } else {
      kern::silu_mul_inplace(gate.data() + o, up.data() + o, n);
    }
  });
  if (pt.out_rows > 0) {
    std::vector<float>& full = sized(buf_.ffn_full, n_tok * hp.n_ff);
    tp_.gather(gate.data(), n_tok, TpGather::kFfn, full.data());
    out_product(L.w_down, full.data(), true, seqs, n_seq, n_tok, pool);
  } else {
    out_product(L.w_down, gate.data(), true, seqs, n_seq, n_tok, pool);
  }
  if (hp.post_norms) norm(cur.data(), L.ffn_post_norm, 1, n_embd, cur.data());
  add_residual();
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
  for (int64_t il = 0; il < static_cast<int64_t>(layers.size()); ++il) layer_forward(il, x, seqs, n_seq, n_tok, pool);
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
