#include "cli/distributed.h"

#include <cstdio>

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

void start_executor(comm::World& world, ShardJob& job, int n_slots, int64_t n_ctx, comm::Compression z) {
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
      const auto keep = c.timeout();
      c.set_timeout(std::chrono::milliseconds(static_cast<int64_t>(Watchdog::start_timeout_s() * 1000)));
      for (int r = 1; r < c.size(); ++r) {
        c.recv(&ready, 1, r, comm::Tag::kControl, "the rank's ready message after loading its shard (is it stopped, or "
               "is its file system hung?)");
      }
      c.set_timeout(keep);
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
  fail("--allreduce: '{}' is not a payload type (f32 or q8_0)", s);
}

}  // namespace ranklm::cli
