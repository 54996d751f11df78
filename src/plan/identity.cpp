#include "plan/identity.h"

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

}  // namespace ranklm::plan
