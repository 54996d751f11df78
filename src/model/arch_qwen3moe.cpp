// Architecture "qwen3moe": Qwen3 mixture-of-experts models (Qwen3-30B-A3B: 48 layers, 128
// experts, 8 used per token; Qwen3-235B-A22B: 94 layers, the same routing). Attention as qwen3
// (per-head Q/K RMS norms, NeoX RoPE, head size from attention.key_length); every FFN a mixture
// of experts whose size is expert_feed_forward_length (feed_forward_length is the dense size of
// the family and unused), weights renormalised over the chosen experts (model/block_moe.cpp).
#include "model/arch.h"
#include "util/error.h"

namespace ranklm {

void configure_qwen3moe(const gguf::File& f, HParams& hp) {
  read_expert_hparams(f, hp, true);
  if (!hp.moe()) {
    fail("{}: metadata 'qwen3moe.expert_count' is missing or 0: a qwen3moe model has experts; the file is damaged or "
         "badly converted", f.path());
  }
}

void describe_qwen3moe(gguf::Writer& w, const HParams& hp) { write_expert_hparams(w, hp, true); }

}  // namespace ranklm
