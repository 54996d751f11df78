#include "model/arch.h"

#include <charconv>
#include <cmath>

#include "util/error.h"

namespace ranklm {

namespace {

struct TensorKind {
  TensorId id;
  const char* name;  // after "blk.N." for per-layer tensors
  bool per_layer;
  TpSplit split;
};

// The one table of GGUF tensor names (llama.cpp's names for these blocks).
constexpr TensorKind kTensors[] = {
    {TensorId::kTokEmbd, "token_embd.weight", false, TpSplit::kWhole},
    {TensorId::kOutputNorm, "output_norm.weight", false, TpSplit::kWhole},
    {TensorId::kOutput, "output.weight", false, TpSplit::kWhole},
    {TensorId::kRopeFreqs, "rope_freqs.weight", false, TpSplit::kWhole},
    {TensorId::kAttnNorm, "attn_norm.weight", true, TpSplit::kWhole},
    {TensorId::kAttnQ, "attn_q.weight", true, TpSplit::kQHeads},
    {TensorId::kAttnK, "attn_k.weight", true, TpSplit::kKvHeads},
    {TensorId::kAttnV, "attn_v.weight", true, TpSplit::kKvHeads},
    {TensorId::kAttnOut, "attn_output.weight", true, TpSplit::kAttnOutput},
    {TensorId::kAttnQBias, "attn_q.bias", true, TpSplit::kQHeads},
    {TensorId::kAttnKBias, "attn_k.bias", true, TpSplit::kKvHeads},
    {TensorId::kAttnVBias, "attn_v.bias", true, TpSplit::kKvHeads},
    {TensorId::kAttnQNorm, "attn_q_norm.weight", true, TpSplit::kWhole},
    {TensorId::kAttnKNorm, "attn_k_norm.weight", true, TpSplit::kWhole},
    {TensorId::kAttnPostNorm, "post_attention_norm.weight", true, TpSplit::kWhole},
    {TensorId::kFfnNorm, "ffn_norm.weight", true, TpSplit::kWhole},
    {TensorId::kFfnGate, "ffn_gate.weight", true, TpSplit::kFfnRows},
    {TensorId::kFfnUp, "ffn_up.weight", true, TpSplit::kFfnRows},
    {TensorId::kFfnDown, "ffn_down.weight", true, TpSplit::kFfnDown},
    {TensorId::kFfnPostNorm, "post_ffw_norm.weight", true, TpSplit::kWhole},
    // Mixture of experts: the router [n_expert, n_embd] and the experts stacked along a third
    // dimension (one expert's matrix after another).
    {TensorId::kFfnGateInp, "ffn_gate_inp.weight", true, TpSplit::kWhole},
    {TensorId::kFfnGateExps, "ffn_gate_exps.weight", true, TpSplit::kExperts},
    {TensorId::kFfnUpExps, "ffn_up_exps.weight", true, TpSplit::kExperts},
    {TensorId::kFfnDownExps, "ffn_down_exps.weight", true, TpSplit::kExperts},
};

const TensorKind& kind(TensorId id) {
  for (const TensorKind& k : kTensors) {
    if (k.id == id) return k;
  }
  fail("tensor id {} is not in the tensor table (a bug)", static_cast<int>(id));
}

// The registry: one line per architecture.
constexpr Arch kArchs[] = {
    {"llama", "Llama 2/3, Mistral, Mixtral, TinyLlama, SmolLM2", &blocks_llama, &configure_llama, &describe_llama},
    {"qwen2", "Qwen2, Qwen2.5", &blocks_qwen2, nullptr, nullptr},
    {"qwen3", "Qwen3 (dense)", &blocks_qwen3, nullptr, nullptr},
    {"qwen3moe", "Qwen3 MoE (Qwen3-30B-A3B, Qwen3-235B-A22B)", &blocks_qwen3, &configure_qwen3moe, &describe_qwen3moe},
    {"gemma3", "Gemma 3 (text)", &blocks_gemma3, &configure_gemma3, &describe_gemma3},
};

}  // namespace

std::string tensor_name(TensorId id, int64_t layer) {
  const TensorKind& k = kind(id);
  if (!k.per_layer) return k.name;
  if (layer < 0) fail("tensor '{}' belongs to a layer; no layer given (a bug)", k.name);
  return "blk." + std::to_string(layer) + "." + k.name;
}

TpSplit tp_split(TensorId id) { return kind(id).split; }

std::optional<int64_t> layer_of(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return std::nullopt;
  const size_t dot = name.find('.', 4);
  const size_t end = dot == std::string_view::npos ? name.size() : dot;
  int64_t il = 0;
  const auto [ptr, ec] = std::from_chars(name.data() + 4, name.data() + end, il);
  if (ec != std::errc() || ptr != name.data() + end || end == 4 || il < 0) return std::nullopt;
  return il;
}

std::optional<NamedTensor> parse_tensor_name(std::string_view name) {
  if (const std::optional<int64_t> il = layer_of(name)) {
    const std::string_view rest = name.substr(name.find('.', 4) + 1);
    for (const TensorKind& k : kTensors) {
      if (k.per_layer && rest == k.name) return NamedTensor{k.id, *il};
    }
    return std::nullopt;
  }
  for (const TensorKind& k : kTensors) {
    if (!k.per_layer && name == k.name) return NamedTensor{k.id, -1};
  }
  return std::nullopt;
}

float HParams::scores_scale() const {
  if (q_prescaled) return 1.0f;
  return attn_scale > 0 ? attn_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

std::vector<TensorDecl> model_tensors(const HParams& hp) {
  std::vector<TensorDecl> out;
  const int64_t E = hp.n_embd, hd = hp.head_dim, q = hp.n_head * hd, kv = hp.n_head_kv * hd, ff = hp.n_ff;
  out.push_back({TensorId::kTokEmbd, -1, {E, hp.n_vocab}});
  out.push_back({TensorId::kOutputNorm, -1, {E}});
  if (!hp.tied_output) out.push_back({TensorId::kOutput, -1, {E, hp.n_vocab}});
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    auto add = [&](TensorId id, std::vector<int64_t> ne) { out.push_back({id, il, std::move(ne)}); };
    add(TensorId::kAttnNorm, {E});
    add(TensorId::kAttnQ, {E, q});
    add(TensorId::kAttnK, {E, kv});
    add(TensorId::kAttnV, {E, kv});
    if (hp.qkv_bias) {
      add(TensorId::kAttnQBias, {q});
      add(TensorId::kAttnKBias, {kv});
      add(TensorId::kAttnVBias, {kv});
    }
    if (hp.qk_norm) {
      add(TensorId::kAttnQNorm, {hd});
      add(TensorId::kAttnKNorm, {hd});
    }
    add(TensorId::kAttnOut, {q, E});
    if (hp.post_norms) add(TensorId::kAttnPostNorm, {E});
    add(TensorId::kFfnNorm, {E});
    if (hp.moe()) {
      const int64_t fe = hp.n_ff_exp, ne = hp.n_expert;
      add(TensorId::kFfnGateInp, {E, ne});
      add(TensorId::kFfnGateExps, {E, fe, ne});
      add(TensorId::kFfnUpExps, {E, fe, ne});
      add(TensorId::kFfnDownExps, {fe, E, ne});
    } else {
      add(TensorId::kFfnGate, {E, ff});
      add(TensorId::kFfnUp, {E, ff});
      add(TensorId::kFfnDown, {ff, E});
    }
    if (hp.post_norms) add(TensorId::kFfnPostNorm, {E});
  }
  return out;
}

std::vector<BlockKind> layer_blocks(const HParams& hp, int64_t /*il*/) {
  return {BlockKind::kAttention, hp.moe() ? BlockKind::kMoeFfn : BlockKind::kDenseFfn};
}

void read_expert_hparams(const gguf::File& f, HParams& hp, bool own_ff_key) {
  const std::string p = hp.arch + ".";
  hp.n_expert = f.get_int_opt(p + "expert_count").value_or(0);
  if (hp.n_expert == 0) return;
  constexpr int64_t kMaxExperts = 4096;
  if (hp.n_expert < 0 || hp.n_expert > kMaxExperts) {
    fail("{}: metadata '{}expert_count': {} out of range 0..{}", f.path(), p, hp.n_expert, kMaxExperts);
  }
  if (!f.find(p + "expert_used_count")) {
    fail("{}: metadata '{}expert_count' is {} but '{}expert_used_count' is missing; the file is damaged or badly "
         "converted", f.path(), p, hp.n_expert, p);
  }
  hp.n_expert_used = f.get_int(p + "expert_used_count");
  if (hp.n_expert_used < 1 || hp.n_expert_used > hp.n_expert) {
    fail("{}: metadata '{}expert_used_count': {} out of range 1..{} (expert_count)", f.path(), p, hp.n_expert_used,
         hp.n_expert);
  }
  hp.n_ff_exp = own_ff_key ? f.get_int(p + "expert_feed_forward_length") : hp.n_ff;
  if (hp.n_ff_exp < 1 || hp.n_ff_exp > (1 << 22)) {
    fail("{}: metadata '{}expert_feed_forward_length': {} out of range 1..{}", f.path(), p, hp.n_ff_exp, 1 << 22);
  }
  // Experts stored one tensor each (blk.N.ffn_gate.E.weight, early Mixtral conversions) are not read.
  if (!f.find_tensor(tensor_name(TensorId::kFfnGateExps, 0)) && f.find_tensor("blk.0.ffn_gate.0.weight")) {
    fail("{}: the experts are stored one tensor each (blk.0.ffn_gate.0.weight), a layout of early conversions; "
         "convert the model again with a current llama.cpp convert_hf_to_gguf.py (stacked ffn_gate_exps)", f.path());
  }
}

void write_expert_hparams(gguf::Writer& w, const HParams& hp, bool own_ff_key) {
  if (!hp.moe()) return;
  const std::string p = hp.arch + ".";
  w.set_u32(p + "expert_count", static_cast<uint32_t>(hp.n_expert));
  w.set_u32(p + "expert_used_count", static_cast<uint32_t>(hp.n_expert_used));
  if (own_ff_key) w.set_u32(p + "expert_feed_forward_length", static_cast<uint32_t>(hp.n_ff_exp));
}

const Arch* find_arch(std::string_view name) {
  for (const Arch& a : kArchs) {
    if (name == a.name) return &a;
  }
  return nullptr;
}

std::string arch_names() {
  std::string known;
  for (const Arch& a : kArchs) known += std::string(known.empty() ? "" : ", ") + a.name;
  return known;
}

HParams read_hparams(const gguf::File& f) {
  const std::string name = f.get_string("general.architecture");
  const Arch* a = find_arch(name);
  if (!a) {
    fail("{}: metadata 'general.architecture': '{}' is not supported (supported: {})", f.path(), name, arch_names());
  }
  HParams hp = read_common_hparams(f, a->name);
  a->blocks(hp);
  if (a->configure) a->configure(f, hp);
  return hp;
}

void write_hparams(gguf::Writer& w, const HParams& hp) {
  const Arch* a = find_arch(hp.arch);
  if (!a) fail("architecture '{}' is not supported (supported: {})", hp.arch, arch_names());
  const std::string p = hp.arch + ".";
  auto u32 = [&](const char* key, int64_t v) { w.set_u32(p + key, static_cast<uint32_t>(v)); };
  w.set_string("general.architecture", hp.arch);
  u32("context_length", hp.n_ctx_train);
  u32("embedding_length", hp.n_embd);
  u32("block_count", hp.n_layer);
  u32("feed_forward_length", hp.n_ff);
  u32("attention.head_count", hp.n_head);
  u32("attention.head_count_kv", hp.n_head_kv);
  if (hp.head_dim * hp.n_head != hp.n_embd) {
    u32("attention.key_length", hp.head_dim);
    u32("attention.value_length", hp.head_dim);
  }
  u32("rope.dimension_count", hp.rope.n_dims);
  w.set_f32(p + "rope.freq_base", hp.rope.freq_base);
  w.set_f32(p + "attention.layer_norm_rms_epsilon", hp.rms_eps);
  u32("vocab_size", hp.n_vocab);
  if (a->describe) a->describe(w, hp);
}

std::vector<uint8_t> swa_pattern(int64_t n_layer, int64_t period) {
  std::vector<uint8_t> out(static_cast<size_t>(n_layer), 0);
  for (int64_t il = 0; il < n_layer; ++il) out[static_cast<size_t>(il)] = period == 0 || il % period < period - 1 ? 1 : 0;
  return out;
}

HParams read_common_hparams(const gguf::File& f, const std::string& arch) {
  HParams hp;
  hp.arch = arch;
  hp.name = f.get_string_opt("general.name").value_or("");
  const std::string p = arch + ".";
  hp.n_embd = f.get_int(p + "embedding_length");
  hp.n_layer = f.get_int(p + "block_count");
  hp.n_ff = f.get_int(p + "feed_forward_length");
  hp.n_head = f.get_int(p + "attention.head_count");
  hp.n_head_kv = f.get_int_opt(p + "attention.head_count_kv").value_or(hp.n_head);
  hp.n_ctx_train = f.get_int_opt(p + "context_length").value_or(4096);
  hp.rms_eps = static_cast<float>(f.get_float(p + "attention.layer_norm_rms_epsilon"));
  if (!(hp.rms_eps > 0 && hp.rms_eps < 1)) {
    fail("{}: metadata '{}attention.layer_norm_rms_epsilon': {} must be a small positive number (typically 1e-5 or "
         "1e-6); the file is damaged or badly converted", f.path(), p, hp.rms_eps);
  }
  if (hp.n_ctx_train < 1 || hp.n_ctx_train > (int64_t{1} << 24)) {
    fail("{}: metadata '{}context_length': {} out of range 1..{}", f.path(), p, hp.n_ctx_train, int64_t{1} << 24);
  }
  auto check_pos = [&](const char* key, int64_t v, int64_t hi) {
    if (v <= 0 || v > hi) fail("{}: metadata '{}{}': {} out of range 1..{}", f.path(), p, key, v, hi);
  };
  check_pos("embedding_length", hp.n_embd, 1 << 20);
  check_pos("block_count", hp.n_layer, 4096);
  check_pos("feed_forward_length", hp.n_ff, 1 << 22);
  check_pos("attention.head_count", hp.n_head, 1 << 14);
  check_pos("attention.head_count_kv", hp.n_head_kv, hp.n_head);
  if (hp.n_head % hp.n_head_kv != 0) {
    fail("{}: metadata '{}attention.head_count_kv': {} does not divide head_count {}", f.path(), p,
         hp.n_head_kv, hp.n_head);
  }
  const std::optional<int64_t> key_length = f.get_int_opt(p + "attention.key_length");
  if (!key_length && hp.n_embd % hp.n_head != 0) {
    fail("{}: metadata '{}attention.head_count': {} does not divide embedding_length {} (and there is no "
         "attention.key_length to give the head size)", f.path(), p, hp.n_head, hp.n_embd);
  }
  hp.head_dim = key_length.value_or(hp.n_embd / hp.n_head);
  check_pos("attention.key_length", hp.head_dim, 1 << 14);
  if (auto vl = f.get_int_opt(p + "attention.value_length"); vl && *vl != hp.head_dim) {
    fail("{}: metadata '{}attention.value_length': {} differs from key_length {} (not supported)",
         f.path(), p, *vl, hp.head_dim);
  }
  const double freq_base = f.get_float_opt(p + "rope.freq_base").value_or(10000.0);
  if (!(freq_base > 0 && freq_base < 1e12)) {
    fail("{}: metadata '{}rope.freq_base': {} must be a positive number (typically 1e4 to 1e6)", f.path(), p, freq_base);
  }
  hp.rope.freq_base = static_cast<float>(freq_base);
  hp.rope.n_dims = static_cast<int>(f.get_int_opt(p + "rope.dimension_count").value_or(hp.head_dim));
  if (hp.rope.n_dims <= 0 || hp.rope.n_dims > hp.head_dim || hp.rope.n_dims % 2 != 0) {
    fail("{}: metadata '{}rope.dimension_count': {} must be even and in 2..{}", f.path(), p,
         hp.rope.n_dims, hp.head_dim);
  }
  // Linear scaling ("linear") divides positions by the factor; "none" or absent leaves them.
  const std::string scaling = f.get_string_opt(p + "rope.scaling.type").value_or("none");
  const double factor = f.get_float_opt(p + "rope.scaling.factor").value_or(1.0);
  if (scaling == "linear") {
    if (!(factor > 0 && factor < 1e6)) fail("{}: metadata '{}rope.scaling.factor': {} must be > 0", f.path(), p, factor);
    hp.rope.freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling == "yarn" || scaling == "longrope") {
    fail("{}: metadata '{}rope.scaling.type': '{}' is not supported yet", f.path(), p, scaling);
  }
  hp.tied_output = !f.find_tensor(tensor_name(TensorId::kOutput));
  return hp;
}

}  // namespace ranklm
