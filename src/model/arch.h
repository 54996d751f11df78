// The architecture registry: what a GGUF's `general.architecture` means to ranklm.
//
// Every architecture ranklm reads is a pre-norm decoder assembled from the same blocks
// (layer_blocks: attention, then a dense or a mixture-of-experts FFN); an
// architecture file (arch_<name>.cpp) reads its metadata keys into HParams and switches those
// blocks on: Q/K/V biases, per-head Q/K RMS norms, NeoX or interleaved RoPE, sliding-window
// layers with their own RoPE base, post-attention / post-FFN norms, SiLU or GELU-tanh gating,
// embedding scale, query pre-scaling, logit soft-capping. The tensors a model holds follow from
// those switches (model_tensors), and their GGUF names and tensor-parallel splits come from the
// one tensor table here (tensor_name, parse_tensor_name, tp_split): no other file of src/ or
// tools/ spells a GGUF tensor name.
//
// Adding an architecture: one arch_<name>.cpp with its blocks (and, if it has keys of its own,
// configure) function, and its line in
// kArchs (arch.cpp) and in src/CMakeLists.txt. docs/ARCHITECTURE.md walks through qwen3.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "kernels/ops.h"

namespace ranklm {

enum class FfnAct { kSilu, kGeluTanh };

// Llama 3.1 "llama3" RoPE frequency scaling from metadata (used when the file has no
// rope_freqs.weight tensor).
struct Llama3Rope {
  double factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_context = 8192.0;
};

struct HParams {
  std::string arch;
  std::string name;
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;       // key/query head size
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  kern::RopeParams rope;      // freq_factors filled in by the model when present
  std::optional<Llama3Rope> llama3_rope;
  // Blocks an architecture switches on.
  bool qkv_bias = false;      // biases on the Q, K and V projections
  bool qk_norm = false;       // per-head RMS norms of Q and K, before RoPE
  bool post_norms = false;    // RMS norms of the attention and FFN outputs, before each residual add
  FfnAct ffn_act = FfnAct::kSilu;
  float embd_scale = 0;       // embeddings multiplied by this (0: not scaled)
  // Attention scale. Applied to the scores, unless q_prescaled: then Q is multiplied by it
  // after RoPE and the scores are not scaled (as Gemma does; the fp16 rounding of Q differs).
  float attn_scale = 0;       // 0: 1 / sqrt(head_dim)
  bool q_prescaled = false;
  float final_softcap = 0;    // logits = c * tanh(logits / c) when > 0
  // Sliding-window attention: layers with swa_layers[il] != 0 see only the last swa_window
  // positions and rotate with rope_base_swa (and no frequency scaling).
  int64_t swa_window = 0;
  std::vector<uint8_t> swa_layers;
  float rope_base_swa = 10000.0f;
  bool tied_output = false;
  // Mixture of experts (n_expert 0: every FFN dense): the router picks n_expert_used of n_expert
  // gated FFNs of n_ff_exp rows per token (expert_feed_forward_length; feed_forward_length when
  // the architecture has no such key, as for Mixtral).
  int64_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0;

