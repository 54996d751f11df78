#include "backend/cpu.h"

#include <cstring>

#include "kernels/cpu.h"
#include "sys/cpu_binding.h"
#include "util/error.h"

namespace ranklm::backend {

CpuBackend::CpuBackend(std::unique_ptr<Model> model, int n_threads)
    : model_(std::move(model)), pool_(std::make_unique<kern::ThreadPool>(n_threads, sys::core_binder(n_threads))) {
  const HParams& hp = model_->hparams();
  const ModelPart& pt = model_->part();
  info_ = runtime::BackendInfo{.name = std::string("cpu (") + kern::isa_name(kern::active_isa()) + ")",
                               .n_embd = hp.n_embd,
                               .n_vocab = hp.n_vocab,
                               .n_ctx_train = hp.n_ctx_train,
                               .embeds = pt.embed,
                               .has_head = pt.head,
                               .vocab_begin = pt.vocab_begin,
                               .vocab_end = pt.vocab_end < 0 ? hp.n_vocab : pt.vocab_end};
}

CpuBackend::~CpuBackend() = default;

int64_t CpuBackend::kv_bytes(int64_t n_ctx) const { return model_->kv_cache_bytes(n_ctx); }

runtime::KvHandle CpuBackend::kv_create(int64_t n_ctx) {
  auto c = std::make_unique<KvCache>(model_->make_cache(n_ctx));
  for (size_t i = 0; i < caches_.size(); ++i) {
    if (!caches_[i]) {
      caches_[i] = std::move(c);
      return {static_cast<int32_t>(i)};
    }
  }
  caches_.push_back(std::move(c));
  return {static_cast<int32_t>(caches_.size() - 1)};
}

KvCache& CpuBackend::cache(runtime::KvHandle kv) {
  if (kv.id < 0 || static_cast<size_t>(kv.id) >= caches_.size() || !caches_[static_cast<size_t>(kv.id)]) {
    fail("cpu backend: KV handle {} is not a live sequence (a bug)", kv.id);
  }
  return *caches_[static_cast<size_t>(kv.id)];
}

void CpuBackend::kv_free(runtime::KvHandle kv) {
  cache(kv);
  caches_[static_cast<size_t>(kv.id)].reset();
}

void CpuBackend::kv_copy(runtime::KvHandle src, runtime::KvHandle dst, int64_t n_pos) {
  const KvCache& s = cache(src);
  KvCache& d = cache(dst);
  if (n_pos < 0 || n_pos > s.n_ctx || n_pos > d.n_ctx) {
    fail("cpu backend: copying {} positions between caches of {} and {}", n_pos, s.n_ctx, d.n_ctx);
  }
  const size_t n = static_cast<size_t>(n_pos * s.kv_dim);
  for (size_t l = 0; l < s.k.size(); ++l) {
    std::memcpy(d.k[l].data(), s.k[l].data(), n * sizeof(uint16_t));
    std::memcpy(d.v[l].data(), s.v[l].data(), n * sizeof(uint16_t));
  }
}

void CpuBackend::set_collectives(runtime::TpCollectives* c) {
  if (!c) {
    model_->set_tp_hooks({});
    return;
  }
  TpHooks hooks;
  hooks.allreduce = [c](float* x, int64_t n) { c->allreduce(x, n); };
  hooks.gather = [this, c](const float* local, int64_t n_tok, TpGather what, float* full) {
    const ModelPart& pt = model_->part();
    const std::vector<int64_t>& w = what == TpGather::kHeads ? pt.member_heads
                                    : what == TpGather::kFfn ? pt.member_ffn
                                                             : pt.member_rows;
    c->allgather_columns(local, n_tok, w, full);
  };
  model_->set_tp_hooks(std::move(hooks));
}

void CpuBackend::embed(const int32_t* tokens, int64_t n_tok, float* x) { model_->embed(tokens, n_tok, x); }

void CpuBackend::run_layers(float* x, const runtime::SeqRun* seqs, int n_seq) {
  spans_.clear();
  for (int i = 0; i < n_seq; ++i) spans_.push_back({&cache(seqs[i].kv), seqs[i].pos0, seqs[i].n_tok});
  model_->run_layers(x, spans_.data(), n_seq, *pool_);
}

void CpuBackend::head(const float* x, const int64_t* rows, int64_t n_rows, float* logits) {
  model_->head(x, rows, n_rows, logits, *pool_);
}

}  // namespace ranklm::backend
