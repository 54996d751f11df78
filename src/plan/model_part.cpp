#include "plan/model_part.h"

#include "plan/identity.h"
#include "plan/tp_slice.h"

namespace ranklm::plan {

std::vector<int64_t> vocab_offsets(int64_t n_vocab, int tp) {
  std::vector<int64_t> off(static_cast<size_t>(tp) + 1);
  for (int i = 0; i <= tp; ++i) off[static_cast<size_t>(i)] = n_vocab * i / tp;
  return off;
}

ModelPart model_part(const Plan& p, int rank, const gguf::File& model) {
  const auto [stage, tpi] = p.where(rank);
  const Stage& st = p.stages[static_cast<size_t>(stage)];
  const TpShape shape = tp_shape(model);
  const TpPart tp = tp_part(shape, st.tp(), tpi, p.tp_mode, p.ep);
  ModelPart part;
  part.layer_begin = st.layer_begin;
  part.layer_end = st.layer_end;
  part.embed = stage == p.embedding_stage;
  part.head = stage == p.output_stage;
  part.n_head = tp.q_heads.size();
  part.n_head_kv = tp.kv_heads.size();
  part.n_ff = tp.ffn.size();
  part.wo_gather = tp.attn_output_replicated && st.tp() > 1;
  if (st.tp() > 1) {
    for (int i = 0; i < st.tp(); ++i) {
      const TpPart m = tp_part(shape, st.tp(), i, p.tp_mode, p.ep);
      if (!p.ep) {  // an EP group splits nothing but the experts
        part.member_heads.push_back(m.q_heads.size() * shape.head_dim);
        part.member_ffn.push_back(m.ffn.size());
        part.member_rows.push_back(m.out_rows.size());
      }
      if (shape.n_expert > 0) part.member_experts.push_back(m.experts.size());
    }
    if (tp.exact) part.out_rows = tp.out_rows.size();
    part.expert_begin = tp.experts.begin;
    part.expert_end = shape.n_expert > 0 ? tp.experts.end : -1;
    part.exact_moe = tp.exact;
  }
  if (part.head) {
    const std::vector<int64_t> off = vocab_offsets(p.model.n_vocab, st.tp());
    part.vocab_begin = off[static_cast<size_t>(tpi)];
    part.vocab_end = off[static_cast<size_t>(tpi) + 1];
  }
  return part;
}

}  // namespace ranklm::plan
