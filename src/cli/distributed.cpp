#include "cli/distributed.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "cli/watchdog.h"
#include "plan/identity.h"
#include "runtime/cpu_binding.h"
#include "sys/inventory.h"
#include "util/error.h"

namespace ranklm::cli {

std::unique_ptr<ShardJob> load_shard_job(comm::World& world, const std::string& dir, int threads) {
  comm::Comm& c = world.comm();
  // Pages this rank allocates (its weights, KV cache) stay on its own NUMA node.
  sys::bind_memory_to_local_numa();
  Watchdog::phase("loading this rank's shard");
  auto job = std::make_unique<ShardJob>();
  job->rank_file = shard::load_rank_file(dir, c.rank(), c.size());
  const plan::Plan& p = job->rank_file.plan;
  job->model = Model::load(*job->rank_file.file, runtime::model_part(p, c.rank(), *job->rank_file.model));
  job->layout = comm::Layout::of(p, c.rank());
  job->pool = std::make_unique<kern::ThreadPool>(threads, core_binder(threads));
  return job;
}

std::unique_ptr<ShardJob> load_model_job(comm::World& world, const std::string& path, int threads) {
  if (world.comm().size() != 1) fail("{}: a whole model runs on one rank; this job has {}", path, world.comm().size());
  auto job = std::make_unique<ShardJob>();
  job->rank_file.file = gguf::File::open(path);
  plan::Plan& p = job->rank_file.plan;
  p = plan::make_plan(plan::model_identity(*job->rank_file.file), 1, 1, 1, {});
  job->model = Model::load(*job->rank_file.file);
  job->layout = comm::Layout::of(p, 0);
  job->pool = std::make_unique<kern::ThreadPool>(threads, core_binder(threads));
  return job;
}

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

void start_executor(comm::World& world, ShardJob& job, int n_slots, int64_t n_ctx, comm::Compression z) {
  // The KV cache is allocated up front: work out its size first and refuse what cannot fit.
  const int64_t per_slot = job.model->kv_cache_bytes(n_ctx);
  const int64_t need = per_slot > 0 && n_slots > INT64_MAX / per_slot ? INT64_MAX : per_slot * n_slots;
  const int64_t avail = available_memory_bytes();
  if (need > avail) {
    usage_fail("the KV cache for {} sequences (--parallel) of {} positions (--ctx-size) needs {} on rank {} ({} per "
               "sequence), more than the {} this process may still allocate; lower --parallel or --ctx-size",
               n_slots, n_ctx, gib(need), world.comm().rank(), gib(per_slot), gib(avail));
  }
  if (world.comm().rank() == 0 && n_ctx > job.model->hparams().n_ctx_train) {
    std::fprintf(stderr, "ranklm: warning: a context of %lld positions is more than the model was trained on (%lld); "
                 "text past that point degrades\n", static_cast<long long>(n_ctx),
                 static_cast<long long>(job.model->hparams().n_ctx_train));
  }
  if (z != comm::Compression::kNone && job.rank_file.plan.tp_mode == plan::TpMode::kExact) {
    fail("--allreduce q8_0: the plan's TP mode is exact, which gathers instead of reducing; "
         "make the plan with --tp-mode sum (and repack) to compress the allreduce");
  }
  job.exec = std::make_unique<runtime::Executor>(world.comm(), job.layout, *job.model, *job.pool, n_slots, n_ctx, z);
  // Every rank tells rank 0 it is ready; rank 0 waits for each within what is left of the
  // start-up time, so a rank stuck in loading is named instead of waited for.
  Watchdog::phase("waiting for every rank to load its part of the model");
  comm::Comm& c = world.comm();
  if (c.size() > 1) {
    char ready = 1;
    if (c.rank() == 0) {
      Watchdog::hold(true);  // these waits have their own deadline, and name the rank that is late
      const auto keep = c.timeout();
      c.set_timeout(std::chrono::milliseconds(static_cast<int64_t>(Watchdog::start_timeout_s() * 1000)));
      for (int r = 1; r < c.size(); ++r) {
        c.recv(&ready, 1, r, comm::Tag::kControl, "the rank's ready message after loading its shard (is it stopped, or "
               "is its file system hung?)");
      }
      c.set_timeout(keep);
      Watchdog::hold(false);
    } else {
      c.send(&ready, 1, 0, comm::Tag::kControl, "this rank's ready message");
    }
  }
  Watchdog::started();
}

std::unique_ptr<ShardJob> open_shard_job(comm::World& world, const std::string& dir, int threads, int n_slots,
                                         int64_t n_ctx, comm::Compression z) {
  auto job = load_shard_job(world, dir, threads);
  start_executor(world, *job, n_slots, n_ctx, z);
  return job;
}

int with_world(const std::string& cmd, const std::function<int(comm::World&)>& body) {
  Watchdog watchdog(cmd);
  comm::World world;
  Watchdog::phase("start-up after MPI_Init");
  try {
    return body(world);
  } catch (const std::exception& e) {
    if (!world.is_mpi() || world.comm().size() == 1) throw;
    comm::Comm& c = world.comm();
    std::fprintf(stderr, "ranklm %s: error on rank %d (host %s): %s\n", cmd.c_str(), c.rank(), c.host(c.rank()).c_str(),
                 e.what());
    std::fflush(stderr);
    world.abort(1);
  }
}

comm::Compression parse_compression(const std::string& s) {
  if (s == "f32") return comm::Compression::kNone;
  if (s == "q8_0") return comm::Compression::kQ8_0;
  usage_fail("--allreduce: '{}' is not a payload type (f32 or q8_0)", s);
}

}  // namespace ranklm::cli