  bool moe() const { return n_expert > 0; }
  bool windowed(int64_t il) const {
    return swa_window > 0 && il >= 0 && il < static_cast<int64_t>(swa_layers.size()) && swa_layers[static_cast<size_t>(il)] != 0;
  }
  float scores_scale() const;  // what the attention kernel multiplies the scores by
};

// ---- the tensor table ----
enum class TensorId : uint8_t {
  kTokEmbd, kOutputNorm, kOutput, kRopeFreqs,
  kAttnNorm, kAttnQ, kAttnK, kAttnV, kAttnOut, kAttnQBias, kAttnKBias, kAttnVBias,
  kAttnQNorm, kAttnKNorm, kAttnPostNorm,
  kFfnNorm, kFfnGate, kFfnUp, kFfnDown, kFfnPostNorm,
  kFfnGateInp, kFfnGateExps, kFfnUpExps, kFfnDownExps,
};

// How tensor parallelism cuts a tensor (plan/tp_slice.h has the rules): whole on every member,
// by the members' query heads or KV heads (rows of a matrix, elements of a bias), by FFN rows,
// the two products whose inputs are split (attention output, FFN down), or by experts (the
// stacked expert tensors of an MoE layer, which a group splits by expert: expert parallelism).
enum class TpSplit { kWhole, kQHeads, kKvHeads, kFfnRows, kAttnOutput, kFfnDown, kExperts };

// The blocks a layer is made of, in order (model/block.h).
enum class BlockKind { kAttention, kDenseFfn, kMoeFfn };
std::vector<BlockKind> layer_blocks(const HParams& hp, int64_t il);

// The GGUF name: "token_embd.weight", or "blk.<layer>.attn_q.weight" for per-layer tensors.
std::string tensor_name(TensorId id, int64_t layer = -1);
TpSplit tp_split(TensorId id);

struct NamedTensor {
  TensorId id;
  int64_t layer;  // -1 for tensors outside the layers
};
// What a GGUF tensor name means; nullopt for names no architecture here uses.
std::optional<NamedTensor> parse_tensor_name(std::string_view name);
// The layer of a "blk.N.<...>" name (any suffix), or nullopt.
std::optional<int64_t> layer_of(std::string_view name);

// The tensors of a model with these hyperparameters, each with its GGUF shape (ne: columns
// first). `tied`: no output.weight.
struct TensorDecl {
  TensorId id;
  int64_t layer;
  std::vector<int64_t> ne;
};
std::vector<TensorDecl> model_tensors(const HParams& hp);

// ---- the registry ----
struct Arch {
  const char* name;
  const char* examples;  // model families, for messages and docs
  // Switches the architecture's blocks on (from the sizes already in hp; no metadata read).
  void (*blocks)(HParams& hp);
  // Reads the architecture's own metadata keys, after the common ones (null: it has none).
  void (*configure)(const gguf::File& f, HParams& hp);
  // Writes those keys back (ranklm-synth); the common ones are written by write_hparams.
  void (*describe)(gguf::Writer& w, const HParams& hp);
};

// The architecture named `name`, or nullptr.
const Arch* find_arch(std::string_view name);
// Every architecture, in registry order, as "llama, qwen2, ...".
std::string arch_names();
// Every hyperparameter of the file's architecture (fails naming the file and the supported
// architectures when it is not one of them, and any metadata value out of bounds).
HParams read_hparams(const gguf::File& f);
// The metadata of `hp` under its architecture's keys (for ranklm-synth).
void write_hparams(gguf::Writer& w, const HParams& hp);

// Building blocks of the architecture files.
// The keys every decoder here stores under "<arch>.": sizes, norm epsilon, RoPE base, scaling.
HParams read_common_hparams(const gguf::File& f, const std::string& arch);
// Gemma-style layer pattern: layer il is windowed unless il % period == period - 1 (period 0:
// every layer windowed).
std::vector<uint8_t> swa_pattern(int64_t n_layer, int64_t period);

void blocks_llama(HParams& hp);                           // arch_llama.cpp
void configure_llama(const gguf::File& f, HParams& hp);
// The rope_freqs divisors of Llama 3.1 scaling (hp.llama3_rope), for files without the tensor.
std::vector<float> llama3_freq_factors(const HParams& hp);
void describe_llama(gguf::Writer& w, const HParams& hp);
void blocks_qwen2(HParams& hp);                           // arch_qwen2.cpp
void blocks_qwen3(HParams& hp);                           // arch_qwen3.cpp
void configure_qwen3moe(const gguf::File& f, HParams& hp);  // arch_qwen3moe.cpp
void describe_qwen3moe(gguf::Writer& w, const HParams& hp);
// The expert keys "<arch>.expert_count" / "expert_used_count" (and expert_feed_forward_length
// when `own_ff_key`; else the experts have feed_forward_length rows), checked.
void read_expert_hparams(const gguf::File& f, HParams& hp, bool own_ff_key);
void write_expert_hparams(gguf::Writer& w, const HParams& hp, bool own_ff_key);
void blocks_gemma3(HParams& hp);                          // arch_gemma3.cpp
void configure_gemma3(const gguf::File& f, HParams& hp);
void describe_gemma3(gguf::Writer& w, const HParams& hp);

}  // namespace ranklm
