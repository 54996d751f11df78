#include "plan/identity.h"

#include <algorithm>

#include "model/model.h"
#include "util/error.h"

namespace ranklm::plan {

ModelIdentity model_identity(const gguf::File& f) {
  const std::string arch = f.get_string("general.architecture");
  const HParams hp = read_common_hparams(f, arch);
  const gguf::TensorInfo& emb = f.tensor("token_embd.weight");
  if (emb.ne.size() != 2 || emb.ne[0] != hp.n_embd) {
    fail("{}: tensor 'token_embd.weight': shape {} (expected [{}, n_vocab])", f.path(),
         emb.shape_string(), hp.n_embd);
  }
  ModelIdentity m;
  m.name = hp.name;
  m.arch = arch;
  m.n_layer = hp.n_layer;
  m.n_head = hp.n_head;
  m.n_head_kv = hp.n_head_kv;
  m.n_embd = hp.n_embd;
  m.n_ff = hp.n_ff;
  m.n_vocab = emb.ne[1];
  m.gguf_hash = fnv1a64_hex(f.bytes(), static_cast<size_t>(f.data_offset()));
  return m;
}

TpShape tp_shape(const gguf::File& f) {
  const std::string arch = f.get_string("general.architecture");
  const HParams hp = read_common_hparams(f, arch);
  TpShape s;
  s.n_embd = hp.n_embd;
  s.n_head = hp.n_head;
  s.n_head_kv = hp.n_head_kv;
  s.head_dim = hp.head_dim;
  s.n_ff = hp.n_ff;
  s.attn_output_block = s.ffn_down_block = 1;
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    const int64_t ob = kern::traits(f.tensor(b + "attn_output.weight").type).block_size;
    const int64_t db = kern::traits(f.tensor(b + "ffn_down.weight").type).block_size;
    s.attn_output_block = std::max(s.attn_output_block, ob);
    s.ffn_down_block = std::max(s.ffn_down_block, db);
  }
  return s;
}

void check_tp_slicing(const gguf::File& f, const Plan& p) {
  const TpShape s = tp_shape(f);
  for (size_t st = 0; st < p.stages.size(); ++st) {
    const int tp = p.stages[st].tp();
    try {
      for (int i = 0; i < tp; ++i) tp_part(s, tp, i, p.tp_mode);
    } catch (const Error& e) {
      fail("{}: stage {}: {}", f.path(), st, e.what());
    }
  }
}

}  // namespace ranklm::plan
