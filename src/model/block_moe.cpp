// The mixture-of-experts FFN block, with llama.cpp's semantics (build_moe_ffn):
//   router logits = ffn_gate_inp x norm(x)          [n_tok, n_expert]
//   probabilities = softmax over the experts; the top expert_used_count kept (highest first),
//   their weights divided by their sum;
//   each chosen expert e computes down_e(silu(gate_e h) * up_e h), from the stacked tensors
//   ffn_gate_exps / ffn_up_exps [n_expert][n_ff_exp, n_embd] and ffn_down_exps [n_expert][n_embd, n_ff_exp];
//   the FFN output is w_0 y_0 + w_1 y_1 + ... in that order, added to the residual.
//
// In a batched step the (token, expert) assignments are grouped by expert, so each expert's
// weights are read once per step whatever the number of tokens routed to it (llama.cpp's
// mul_mat_id), through the same packed kernels as the dense products.
//
// Expert parallelism: a group's members hold contiguous ranges of experts (ModelPart). Every
// member routes the same way (the router is whole everywhere) and computes its experts for
// the tokens routed to them. In exact mode the members' expert outputs are gathered (in expert
// order, as on one rank) and every member sums them in the one-rank order: bit-identical to one
// rank. Otherwise each member sums its own weighted outputs and the group all-reduces.
#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "model/block.h"
#include "util/error.h"

namespace ranklm {

namespace {

// The stacked 3-D tensor `name` ([cols, rows, n]: n matrices of [rows, cols]) as one view per
// held expert. The file holds either every expert or just the part's range (a shard).
std::vector<kern::MatrixView> expert_matrices(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols,
                                              int64_t n_expert, int64_t e0, int64_t e1) {
  const gguf::TensorInfo& t = f.tensor(name);
  const int64_t n_held = e1 - e0;
  if (t.ne.size() != 3 || t.ne[0] != cols || t.ne[1] != rows || (t.ne[2] != n_expert && t.ne[2] != n_held)) {
    fail("{}: tensor '{}': shape {} does not match the metadata (expected [{}, {}, {}]: {} experts of [{} x {}])",
         f.path(), name, t.shape_string(), cols, rows, n_expert, n_expert, rows, cols);
  }
  const kern::TypeTraits& tt = kern::traits(t.type);
  if (!tt.supported || cols % tt.block_size != 0) {
    fail("{}: tensor '{}': type {} has no kernels in ranklm for rows of {}; requantize the model", f.path(), name,
         kern::type_name(t.type), cols);
  }
  const int64_t base = t.ne[2] == n_expert ? e0 : 0;
  const size_t bytes = kern::row_bytes(tt, cols) * static_cast<size_t>(rows);
  std::vector<kern::MatrixView> out;
  for (int64_t e = 0; e < n_held; ++e) {
    out.push_back(kern::MatrixView{t.type, static_cast<const uint8_t*>(t.data) + static_cast<size_t>(base + e) * bytes,
                                   rows, cols});
  }
  return out;
}

class MoeFfn final : public Block {
 public:
  explicit MoeFfn(const BlockInit& in);
  void forward(BlockOps& ops, const Step& s, float* x) override;
  void for_each_matrix(const std::function<void(kern::MatrixView&)>& fn) override {
    fn(router_);
    for (auto* v : {&gate_, &up_, &down_}) {
      for (kern::MatrixView& w : *v) fn(w);
    }
  }
  // The router takes per-token products whatever its type (route); the experts must be exact.
  bool chunk_invariant() override {
    for (auto* v : {&gate_, &up_, &down_}) {
      for (const kern::MatrixView& w : *v) {
        if (!per_token_exact(w)) return false;
      }
    }
    return true;
  }

 private:
  // Every token's chosen experts (sel) and their weights (wts), [n_tok, n_used] each.
  void route(BlockOps& ops, const Step& s, const float* h, int32_t* sel, float* wts);

