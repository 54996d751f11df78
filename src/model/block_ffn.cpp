// The dense FFN block: pre-norm, gate and up projections (rows split under TP), SiLU or GELU-tanh
// gating, the down projection (its TP form: a sum, or rows gathered in exact mode), an optional
// post-norm, and the residual add.
#include "kernels/ops.h"
#include "model/block.h"

namespace ranklm {

namespace {

class DenseFfn final : public Block {
 public:
  explicit DenseFfn(const BlockInit& in);
  void forward(BlockOps& ops, const Step& s, float* x) override;
  void for_each_matrix(const std::function<void(kern::MatrixView&)>& fn) override {
    for (kern::MatrixView* w : {&w_gate_, &w_up_, &w_down_}) fn(*w);
  }
  bool chunk_invariant() override { return all_per_token_exact({&w_gate_, &w_up_, &w_down_}); }

 private:
  std::vector<float> norm_;
  kern::MatrixView w_gate_, w_up_, w_down_;  // [n_ff, n_embd] x2, [n_embd, n_ff]
  std::vector<float> post_norm_;             // [n_embd] (post_norms)
};

DenseFfn::DenseFfn(const BlockInit& in) {
  const HParams& hp = in.hp;
  const ModelPart& pt = in.pt;
  auto name = [&](TensorId id) { return tensor_name(id, in.il); };
  const bool exact = pt.out_rows > 0;
  norm_ = vector_f32(in.f, name(TensorId::kFfnNorm), hp.n_embd);
  w_gate_ = matrix(in.f, name(TensorId::kFfnGate), pt.n_ff, hp.n_embd);
  w_up_ = matrix(in.f, name(TensorId::kFfnUp), pt.n_ff, hp.n_embd);
  w_down_ = matrix(in.f, name(TensorId::kFfnDown), exact ? pt.out_rows : hp.n_embd, exact ? hp.n_ff : pt.n_ff);
  if (hp.post_norms) post_norm_ = vector_f32(in.f, name(TensorId::kFfnPostNorm), hp.n_embd);
}

void DenseFfn::forward(BlockOps& ops, const Step& s, float* x) {
  const HParams& hp = ops.hp();
  const ModelPart& pt = ops.part();
  const int64_t n_tok = s.n_tok, n_embd = hp.n_embd, n_ff = pt.n_ff;
  float* cur = ops.buf(BlockOps::kCur, n_tok * n_embd);
  float* gate = ops.buf(BlockOps::kGate, n_tok * n_ff);  // [n_tok, n_ff]
  float* up = ops.buf(BlockOps::kUp, n_tok * n_ff);
  ops.norm(s, x, norm_, 1, n_embd, cur);
  ops.product(w_gate_, cur, gate, s);
  ops.product(w_up_, cur, up, s);
  ops.gate(s.pool, gate, up, n_tok, n_ff, hp.ffn_act);
  if (pt.out_rows > 0) {
    float* full = ops.buf(BlockOps::kFfnFull, n_tok * hp.n_ff);
    ops.tp().gather(gate, n_tok, TpGather::kFfn, full);
    ops.out_product(w_down_, full, true, s, cur);
  } else {
    ops.out_product(w_down_, gate, true, s, cur);
  }
  if (hp.post_norms) ops.norm(s, cur, post_norm_, 1, n_embd, cur);
  ops.add_residual(s, x, cur);
}

}  // namespace

std::unique_ptr<Block> make_dense_ffn_block(const BlockInit& in) { return std::make_unique<DenseFfn>(in); }

}  // namespace ranklm
