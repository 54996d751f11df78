// ranklm logits (--model M.gguf | --shards DIR) --tokens 1,5,9 [--greedy N]: the parity probe
// (JSON on stdout).
#include <climits>
#include <cstdio>

#include "runtime/cpu_binding.h"
#include "cli/commands.h"
#include "cli/logits_json.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "io/shard.h"
#include "model/model.h"
#include "util/error.h"

namespace ranklm::cli {

int cmd_logits(const std::vector<std::string>& args) {
  po::options_description desc("logits options");
  std::string model_path, shards, tokens;
  int greedy = 24, threads = default_threads();
  desc.add_options()
      ("model,m", po::value<std::string>(&model_path), "GGUF model file")
      ("shards", po::value<std::string>(&shards), "or: the directory of a 1-rank plan's shards (ranklm-repack)")
      ("threads,t", po::value<int>(&threads)->default_value(default_threads()), "worker threads")
      ("tokens", po::value<std::string>(&tokens)->required(), "prompt token ids, comma-separated")
      ("greedy", po::value<int>(&greedy)->default_value(24), "greedy continuation steps");
  po::variables_map vm;
  if (!parse_options("logits", "(--model M.gguf | --shards DIR) --tokens 1,5,9 [--greedy N]", desc, args, vm)) {
    return kExitOk;
  }
  if (model_path.empty() == shards.empty()) fail("give exactly one of --model and --shards");
  if (greedy < 0) fail("--greedy: {} must be >= 0", greedy);
  if (threads < 1) fail("--threads: {} must be >= 1", threads);

  auto file = shards.empty() ? gguf::File::open(model_path) : shard::load_single_rank_model(shards);
  auto model = Model::load(*file);
  kern::ThreadPool pool(threads, core_binder(threads));
  const auto prompt = parse_int_list<int32_t>("--tokens", tokens, 0, INT32_MAX);
  const LogitsReport r = compute_logits_report(*model, prompt, greedy, pool);
  std::printf("%s\n", logits_report_json(r).c_str());
  return kExitOk;
}

}  // namespace ranklm::cli
