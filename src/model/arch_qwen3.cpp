// Architecture "qwen3": Qwen3 dense models. As qwen2 without the Q/K/V biases, plus an RMS norm
// over each head of Q and of K (weights attn_q_norm / attn_k_norm of the head size) before RoPE.
// The head size comes from attention.key_length (128 in the released models), not from
// embedding_length / head_count, so Q is often wider than the residual stream.
#include "model/arch.h"

namespace ranklm {

void blocks_qwen3(HParams& hp) {
  hp.rope.neox = true;
  hp.qk_norm = true;
}

}  // namespace ranklm
