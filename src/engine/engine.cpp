#include "engine/engine.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "grammar/grammar.h"
#include "plan/identity.h"
#include "plan/model_part.h"
#include "runtime/protocol.h"
#include "sys/inventory.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ranklm::engine {

namespace {

// Structured output on the head rank: xgrammar over the model's vocabulary (grammar/grammar.h),
// built when the first request with a spec comes (the vocabulary from the model's metadata).
class GrammarConstraints final : public runtime::ConstraintFactory {
 public:
  GrammarConstraints(const gguf::File& meta, int64_t n_vocab) : meta_(meta), n_vocab_(n_vocab) {}
  std::unique_ptr<runtime::TokenConstraint> make(int32_t kind, const std::string& spec) override {
    if (!compiler_) {
      tok_ = Tokenizer::from_gguf(meta_);
      compiler_ = std::make_unique<grammar::Compiler>(*tok_, n_vocab_, tok_->eog_tokens());
    }
    if (kind != static_cast<int32_t>(grammar::Kind::kJsonObject) && kind != static_cast<int32_t>(grammar::Kind::kJsonSchema)) {
      fail("structured output of kind {} is unknown", kind);
    }
    return std::make_unique<Constraint>(compiler_->start(grammar::Spec{static_cast<grammar::Kind>(kind), spec}));
  }

 private:
  class Constraint final : public runtime::TokenConstraint {
   public:
    explicit Constraint(std::unique_ptr<grammar::Matcher> m) : m_(std::move(m)) {}
    void mask(float* logits, int64_t n_vocab) override { m_->mask(logits, n_vocab); }
    bool accept(int32_t token) override { return m_->accept(token); }

   private:
    std::unique_ptr<grammar::Matcher> m_;
  };
  const gguf::File& meta_;
  int64_t n_vocab_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<grammar::Compiler> compiler_;
};

}  // namespace

void ModelSource::check(int world_size) const {
  if (gguf.empty() == shards.empty()) usage_fail("give exactly one of --model and --shards");
  if (!gguf.empty() && world_size != 1) {
    fail("{}: a GGUF model runs on one rank and this job has {}; under mpirun give --shards (ranklm plan, then "
         "ranklm-repack)", gguf, world_size);
  }
}

std::string ModelSource::label() const {
  std::string name = gguf.empty() ? shards : gguf;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  return name.substr(name.find_last_of('/') + 1);
}

std::unique_ptr<Engine> Engine::load(comm::Comm& c, const ModelSource& src, int threads, StartupHooks hooks) {
  src.check(c.size());
  std::unique_ptr<Engine> e(new Engine());
  e->comm_ = &c;
  e->hooks_ = std::move(hooks);
  if (!e->hooks_.phase) e->hooks_.phase = [](const char*) {};
  if (!e->hooks_.hold) e->hooks_.hold = [](bool) {};
  if (!e->hooks_.started) e->hooks_.started = [] {};
  e->rank_ = c.rank();
  // Pages this rank allocates (its weights, KV cache) stay on its own NUMA node.
  sys::bind_memory_to_local_numa();
  std::unique_ptr<Model> model;
  if (!src.shards.empty()) {
    e->hooks_.phase("loading this rank's shard");
    e->rank_file_ = shard::load_rank_file(src.shards, c.rank(), c.size());
    e->plan_ = e->rank_file_.plan;
    e->meta_ = e->rank_file_.file.get();
    e->header_ = e->rank_file_.model.get();
  } else {
    e->hooks_.phase("loading the model");
    e->gguf_ = gguf::File::open(src.gguf);
    e->plan_ = plan::make_plan(plan::model_identity(*e->gguf_), 1, 1, 1, {});
    e->meta_ = e->header_ = e->gguf_.get();
  }
  model = Model::load(*e->meta_, plan::model_part(e->plan_, c.rank(), *e->header_));
  e->layout_ = comm::Layout::of(e->plan_, c.rank());
  e->backend_ = std::make_unique<backend::CpuBackend>(std::move(model), threads);
  return e;
}

Engine::~Engine() = default;

namespace {

// What this process may still allocate: the kernel's MemAvailable, lowered by a cgroup (v2 or
// v1) memory limit and by an address-space limit (ulimit -v, less what is mapped already).
int64_t available_memory_bytes() {
  int64_t avail = INT64_MAX;
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char key[64];
    long long kb = 0;
    while (std::fscanf(f, "%63s %lld kB\n", key, &kb) == 2) {
      if (std::string(key) == "MemAvailable:") avail = kb * 1024;
    }
    std::fclose(f);
  }
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    if (std::FILE* f = std::fopen(path, "r")) {
      long long lim = 0;
      if (std::fscanf(f, "%lld", &lim) == 1 && lim > 0) avail = std::min<int64_t>(avail, lim);
      std::fclose(f);
    }
  }
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    long long vm_kb = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
      long long pages = 0;
      if (std::fscanf(f, "%lld", &pages) == 1) vm_kb = pages * (::sysconf(_SC_PAGESIZE) / 1024);
      std::fclose(f);
    }
    avail = std::min<int64_t>(avail, static_cast<int64_t>(rl.rlim_cur) - vm_kb * 1024);
  }
  return avail;
}

