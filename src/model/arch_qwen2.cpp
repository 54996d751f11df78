// Architecture "qwen2": Qwen2 / Qwen2.5. As llama, plus biases on the Q, K and V projections and
// NeoX-style rotary embeddings (pairs (i, i + d/2)); embeddings are often tied to the output.
#include "model/arch.h"

namespace ranklm {

void blocks_qwen2(HParams& hp) {
  hp.rope.neox = true;
  hp.qkv_bias = true;
}

}  // namespace ranklm
