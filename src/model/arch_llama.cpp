// Architecture "llama": Llama 2/3, Mistral, TinyLlama, SmolLM2 and other Llama-shaped models.
// Pre-norm RMSNorm, rotary embeddings on interleaved pairs (GGUF stores Q/K rows permuted for
// this), grouped-query attention, SwiGLU feed-forward, tied or separate output head.
// Llama 3 frequency scaling arrives as the `rope_freqs.weight` tensor or as rope.scaling.* keys.
#include <cmath>

#include "model/model.h"
#include "util/error.h"

namespace ranklm {

namespace {

// Llama 3.1 "llama3" rope scaling computed from metadata when the file carries no factor tensor.
std::vector<float> llama3_freq_factors(const gguf::File& f, const HParams& hp) {
  const std::string p = hp.arch + ".rope.scaling.";
  const double factor = f.get_float_opt(p + "factor").value_or(8.0);
  const double low = f.get_float_opt(p + "low_freq_factor").value_or(1.0);
  const double high = f.get_float_opt(p + "high_freq_factor").value_or(4.0);
  const double orig = f.get_float_opt(p + "original_context_length").value_or(8192.0);
  const double low_wl = orig / low;
  const double high_wl = orig / high;
  std::vector<float> ff(hp.rope.n_dims / 2);
  for (int i = 0; i < hp.rope.n_dims / 2; ++i) {
    const double freq = std::pow(static_cast<double>(hp.rope.freq_base), -2.0 * i / hp.rope.n_dims);
    const double wl = 2.0 * M_PI / freq;
    if (wl < high_wl) {
      ff[i] = 1.0f;
    } else if (wl > low_wl) {
      ff[i] = static_cast<float>(factor);
    } else {
      const double smooth = (orig / wl - low) / (high - low);
      ff[i] = static_cast<float>(1.0 / ((1.0 - smooth) / factor + smooth));
    }
  }
  return ff;
}

}  // namespace

void build_llama(const gguf::File& f, Model& m) {
  m.hp_ = read_common_hparams(f, "llama");
  m.hp_.rope.neox = false;
  m.hp_.qkv_bias = false;
  load_decoder_weights(f, m);
  if (m.rope_freq_factors.empty() &&
      f.get_string_opt("llama.rope.scaling.type").value_or("") == "llama3") {
    m.rope_freq_factors = llama3_freq_factors(f, m.hp_);
  }
}

}  // namespace ranklm