std::string gib(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  return b >= (1ull << 30) ? fmt::format("{:.2f} GiB", b / (1ull << 30)) : fmt::format("{:.1f} MiB", b / (1ull << 20));
}

}  // namespace

void Engine::start(int n_slots, int64_t n_ctx, comm::Payloads z, int64_t kv_blocks) {
  comm::Comm& c = *comm_;
  // The KV cache is paged: blocks are taken as sequences grow. The pool may hold every slot's
  // whole context, or as many blocks as four fifths of the memory this process may still
  // allocate; the scheduler admits sequences only while the blocks they may need are free.
  // A block's bytes amortized over a whole context: sliding-window layers hold only the window
  // of a sequence, so its blocks cost less per position the longer the context.
  const int64_t block_len = backend_->info().kv_block_len;
  const int64_t per_slot_blocks = (n_ctx + block_len - 1) / block_len;
  const int64_t block_bytes = std::max<int64_t>(1, (backend_->kv_bytes(n_ctx) + per_slot_blocks - 1) / per_slot_blocks);
  const int64_t want = per_slot_blocks * n_slots;
  const int64_t avail = available_memory_bytes();
  kv_blocks_ = kv_blocks > 0 ? kv_blocks : std::min(want, avail / 5 * 4 / block_bytes);
  if (kv_blocks_ < per_slot_blocks) {
    usage_fail("one sequence of {} positions (--ctx-size) needs {} of KV cache on rank {}, more than the {} it may take "
               "(four fifths of the {} this process may still allocate); lower --ctx-size",
               n_ctx, gib(per_slot_blocks * block_bytes), c.rank(), gib(avail / 5 * 4), gib(avail));
  }
  if (kv_blocks_ < want) {
    std::fprintf(stderr, "ranklm: rank %d: KV memory for %lld of the %lld blocks that %d sequences of %lld positions could "
                 "fill (%s); sequences wait for blocks when it runs short\n", c.rank(), static_cast<long long>(kv_blocks_),
                 static_cast<long long>(want), n_slots, static_cast<long long>(n_ctx), gib(kv_blocks_ * block_bytes).c_str());
  }
  if (c.rank() == 0 && n_ctx > n_ctx_train()) {
    std::fprintf(stderr, "ranklm: warning: a context of %lld positions is more than the model was trained on (%lld); "
                 "text past that point degrades\n", static_cast<long long>(n_ctx), static_cast<long long>(n_ctx_train()));
  }
  if (z.allreduce != comm::Compression::kNone && plan_.tp_mode == plan::TpMode::kExact) {
    fail("--allreduce q8_0: the plan's TP mode is exact, which gathers instead of reducing; "
         "make the plan with --tp-mode sum (and repack) to compress the allreduce");
  }
  exec_ = std::make_unique<runtime::Executor>(c, layout_, *backend_, n_slots, n_ctx, z.allreduce, kv_blocks_);
  exec_->set_hop_payload(z.hops);
  if (exec_->is_head()) {
    constraints_ = std::make_unique<GrammarConstraints>(*meta_, backend_->info().n_vocab);
    exec_->set_constraints(constraints_.get());
  }
  // Every rank tells rank 0 it is ready; rank 0 waits for each within what is left of the
  // start-up time, so a rank stuck in loading is named instead of waited for.
  hooks_.phase("waiting for every rank to load its part of the model");
  if (c.size() > 1) {
    if (c.rank() == 0) {
      hooks_.hold(true);  // these waits have their own deadline, and name the rank that is late
      const auto keep = c.timeout();
      c.set_timeout(std::chrono::milliseconds(static_cast<int64_t>(hooks_.start_timeout_s * 1000)));
      for (int r = 1; r < c.size(); ++r) {
        runtime::proto::Ready ready{};
        c.recv(&ready, sizeof ready, r, comm::Tag::kControl, "the rank's ready message after loading its shard (is it "
               "stopped, or is its file system hung?)");
        runtime::proto::decode_ready(&ready, sizeof ready, r, c.size(), c.host(r));
        kv_blocks_ = std::min(kv_blocks_, ready.kv_blocks);  // the scheduler plans with the smallest pool
      }
      exec_->set_kv_budget(kv_blocks_);
      c.set_timeout(keep);
      hooks_.hold(false);
    } else {
      const runtime::proto::Ready ready = runtime::proto::make_ready(c.rank(), c.size(), kv_blocks_);
      c.send(&ready, sizeof ready, 0, comm::Tag::kControl, "this rank's ready message");
    }
  }
  hooks_.started();
}

}  // namespace ranklm::engine
