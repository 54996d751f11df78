// What the commands that run on shards share: the job's world (MPI under a launcher, one
// rank otherwise), this rank's part of the model loaded from its own shard, and the executor.
// Errors on any rank end the whole job at once, naming the rank and host.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "comm/layout.h"
#include "comm/mpi.h"
#include "io/shard.h"
#include "kernels/threadpool.h"
#include "model/model.h"
#include "runtime/executor.h"

namespace ranklm::cli {

struct ShardJob {
  shard::RankFile rank_file;
  std::unique_ptr<Model> model;
  comm::Layout layout;
  std::unique_ptr<kern::ThreadPool> pool;
  std::unique_ptr<runtime::Executor> exec;
};

// Loads this rank's shard from DIR (its part of the model, and the model's metadata for the
// tokenizer); start_executor then sets up n_slots KV slots of n_ctx positions.
std::unique_ptr<ShardJob> load_shard_job(comm::World& world, const std::string& dir, int threads);
// The same for a whole GGUF model in one process (a world of one rank, a 1-rank plan).
std::unique_ptr<ShardJob> load_model_job(comm::World& world, const std::string& path, int threads);
void start_executor(comm::World& world, ShardJob& job, int n_slots, int64_t n_ctx, comm::Compression z);
// Both at once.
std::unique_ptr<ShardJob> open_shard_job(comm::World& world, const std::string& dir, int threads, int n_slots,
                                         int64_t n_ctx, comm::Compression z);

// Runs body with the job's world. An error on this rank is printed with its rank and host and,
// under MPI, ends every rank (MPI_Abort), so no rank waits for one that has failed.
int with_world(const std::string& cmd, const std::function<int(comm::World&)>& body);

// "f32" or "q8_0" (the --allreduce option).
comm::Compression parse_compression(const std::string& s);

}  // namespace ranklm::cli
