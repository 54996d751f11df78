// Architecture "llama": Llama 2/3, Mistral, TinyLlama, SmolLM2 and other Llama-shaped models.
// Pre-norm RMSNorm, rotary embeddings on interleaved pairs (GGUF stores Q/K rows permuted for
// this), grouped-query attention, SwiGLU feed-forward, tied or separate output head.
// Llama 3 frequency scaling arrives as the rope_freqs tensor or as rope.scaling.* keys.
// With llama.expert_count > 0 (Mixtral and its layout), every FFN is a mixture of experts of
// feed_forward_length rows each (model/block_moe.cpp).
#include <cmath>

#include "model/arch.h"

namespace ranklm {

void blocks_llama(HParams& hp) { hp.rope.neox = false; }

void configure_llama(const gguf::File& f, HParams& hp) {
  read_expert_hparams(f, hp, false);  // Mixtral: llama with expert_count > 0
  if (f.get_string_opt("llama.rope.scaling.type").value_or("") == "llama3") {
    const std::string p = "llama.rope.scaling.";
    Llama3Rope r;
    r.factor = f.get_float_opt(p + "factor").value_or(r.factor);
    r.low_freq_factor = f.get_float_opt(p + "low_freq_factor").value_or(r.low_freq_factor);
    r.high_freq_factor = f.get_float_opt(p + "high_freq_factor").value_or(r.high_freq_factor);
    r.original_context = f.get_float_opt(p + "original_context_length").value_or(r.original_context);
    hp.llama3_rope = r;
  }
}

std::vector<float> llama3_freq_factors(const HParams& hp) {
  const Llama3Rope& r = *hp.llama3_rope;
  const double low_wl = r.original_context / r.low_freq_factor;
  const double high_wl = r.original_context / r.high_freq_factor;
  std::vector<float> ff(static_cast<size_t>(hp.rope.n_dims / 2));
  for (size_t i = 0; i < ff.size(); ++i) {
    const double freq = std::pow(static_cast<double>(hp.rope.freq_base), -2.0 * static_cast<double>(i) / hp.rope.n_dims);
    const double wl = 2.0 * M_PI / freq;
    if (wl < high_wl) {
      ff[i] = 1.0f;
    } else if (wl > low_wl) {
      ff[i] = static_cast<float>(r.factor);
    } else {
      const double smooth = (r.original_context / wl - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      ff[i] = static_cast<float>(1.0 / ((1.0 - smooth) / r.factor + smooth));
    }
  }
  return ff;
}

void describe_llama(gguf::Writer& w, const HParams& hp) {
  write_expert_hparams(w, hp, false);
  if (!hp.llama3_rope) return;
  const std::string p = "llama.rope.scaling.";
  w.set_string(p + "type", "llama3");
  w.set_f32(p + "factor", static_cast<float>(hp.llama3_rope->factor));
  w.set_f32(p + "low_freq_factor", static_cast<float>(hp.llama3_rope->low_freq_factor));
  w.set_f32(p + "high_freq_factor", static_cast<float>(hp.llama3_rope->high_freq_factor));
  w.set_u32(p + "original_context_length", static_cast<uint32_t>(hp.llama3_rope->original_context));
}

}  // namespace ranklm