  int64_t e0_ = 0, e1_ = 0;  // the experts held here
  std::vector<float> norm_, post_norm_;
  kern::MatrixView router_;                        // [n_expert, n_embd]
  std::vector<kern::MatrixView> gate_, up_, down_;  // per held expert
  std::vector<kern::MatmulJob> jobs_;
};

MoeFfn::MoeFfn(const BlockInit& in) {
  const HParams& hp = in.hp;
  const ModelPart& pt = in.pt;
  auto name = [&](TensorId id) { return tensor_name(id, in.il); };
  e0_ = pt.expert_begin;
  e1_ = pt.expert_end < 0 ? hp.n_expert : pt.expert_end;
  if (e0_ < 0 || e0_ >= e1_ || e1_ > hp.n_expert) {
    fail("{}: experts [{}, {}) are not a range of the model's {}", in.f.path(), e0_, e1_, hp.n_expert);
  }
  norm_ = vector_f32(in.f, name(TensorId::kFfnNorm), hp.n_embd);
  router_ = matrix(in.f, name(TensorId::kFfnGateInp), hp.n_expert, hp.n_embd);
  const int64_t E = hp.n_embd, F = hp.n_ff_exp, N = hp.n_expert;
  gate_ = expert_matrices(in.f, name(TensorId::kFfnGateExps), F, E, N, e0_, e1_);
  up_ = expert_matrices(in.f, name(TensorId::kFfnUpExps), F, E, N, e0_, e1_);
  down_ = expert_matrices(in.f, name(TensorId::kFfnDownExps), E, F, N, e0_, e1_);
  if (hp.post_norms) post_norm_ = vector_f32(in.f, name(TensorId::kFfnPostNorm), hp.n_embd);
}

void MoeFfn::route(BlockOps& ops, const Step& s, const float* h, int32_t* sel, float* wts) {
  const HParams& hp = ops.hp();
  const int64_t N = hp.n_expert, K = hp.n_expert_used;
  float* logits = ops.buf(BlockOps::kRouter, s.n_tok * N);
  ops.product_per_token(router_, h, s.n_tok, logits, s.pool);
  ops.per_token(s, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* p = logits + t * N;
      kern::softmax_inplace(p, N);  // as ggml: exp(x - max) in float, summed in double, scaled by 1/sum
      // The K most probable, highest first (ties: the lower expert id first).
      int32_t* st = sel + t * K;
      float* wt = wts + t * K;
      for (int64_t k = 0; k < K; ++k) {
        int64_t best = -1;
        for (int64_t e = 0; e < N; ++e) {
          bool taken = false;
          for (int64_t j = 0; j < k && !taken; ++j) taken = st[j] == e;
          if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        st[k] = static_cast<int32_t>(best);
        wt[k] = p[best];
      }
      // Renormalised over the chosen experts (sum in double, clamped as llama.cpp does).
      double ws = 0;
      for (int64_t k = 0; k < K; ++k) ws += wt[k];
      const float wsum = std::max(static_cast<float>(ws), 6.103515625e-5f);
      for (int64_t k = 0; k < K; ++k) wt[k] /= wsum;
    }
  });
}

void MoeFfn::forward(BlockOps& ops, const Step& s, float* x) {
  const HParams& hp = ops.hp();
  const ModelPart& pt = ops.part();
  const int64_t n_tok = s.n_tok, E = hp.n_embd, F = hp.n_ff_exp, N = hp.n_expert, K = hp.n_expert_used;
  const int64_t n_assign = n_tok * K;
  float* cur = ops.buf(BlockOps::kCur, n_tok * E);
  ops.norm(s, x, norm_, 1, E, cur);
  int32_t* sel = ops.ints(0, n_assign).data();
  float* wts = ops.buf(BlockOps::kRouteW, n_assign);
  route(ops, s, cur, sel, wts);

  // Assignments grouped by expert (tokens in order within one): expert e's are [off[e], off[e+1]).
  int32_t* off = ops.ints(1, N + 1).data();
  int32_t* fill = ops.ints(2, N).data();
  int32_t* tok = ops.ints(3, n_assign).data();   // assignment -> token
  int32_t* slot = ops.ints(4, n_assign).data();  // token * K + k -> assignment
  std::fill(off, off + N + 1, 0);
  for (int64_t i = 0; i < n_assign; ++i) ++off[sel[i] + 1];
  for (int64_t e = 0; e < N; ++e) off[e + 1] += off[e];
  std::copy(off, off + N, fill);
  for (int64_t i = 0; i < n_assign; ++i) {
    const int32_t a = fill[sel[i]]++;
    tok[a] = static_cast<int32_t>(i / K);
    slot[i] = a;
  }

  // This member's experts over their tokens: y [its assignments, n_embd].
  const int64_t a0 = off[e0_], n_local = off[e1_] - a0;
  float* in = ops.buf(BlockOps::kExpIn, n_local * E);
  float* g = ops.buf(BlockOps::kGate, n_local * F);
  float* u = ops.buf(BlockOps::kUp, n_local * F);
  float* y = ops.buf(BlockOps::kExpOut, std::max<int64_t>(1, n_local) * E);
  s.pool.parallel_for(n_local, [&](int64_t b, int64_t e, int) {
    for (int64_t a = b; a < e; ++a) std::copy_n(cur + tok[a0 + a] * E, E, in + a * E);
  });
  // Every expert's gate and up products in one pass, the gating, then every down product.
  jobs_.clear();
  for (int64_t e = e0_; e < e1_; ++e) {
    const int64_t n = off[e + 1] - off[e], r = off[e] - a0;
    const size_t i = static_cast<size_t>(e - e0_);
    if (n > 0) jobs_.insert(jobs_.end(), {{gate_[i], in + r * E, n, g + r * F}, {up_[i], in + r * E, n, u + r * F}});
  }
  ops.products(jobs_, s.pool);
  ops.gate(s.pool, g, u, n_local, F, hp.ffn_act);
  jobs_.clear();
  for (int64_t e = e0_; e < e1_; ++e) {
    const int64_t n = off[e + 1] - off[e], r = off[e] - a0;
    if (n > 0) jobs_.push_back({down_[static_cast<size_t>(e - e0_)], g + r * F, n, y + r * E});
  }
  ops.products(jobs_, s.pool);

  // The weighted sum of every token's experts, in its top-k order, into cur.
  const bool split = !pt.member_experts.empty();
  const bool partial = split && !pt.exact_moe;
  const float* all = y;  // every assignment's output (one rank), in expert order
  if (split && pt.exact_moe) {
    std::vector<int64_t> counts;
    int64_t m_e = 0;
    for (const int64_t n : pt.member_experts) {
      counts.push_back((off[m_e + n] - off[m_e]) * E);
      m_e += n;
    }
    float* gathered = ops.buf(BlockOps::kExpAll, n_assign * E);
    ops.tp().gather_counts(y, counts, gathered);
    all = gathered;
  }
  ops.per_token(s, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = cur + t * E;
      bool first = true;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t e = sel[t * K + k];
        if (partial && (e < e0_ || e >= e1_)) continue;
        const float w = wts[t * K + k];
        const float* ye = all + (slot[t * K + k] - (partial ? a0 : 0)) * E;
        if (first) {
          for (int64_t j = 0; j < E; ++j) o[j] = w * ye[j];
        } else {
          for (int64_t j = 0; j < E; ++j) o[j] += w * ye[j];
        }
        first = false;
      }
      if (first) std::fill(o, o + E, 0.0f);  // none of its experts here (partial sums)
    }
  });
  if (partial) ops.tp().allreduce(cur, n_tok * E);
  if (hp.post_norms) ops.norm(s, cur, post_norm_, 1, E, cur);
  ops.add_residual(s, x, cur);
}

}  // namespace

std::unique_ptr<Block> make_moe_ffn_block(const BlockInit& in) { return std::make_unique<MoeFfn>(in); }

}  // namespace ranklm
