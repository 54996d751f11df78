// The CPU backend: a rank's part of the model (model/model.h) run by a pool of worker threads
// bound to this rank's cores, with one paged fp16 KV cache (a pool of blocks, model/kv_cache.h) in host memory.
#pragma once

#include <memory>
#include <vector>

#include "kernels/threadpool.h"
#include "model/model.h"
#include "runtime/backend.h"

namespace ranklm::backend {

class CpuBackend final : public runtime::Backend {
 public:
  // Takes the model part; n_threads workers bound as sys::core_binder decides.
  CpuBackend(std::unique_ptr<Model> model, int n_threads);
  ~CpuBackend() override;

  const runtime::BackendInfo& info() const override { return info_; }
  int64_t kv_bytes(int64_t n_ctx) const override;
  runtime::KvHandle kv_create(int64_t n_ctx) override;
  void kv_free(runtime::KvHandle kv) override;
  void kv_reserve(int64_t max_blocks) override;
  void kv_share(runtime::KvHandle src, runtime::KvHandle dst, int64_t n_pos) override;
  runtime::KvStats kv_stats() const override;
  void set_collectives(runtime::TpCollectives* c) override;
  void embed(const int32_t* tokens, int64_t n_tok, float* x) override;
  void run_layers(float* x, const runtime::SeqRun* seqs, int n_seq) override;
  void head(const float* x, const int64_t* rows, int64_t n_rows, float* logits) override;

  const Model& model() const { return *model_; }
  kern::ThreadPool& pool() { return *pool_; }

 private:
  KvCache& cache(runtime::KvHandle kv);
  std::unique_ptr<Model> model_;
  std::unique_ptr<kern::ThreadPool> pool_;
  runtime::BackendInfo info_;
  KvPools kv_pools_;
  std::vector<std::unique_ptr<KvCache>> caches_;  // index = handle id; null: free
  std::vector<SeqSpan> spans_;
};

}  // namespace ranklm::backend
