#include "plan/identity.h"

#include <algorithm>

#include "model/arch.h"
#include "util/error.h"

namespace ranklm::plan {

ModelIdentity model_identity(const gguf::File& f) {
  const HParams hp = read_hparams(f);
  const std::string embd_name = tensor_name(TensorId::kTokEmbd);
  const gguf::TensorInfo& emb = f.tensor(embd_name);
  if (emb.ne.size() != 2 || emb.ne[0] != hp.n_embd) {
    fail("{}: tensor '{}': shape {} (expected [{}, n_vocab])", f.path(), embd_name, emb.shape_string(), hp.n_embd);
  }
  ModelIdentity m;
  m.name = hp.name;
  m.arch = hp.arch;
  m.n_layer = hp.n_layer;
  m.n_head = hp.n_head;
  m.n_head_kv = hp.n_head_kv;
  m.n_embd = hp.n_embd;
  m.n_ff = hp.n_ff;
  m.n_expert = hp.n_expert;
  m.n_expert_used = hp.n_expert_used;
  m.n_vocab = emb.ne[1];
  m.gguf_hash = fnv1a64_hex(f.bytes(), static_cast<size_t>(f.data_offset()));
  return m;
}

TpShape tp_shape(const gguf::File& f) {
  const HParams hp = read_hparams(f);
  TpShape s;
  s.n_embd = hp.n_embd;
  s.n_head = hp.n_head;
  s.n_head_kv = hp.n_head_kv;
  s.head_dim = hp.head_dim;
  s.n_ff = hp.n_ff;
  s.n_expert = hp.n_expert;
  s.attn_output_block = s.ffn_down_block = 1;
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    const int64_t ob = kern::traits(f.tensor(tensor_name(TensorId::kAttnOut, il)).type).block_size;
    s.attn_output_block = std::max(s.attn_output_block, ob);
    if (const gguf::TensorInfo* down = f.find_tensor(tensor_name(TensorId::kFfnDown, il))) {  // dense layers
      s.ffn_down_block = std::max(s.ffn_down_block, kern::traits(down->type).block_size);
    }
  }
  return s;
}

void check_tp_slicing(const gguf::File& f, const Plan& p) {
  const TpShape s = tp_shape(f);
  for (size_t st = 0; st < p.stages.size(); ++st) {
    const int tp = p.stages[st].tp();
    try {
      for (int i = 0; i < tp; ++i) tp_part(s, tp, i, p.tp_mode, p.ep);
    } catch (const Error& e) {
      fail("{}: stage {}: {}", f.path(), st, e.what());
    }
  }
}

}  // namespace ranklm::plan
