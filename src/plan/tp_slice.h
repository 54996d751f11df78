// Tensor-parallel slicing as pure functions: which part of each GGUF tensor a TP rank holds.
//
//   Q / K / V weights (and Qwen2 biases), FFN gate / up: split by output rows. Query heads are
//     split evenly (TP must divide them); a rank holds the KV heads its query heads use, so KV
//     heads are replicated when TP exceeds their count.
//   Attention output, FFN down: split by input columns, matching the rows above, always on
//     block boundaries of the tensor's type (32 or 256 elements). The FFN split is uneven when
//     an even one would cut a block (and refused only when there are fewer blocks than ranks).
//     The attention-output columns must follow the heads; when a rank's heads do not span
//     whole blocks (e.g. 4 heads of 32 against a 256-element K-quant block) no column split
//     exists, and the tensor is replicated instead: the runtime then gathers the heads'
//     outputs across the group before it rather than reducing after it.
//   MoE layers: the stacked expert tensors (ffn_gate_exps, ffn_up_exps, ffn_down_exps) are
//     split by expert, members holding contiguous ranges as even as possible (expert
//     parallelism); the router (ffn_gate_inp) is whole on every member.
//   Everything else (norms, embedding, output head, rope factors): whole, on every rank that
//   needs it.
//
// That is the "sum" mode: members add partial products of attn_output and ffn_down, so the
// float summation order depends on the TP size. In the "exact" mode (the default for new
// plans) attn_output and ffn_down are split by output rows instead: members gather the heads'
// outputs and the FFN activations, each computes whole dot products for its rows, and the rows
// are gathered after. Every output is then computed by the same kernel over the same inputs as
// on one rank, so logits are bit-identical whatever the layout, for about twice the messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ranklm::plan {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

// [0, n) in `parts` contiguous ranges whose boundaries are multiples of `align`, as even as
// possible (sizes differ by at most `align`). Throws ranklm::Error naming `what` when n is not
// a multiple of align or there are fewer aligned units than parts.
std::vector<Range> aligned_split(int64_t n, int parts, int64_t align, const std::string& what);

// The sizes slicing needs, and the block sizes of the tensors cut by columns.
enum class TpMode { kSum, kExact };
const char* tp_mode_name(TpMode m);  // "sum" / "exact"

struct TpShape {
  int64_t n_embd = 0;
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0;
  int64_t n_expert = 0;            // MoE layers' experts (0: a dense model)
  int64_t attn_output_block = 32;  // block size of attn_output.weight's type
  int64_t ffn_down_block = 32;     // block size of ffn_down.weight's type
};

// What TP rank `index` of `tp` holds of every layer.
struct TpPart {
  Range q_heads, kv_heads, ffn;
  bool attn_output_replicated = false;  // see above (sum mode only)
  bool exact = false;                   // exact mode: out_rows below
  Range out_rows;                       // exact mode: rows of attn_output and ffn_down held
  Range experts;                        // MoE layers: the experts held (expert parallelism)
  bool ep = false;                      // an EP group: everything but the experts whole here
};
// `ep`: the group splits only the experts (plan field "ep"); attention and dense FFNs stay whole
// on every member, which then computes them redundantly and exchanges nothing for them.
TpPart tp_part(const TpShape& s, int tp, int index, TpMode mode = TpMode::kSum, bool ep = false);

// The slice of one tensor: `dim` is the GGUF dimension cut (0: the contiguous one, i.e.
// columns of a matrix or the elements of a vector; 1: rows), or -1 for the whole tensor.
struct Slice {
  int dim = -1;
  int64_t begin = 0, end = 0;
  bool operator==(const Slice&) const = default;
};
// `name` is a GGUF tensor name (blk.N.attn_q.weight, ...). n_dims is the tensor's dimension
// count (1 for biases and norms, 2 for matrices, 3 for stacked experts: dim 2 cuts experts).
Slice tensor_slice(const std::string& name, int n_dims, const TpShape& s, const TpPart& part);

}  // namespace ranklm::plan
