#include "plan/tp_slice.h"

#include "model/arch.h"
#include "util/error.h"

namespace ranklm::plan {

std::vector<Range> aligned_split(int64_t n, int parts, int64_t align, const std::string& what) {
  if (parts < 1 || align < 1) fail("{}: cannot split into {} parts of multiples of {}", what, parts, align);
  if (n % align != 0) fail("{}: {} is not a multiple of the block size {}", what, n, align);
  const int64_t units = n / align;
  if (units < parts) {
    fail("{}: {} elements are {} blocks of {}, too few for {} tensor-parallel ranks; use a TP "
         "size of at most {}", what, n, units, align, parts, units);
  }
  std::vector<Range> out;
  int64_t at = 0;
  for (int i = 0; i < parts; ++i) {
    const int64_t u = units / parts + (i < units % parts ? 1 : 0);
    out.push_back({at, at + u * align});
    at += u * align;
  }
  return out;
}

const char* tp_mode_name(TpMode m) { return m == TpMode::kExact ? "exact" : "sum"; }

TpPart tp_part(const TpShape& s, int tp, int index, TpMode mode, bool ep) {
  if (tp < 1 || index < 0 || index >= tp) fail("tp_part: index {} of TP size {}", index, tp);
  if (ep) {
    if (s.n_expert == 0) fail("expert parallelism: the model has no experts (a dense model splits by TP)");
    TpPart p;
    p.ep = true;
    p.q_heads = {0, s.n_head};
    p.kv_heads = {0, s.n_head_kv};
    p.ffn = {0, s.n_ff};
    p.experts = aligned_split(s.n_expert, tp, 1, "MoE experts (expert_count)")[index];
    return p;
  }
  if (s.n_head % tp != 0) {
    fail("tensor-parallel size {} does not divide the {} attention heads", tp, s.n_head);
  }
  const int64_t hp = s.n_head / tp;
  const int64_t group = s.n_head / s.n_head_kv;
  TpPart p;
  p.q_heads = {index * hp, (index + 1) * hp};
  p.kv_heads = {p.q_heads.begin / group, (p.q_heads.end - 1) / group + 1};
  if (s.n_expert > 0) p.experts = aligned_split(s.n_expert, tp, 1, "MoE experts (expert_count)")[index];
  if (mode == TpMode::kExact) {
    // Every split tensor is cut by rows, which need no block alignment.
    p.exact = true;
    p.ffn = aligned_split(s.n_ff, tp, 1, "FFN gate / up rows (feed_forward_length)")[index];
    p.out_rows = aligned_split(s.n_embd, tp, 1, "attention output / FFN down rows (embedding_length)")[index];
    return p;
  }
  p.ffn = aligned_split(s.n_ff, tp, s.ffn_down_block, "FFN down columns (feed_forward_length)")[index];
  // The attention output's columns follow the heads; cut only on whole blocks.
  p.attn_output_replicated = tp > 1 && (hp * s.head_dim) % s.attn_output_block != 0;
  return p;
}

Slice tensor_slice(const std::string& name, int n_dims, const TpShape& s, const TpPart& part) {
  const std::optional<NamedTensor> t = parse_tensor_name(name);
  if (!t) return {};  // a tensor no architecture here reads: whole
  const int64_t hd = s.head_dim;
  const int row_dim = n_dims >= 2 ? 1 : 0;  // a bias's only dimension runs along the rows
  if (part.ep && tp_split(t->id) != TpSplit::kExperts) return {};
  switch (tp_split(t->id)) {
    case TpSplit::kWhole:
      return {};
    case TpSplit::kQHeads:
      return {row_dim, part.q_heads.begin * hd, part.q_heads.end * hd};
    case TpSplit::kKvHeads:
      return {row_dim, part.kv_heads.begin * hd, part.kv_heads.end * hd};
    case TpSplit::kFfnRows:
      return {row_dim, part.ffn.begin, part.ffn.end};
    case TpSplit::kAttnOutput:
      if (part.exact) return {1, part.out_rows.begin, part.out_rows.end};
      if (part.attn_output_replicated) return {};
      return {0, part.q_heads.begin * hd, part.q_heads.end * hd};
    case TpSplit::kFfnDown:
      if (part.exact) return {1, part.out_rows.begin, part.out_rows.end};
      return {0, part.ffn.begin, part.ffn.end};
    case TpSplit::kExperts:
      if (n_dims != 3 || part.experts.size() == s.n_expert) return {};
      return {2, part.experts.begin, part.experts.end};
  }
  return {};
}

}  // namespace ranklm::plan
