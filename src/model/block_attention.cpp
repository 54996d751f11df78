// The attention block: pre-norm, Q/K/V projections (biases, per-head Q/K norms and RoPE as the
// architecture switches them on), each sequence's new keys and values into its paged KV cache,
// attention over the sequence's own cache (full, or the last swa_window positions), the output
// projection (its TP form: heads split, then a sum, a gather of heads, or rows), an optional
// post-norm, and the residual add.
#include "kernels/fp16.h"
#include "kernels/ops.h"
#include "model/block.h"

namespace ranklm {

namespace {

class Attention final : public Block {
 public:
  explicit Attention(const BlockInit& in);
  void forward(BlockOps& ops, const Step& s, float* x) override;
  void for_each_matrix(const std::function<void(kern::MatrixView&)>& fn) override {
    for (kern::MatrixView* w : {&wq_, &wk_, &wv_, &wo_}) fn(*w);
  }
  bool chunk_invariant() override { return all_per_token_exact({&wq_, &wk_, &wv_, &wo_}); }

 private:
  void attend(BlockOps& ops, const float* q, const float* k, const float* v, const Step& s, float* attn);

  const int64_t il_;       // the model's layer index
  const int64_t kv_slot_;  // the layer's index in its KV pool
  const bool windowed_;
  const std::vector<float>& rope_freq_factors_;
  std::vector<float> attn_norm_;
  kern::MatrixView wq_, wk_, wv_, wo_;  // [n_head*hd, n_embd], [n_kv*hd, n_embd] x2, [n_embd, n_head*hd]
  std::vector<float> bq_, bk_, bv_;     // biases (empty when the architecture has none)
  std::vector<float> q_norm_, k_norm_;  // [head_dim] per-head norms (qk_norm)
  std::vector<float> post_norm_;        // [n_embd] (post_norms)
  // Block pointers of every sequence (K then V) and the kernel's per-sequence arguments.
  std::vector<const uint16_t*> kv_rows_;
  std::vector<kern::AttnSeq> attn_seqs_;
};

Attention::Attention(const BlockInit& in)
    : il_(in.il), kv_slot_(in.kv_slot), windowed_(in.hp.windowed(in.il)), rope_freq_factors_(in.rope_freq_factors) {
  const HParams& hp = in.hp;
  const ModelPart& pt = in.pt;
  const gguf::File& f = in.f;
  auto name = [&](TensorId id) { return tensor_name(id, in.il); };
  auto vec = [&](TensorId id, int64_t n) { return vector_f32(f, name(id), n); };
  const int64_t q_dim = pt.n_head * hp.head_dim;
  const int64_t kv_dim = pt.n_head_kv * hp.head_dim;
  const bool exact = pt.out_rows > 0;
  const int64_t wo_cols = pt.wo_gather || exact ? hp.n_head * hp.head_dim : q_dim;
  const int64_t out_rows = exact ? pt.out_rows : hp.n_embd;
  attn_norm_ = vec(TensorId::kAttnNorm, hp.n_embd);
  wq_ = matrix(f, name(TensorId::kAttnQ), q_dim, hp.n_embd);
  wk_ = matrix(f, name(TensorId::kAttnK), kv_dim, hp.n_embd);
  wv_ = matrix(f, name(TensorId::kAttnV), kv_dim, hp.n_embd);
  wo_ = matrix(f, name(TensorId::kAttnOut), out_rows, wo_cols);
  if (hp.qkv_bias) {
    bq_ = vec(TensorId::kAttnQBias, q_dim);
    bk_ = vec(TensorId::kAttnKBias, kv_dim);
    bv_ = vec(TensorId::kAttnVBias, kv_dim);
  }
  if (hp.qk_norm) {
    q_norm_ = vec(TensorId::kAttnQNorm, hp.head_dim);
    k_norm_ = vec(TensorId::kAttnKNorm, hp.head_dim);
  }
  if (hp.post_norms) post_norm_ = vec(TensorId::kAttnPostNorm, hp.n_embd);
}

// Each sequence's keys and values (rows of k, v) into its cache at its positions, then the
// attention of every sequence over its own cache in one batched call: attn [n_tok, n_head * head_dim].
void Attention::attend(BlockOps& ops, const float* q, const float* k, const float* v, const Step& s, float* attn) {
  const HParams& hp = ops.hp();
  const ModelPart& pt = ops.part();
  const int64_t hd = hp.head_dim, q_dim = pt.n_head * hd, kv_dim = pt.n_head_kv * hd;
  const bool windowed = windowed_;
  const int64_t slot = kv_slot_;
  auto table = [windowed](const KvCache& c) -> const std::vector<int32_t>& { return windowed ? c.windowed_blocks() : c.blocks(); };
  int64_t n_ptr = 0;
  for (int i = 0; i < s.n_seq; ++i) n_ptr += 2 * static_cast<int64_t>(table(*s.seqs[i].cache).size());
  kv_rows_.resize(static_cast<size_t>(n_ptr));
  attn_seqs_.resize(static_cast<size_t>(s.n_seq));
  const uint16_t** ptr = kv_rows_.data();
  int64_t row = 0;  // the sequence's first row in the batch
  for (int i = 0; i < s.n_seq; row += s.seqs[i].n_tok, ++i) {
    const SeqSpan& sp = s.seqs[i];
    KvPool& kp = windowed ? *sp.cache->windowed_pool() : sp.cache->pool();
    const std::vector<int32_t>& blocks = table(*sp.cache);
    for (int64_t t = 0; t < sp.n_tok; ++t) {
      const int64_t p = sp.pos0 + t;
      const int32_t b = blocks[static_cast<size_t>(p / kKvBlockLen)];
      uint16_t* kd = kp.k(b, slot) + (p % kKvBlockLen) * kv_dim;
      uint16_t* vd = kp.v(b, slot) + (p % kKvBlockLen) * kv_dim;
      const float* ks = k + (row + t) * kv_dim;
      const float* vs = v + (row + t) * kv_dim;
      for (int64_t j = 0; j < kv_dim; ++j) {
        kd[j] = kern::fp32_to_fp16(ks[j]);
        vd[j] = kern::fp32_to_fp16(vs[j]);
      }
    }
    const size_t nb = blocks.size();
    for (size_t j = 0; j < nb; ++j) {  // given-back windowed blocks: before every query's window
      ptr[j] = blocks[j] < 0 ? nullptr : kp.k(blocks[j], slot);
      ptr[nb + j] = blocks[j] < 0 ? nullptr : kp.v(blocks[j], slot);
    }
    attn_seqs_[static_cast<size_t>(i)] = {q + row * q_dim, attn + row * q_dim, ptr, ptr + nb, kKvBlockLen, sp.n_tok, sp.pos0};
    ptr += 2 * nb;
  }
  const int64_t window = windowed ? hp.swa_window : 0;
  ops.attention(attn_seqs_.data(), s.n_seq, pt.n_head, pt.n_head_kv, hd, hp.scores_scale(), s.pool, window);
}

void Attention::forward(BlockOps& ops, const Step& s, float* x) {
  const HParams& hp = ops.hp();
  const ModelPart& pt = ops.part();
  const int64_t n_tok = s.n_tok, n_embd = hp.n_embd, hd = hp.head_dim;
  const int64_t n_head = pt.n_head, n_head_kv = pt.n_head_kv;
  const int64_t q_dim = n_head * hd, kv_dim = n_head_kv * hd;
  float* cur = ops.buf(BlockOps::kCur, n_tok * n_embd);  // [n_tok, n_embd]
  float* q = ops.buf(BlockOps::kQ, n_tok * q_dim);
  float* k = ops.buf(BlockOps::kK, n_tok * kv_dim);
  float* v = ops.buf(BlockOps::kV, n_tok * kv_dim);
  float* attn = ops.buf(BlockOps::kAttn, n_tok * q_dim);  // [n_tok, q_dim]

  ops.norm(s, x, attn_norm_, 1, n_embd, cur);
  ops.product(wq_, cur, q, s);
  ops.product(wk_, cur, k, s);
  ops.product(wv_, cur, v, s);
  ops.add_bias(s, q, bq_);
  ops.add_bias(s, k, bk_);
  ops.add_bias(s, v, bv_);
  if (hp.qk_norm) {
    ops.norm(s, q, q_norm_, n_head, hd, q);
    ops.norm(s, k, k_norm_, n_head_kv, hd, k);
  }
  kern::RopeParams rp = hp.rope;
  rp.freq_factors = rope_freq_factors_.empty() ? nullptr : rope_freq_factors_.data();
  if (windowed_) {
    rp.freq_base = hp.rope_base_swa;
    rp.freq_scale = 1.0f;
  }
  ops.rope(s, q, n_head, hd, rp, hp.q_prescaled ? hp.attn_scale : 0.0f);
  ops.rope(s, k, n_head_kv, hd, rp);
  attend(ops, q, k, v, s, attn);
  if (pt.wo_gather || pt.out_rows > 0) {
    // Whole attn_output columns here: every member's heads first, then no sum afterwards.
    float* full = ops.buf(BlockOps::kAttnFull, n_tok * hp.n_head * hd);
    ops.tp().gather(attn, n_tok, TpGather::kHeads, full);
    ops.out_product(wo_, full, false, s, cur);
  } else {
    ops.out_product(wo_, attn, true, s, cur);
  }
  if (hp.post_norms) ops.norm(s, cur, post_norm_, 1, n_embd, cur);
  ops.add_residual(s, x, cur);
}

}  // namespace

std::unique_ptr<Block> make_attention_block(const BlockInit& in) { return std::make_unique<Attention>(in); }

}  // namespace ranklm
