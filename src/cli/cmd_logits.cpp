// ranklm logits (--model M.gguf | --shards DIR) --tokens 1,5,9 [--greedy N]: the parity probe
// (JSON on stdout). Runs through the engine like every command: a GGUF on one rank, or shards of
// any plan (one rank per process under mpirun; rank 0 prints).
#include <climits>
#include <cstdio>

#include "cli/commands.h"
#include "cli/engine.h"
#include "cli/logits_json.h"
#include "cli/options.h"
#include "util/error.h"

namespace ranklm::cli {

int cmd_logits(const std::vector<std::string>& args) {
  po::options_description desc("logits options");
  ModelSource src;
  std::string tokens;
  PayloadOptions payloads;
  int greedy = 24, threads = default_threads();
  add_source_options(desc, src);
  add_rank_options(desc, threads, payloads, default_threads());
  desc.add_options()
      ("tokens", po::value<std::string>(&tokens)->required(), "prompt token ids, comma-separated")
      ("greedy", po::value<int>(&greedy)->default_value(24), "greedy continuation steps");
  po::variables_map vm;
  if (!parse_options("logits", "(--model M.gguf | --shards DIR) --tokens 1,5,9 [--greedy N]", desc, args, vm)) {
    return kExitOk;
  }
  src.check();
  if (greedy < 0 || greedy > (1 << 20)) usage_fail("--greedy: {} must be in 0..{}", greedy, 1 << 20);
  threads = usable_threads(threads, default_threads());
  const auto prompt = parse_int_list<int32_t>("--tokens", tokens, 0, INT32_MAX);
  if (prompt.empty()) usage_fail("--tokens: the list is empty");
  const comm::Payloads z = parse_payloads(payloads);
  return with_world("logits", [&](comm::World& world) {
    auto engine = load_engine(world, src, threads);
    engine->start(1, static_cast<int64_t>(prompt.size()) + greedy, z);
    runtime::Executor& ex = engine->exec();
    if (!engine->drives()) {
      ex.serve();
      return kExitOk;
    }
    for (int32_t id : prompt) {
      if (id >= ex.n_vocab()) usage_fail("--tokens: {} is outside the vocabulary (0..{})", id, ex.n_vocab() - 1);
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

}  // namespace ranklm::cli
