// ranklm logits (--model M.gguf | --shards DIR) --tokens 1,5,9 [--greedy N]: the parity probe
// (JSON on stdout).
#include <climits>
#include <cstdio>

#include "runtime/cpu_binding.h"
#include "cli/commands.h"
#include "cli/distributed.h"
#include "cli/logits_json.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "io/shard.h"
#include "model/model.h"
#include "util/error.h"

namespace ranklm::cli {

int cmd_logits(const std::vector<std::string>& args) {
  po::options_description desc("logits options");
  std::string model_path, shards, tokens, allreduce = "f32";
  int greedy = 24, threads = default_threads();
  desc.add_options()
      ("model,m", po::value<std::string>(&model_path), "GGUF model file")
      ("shards", po::value<std::string>(&shards), "or: a shard directory (ranklm-repack); under mpirun, one rank per shard")
      ("allreduce", po::value<std::string>(&allreduce)->default_value("f32"), "tensor-parallel allreduce payload: f32 or q8_0")
      ("threads,t", po::value<int>(&threads)->default_value(default_threads()), "worker threads")
      ("tokens", po::value<std::string>(&tokens)->required(), "prompt token ids, comma-separated")
      ("greedy", po::value<int>(&greedy)->default_value(24), "greedy continuation steps");
  po::variables_map vm;
  if (!parse_options("logits", "(--model M.gguf | --shards DIR) --tokens 1,5,9 [--greedy N]", desc, args, vm)) {
    return kExitOk;
  }
  if (model_path.empty() == shards.empty()) usage_fail("give exactly one of --model and --shards");
  if (greedy < 0) usage_fail("--greedy: {} must be >= 0", greedy);
  threads = usable_threads(threads, default_threads());

  const auto prompt = parse_int_list<int32_t>("--tokens", tokens, 0, INT32_MAX);
  const comm::Compression z = parse_compression(allreduce);
  if (!shards.empty() && comm::launched_by_mpi()) {
    // Shards of any plan, one rank per process under mpirun: rank 0 prints.
    return with_world("logits", [&](comm::World& world) {
      auto job = open_shard_job(world, shards, threads, 1, static_cast<int64_t>(prompt.size()) + greedy, z);
      runtime::Executor& ex = *job->exec;
      if (world.comm().rank() != 0) {
        ex.serve();
        return kExitOk;
      }
      const LogitsReport r = compute_logits_report(
          ex.n_vocab(),
          [&](const int32_t* tok, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits) {
            ex.forward(0, tok, n_tok, pos0, n_out, logits);
          },
          prompt, greedy);
      ex.stop();
      std::printf("%s\n", logits_report_json(r).c_str());
      return kExitOk;
    });
  }
  // One process: the GGUF, or a 1-rank plan's shard rebuilt into the GGUF's exact bytes.
  auto file = shards.empty() ? gguf::File::open(model_path) : shard::load_single_rank_model(shards);
  auto model = Model::load(*file);
  kern::ThreadPool pool(threads, core_binder(threads));
  const LogitsReport r = compute_logits_report(*model, prompt, greedy, pool);
  std::printf("%s\n", logits_report_json(r).c_str());
  return kExitOk;
}

}  // namespace ranklm::cli
