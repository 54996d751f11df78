#include "backend/cpu.h"


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
                               .vocab_end = pt.vocab_end < 0 ? hp.n_vocab : pt.vocab_end,
                               .kv_block_len = kKvBlockLen,
                               .chunk_invariant = model_->chunk_invariant()};
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    if (hp.windowed(il)) info_.kv_window = hp.swa_window;
  }
}

CpuBackend::~CpuBackend() = default;

int64_t CpuBackend::kv_bytes(int64_t n_ctx) const { return model_->kv_cache_bytes(n_ctx); }

void CpuBackend::kv_reserve(int64_t max_blocks) {
  if (kv_pools_.full) fail("cpu backend: the KV pool is already made (a bug)");
  kv_pools_ = model_->make_pools(max_blocks);
}

runtime::KvHandle CpuBackend::kv_create(int64_t n_ctx) {
  if (!kv_pools_.full) fail("cpu backend: kv_create before kv_reserve (a bug)");
  auto c = std::make_unique<KvCache>(kv_pools_, n_ctx);
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

void CpuBackend::kv_share(runtime::KvHandle src, runtime::KvHandle dst, int64_t n_pos) {
  cache(dst).share_from(cache(src), n_pos);
}

runtime::KvStats CpuBackend::kv_stats() const {
  runtime::KvStats st;
  st.block_bytes = model_->kv_block_bytes();
  if (kv_pools_.full) {
    st.max_blocks = kv_pools_.full->max_blocks();
    st.in_use = kv_pools_.full->in_use();
    st.peak = kv_pools_.full->peak();
    st.bytes_in_use = kv_pools_.full->in_use() * kv_pools_.full->block_bytes();
    if (kv_pools_.windowed) st.bytes_in_use += kv_pools_.windowed->in_use() * kv_pools_.windowed->block_bytes();
  }
  return st;
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
  hooks.gather_counts = [c](const float* mine, const std::vector<int64_t>& counts, float* out) {
    c->allgather_columns(mine, 1, counts, out);
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
