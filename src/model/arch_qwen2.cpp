// Architecture "qwen2": Qwen2 / Qwen2.5. As llama, plus biases on the Q, K and V projections and
// NeoX-style rotary embeddings (pairs (i, i + d/2)); embeddings are often tied to the output.
#include "model/model.h"

namespace ranklm {

void build_qwen2(const gguf::File& f, Model& m) {
  m.hp_ = read_common_hparams(f, "qwen2");
  m.hp_.rope.neox = true;
  m.hp_.qkv_bias = true;
  load_decoder_weights(f, m);
}

}  // namespace ranklm
