// One rank's side of every command that runs a model (generate, logits, bench, run, serve): this
// rank's part of the model on its backend, and the executor, over the job's communicator (MPI
// under a launcher, a fake world in tests or on one rank): the one execution path. The model comes from a GGUF file (a one-rank plan made in memory) or from a
// shard directory (this rank's own shard); either way the same engine, executor and scheduler
// run it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "backend/cpu.h"
#include "comm/layout.h"
#include "comm/comm.h"
#include "io/gguf.h"
#include "plan/plan.h"
#include "runtime/executor.h"
#include "shard/shard.h"

namespace ranklm::engine {

// Where the model comes from: exactly one of a GGUF file and a shard directory.
struct ModelSource {
  std::string gguf, shards;
  // "M.gguf" or "DIR" (the last path component), for reports.
  std::string label() const;
  // Exactly one of the two (a usage error otherwise); a GGUF only on a world of one rank.
  void check(int world_size = 1) const;
};

// What the engine tells whoever watches the start-up (the cli's watchdog); each may be empty.
struct StartupHooks {
  std::function<void(const char*)> phase;  // what this rank does now (named if it hangs)
  std::function<void(bool)> hold;          // rank 0's own timed waits begin (true) and end (false)
  std::function<void()> started;           // start-up is over
  double start_timeout_s = 600;            // rank 0's wait for each rank's ready message
};

class Engine {
 public:
  // Loads this rank's part: its own shard of DIR, or (a one-rank world only) the whole GGUF.
  static std::unique_ptr<Engine> load(comm::Comm& c, const ModelSource& src, int threads, StartupHooks hooks = {});
  ~Engine();

  // KV storage for n_slots sequences of n_ctx positions (refused when it cannot fit), the
  // executor, and the start-up handshake: every rank reports ready to rank 0 (the protocol
  // version checked), within what is left of the start-up time.
  // kv_blocks > 0: the pool's size in blocks instead of what memory allows (tests).
  void start(int n_slots, int64_t n_ctx, comm::Payloads z, int64_t kv_blocks = 0);

  runtime::Executor& exec() { return *exec_; }
  bool drives() const { return rank_ == 0; }  // rank 0 drives; the others serve
  const plan::Plan& plan() const { return plan_; }
  const gguf::File& meta() const { return *meta_; }      // the whole model's metadata (tokenizer, template)
  const gguf::File& header() const { return *header_; }  // the whole model's tensor table
  const runtime::BackendInfo& backend_info() const { return backend_->info(); }
  int64_t n_ctx_train() const { return backend_->info().n_ctx_train; }
  int64_t kv_bytes(int64_t n_ctx) const { return backend_->kv_bytes(n_ctx); }  // one sequence, this rank
  runtime::KvStats kv_stats() const { return backend_->kv_stats(); }  // this rank's KV pool now

 private:
  Engine() = default;
  comm::Comm* comm_ = nullptr;
  StartupHooks hooks_;
  int rank_ = 0;
  plan::Plan plan_;
  shard::RankFile rank_file_;              // shards: this rank's image and the model's header
  std::unique_ptr<gguf::File> gguf_;       // a GGUF source
  const gguf::File* meta_ = nullptr;
  const gguf::File* header_ = nullptr;
  comm::Layout layout_;
  std::unique_ptr<backend::CpuBackend> backend_;
  std::unique_ptr<runtime::Executor> exec_;
  std::unique_ptr<runtime::ConstraintFactory> constraints_;  // the head rank's structured output
  int64_t kv_blocks_ = 0;  // this rank's KV pool; on rank 0 after start, the job's smallest
};

}  // namespace ranklm::engine
