// Architecture "gemma3": Gemma 3 text models (270M .. 27B). Against llama:
//  - embeddings scaled by sqrt(embedding_length);
//  - per-head Q/K RMS norms before RoPE, NeoX RoPE; Q multiplied by the attention scale before
//    attention (1 / sqrt(head size); 1 / sqrt(embedding_length / head_count) for the 62-layer
//    27B, as its reference implementation does);
//  - RMS norms of the attention and FFN outputs before each residual add;
//  - a GELU-tanh gated FFN;
//  - sliding-window attention on the layers of the pattern (default: five windowed, then one
//    global), windowed layers rotating with rope.freq_base_swa (default 1e4) and no frequency
//    scaling, global ones with rope.freq_base;
//  - optional final logit soft-capping.
// Norm weights are stored with Gemma's "1 +" already added (as llama.cpp's converter writes them).
#include <cmath>

#include "model/arch.h"
#include "util/error.h"

namespace ranklm {

namespace {

// attention.sliding_window_pattern: a period (every period-th layer global; 0: every layer
// windowed) or one value per layer (nonzero or true: windowed), as llama.cpp reads it.
std::vector<uint8_t> read_pattern(const gguf::File& f, const std::string& key, int64_t n_layer) {
  const gguf::Value* v = f.find(key);
  if (!v) return swa_pattern(n_layer, 6);
  if (v->type == gguf::ValueType::ARRAY) {
    const bool ok_type = v->elem_type == gguf::ValueType::BOOL || (!v->arr.empty() && v->arr[0].is_integer());
    if (static_cast<int64_t>(v->arr.size()) != n_layer || !ok_type) {
      fail("{}: metadata '{}': {} must be {} booleans or integers (one per layer; nonzero: windowed) or a period",
           f.path(), key, v->to_string(), n_layer);
    }
    std::vector<uint8_t> out;
    for (const gguf::Value& e : v->arr) out.push_back(e.u != 0 || e.i != 0 ? 1 : 0);
    return out;
  }
  const int64_t period = f.get_int(key);
  if (period < 0 || period > n_layer + 1) {
    fail("{}: metadata '{}': {} out of range 0..{} (the period of global layers)", f.path(), key, period, n_layer + 1);
  }
  return swa_pattern(n_layer, period);
}

}  // namespace

void blocks_gemma3(HParams& hp) {
  hp.rope.neox = true;
  hp.qk_norm = true;
  hp.post_norms = true;
  hp.ffn_act = FfnAct::kGeluTanh;
  hp.embd_scale = std::sqrt(static_cast<float>(hp.n_embd));
  hp.q_prescaled = true;
  hp.attn_scale = hp.n_layer == 62 ? 1.0f / std::sqrt(static_cast<float>(hp.n_embd / hp.n_head))
                                   : 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
}

void configure_gemma3(const gguf::File& f, HParams& hp) {
  const std::string p = "gemma3.";
  hp.swa_window = f.get_int_opt(p + "attention.sliding_window").value_or(0);
  if (hp.swa_window < 0 || hp.swa_window > (int64_t{1} << 24)) {
    fail("{}: metadata '{}attention.sliding_window': {} out of range 0..{}", f.path(), p, hp.swa_window, int64_t{1} << 24);
  }
  if (hp.swa_window > 0) hp.swa_layers = read_pattern(f, p + "attention.sliding_window_pattern", hp.n_layer);
  const double base_swa = f.get_float_opt(p + "rope.freq_base_swa").value_or(10000.0);
  if (!(base_swa > 0 && base_swa < 1e12)) {
    fail("{}: metadata '{}rope.freq_base_swa': {} must be a positive number (typically 1e4)", f.path(), p, base_swa);
  }
  hp.rope_base_swa = static_cast<float>(base_swa);
  const double cap = f.get_float_opt(p + "final_logit_softcapping").value_or(0.0);
  if (!(cap >= 0 && cap < 1e6)) fail("{}: metadata '{}final_logit_softcapping': {} must be >= 0", f.path(), p, cap);
  hp.final_softcap = static_cast<float>(cap);
}

void describe_gemma3(gguf::Writer& w, const HParams& hp) {
  if (hp.swa_window > 0) w.set_u32("gemma3.attention.sliding_window", static_cast<uint32_t>(hp.swa_window));
  if (hp.rope_base_swa != 10000.0f) w.set_f32("gemma3.rope.freq_base_swa", hp.rope_base_swa);
}

}  // namespace ranklm
