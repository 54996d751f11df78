// ranklm logits --model M.gguf --tokens 1,5,9 [--greedy N]: the parity probe (JSON on stdout).
#include <cstdio>
#include <sstream>

#include "cli/commands.h"
#include "cli/logits_json.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "model/model.h"
#include "util/error.h"

namespace ranklm::cli {

namespace {
std::vector<int32_t> parse_token_list(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > INT32_MAX) {
      fail("--tokens: '{}' is not a token id (expected comma-separated integers >= 0)", item);
    }
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}
}  // namespace

int cmd_logits(const std::vector<std::string>& args) {
  po::options_description desc("logits options");
  std::string model_path, tokens;
  int greedy = 24, threads = default_threads();
  add_model_options(desc, model_path, threads, default_threads());
  desc.add_options()
      ("tokens", po::value<std::string>(&tokens)->required(), "prompt token ids, comma-separated")
      ("greedy", po::value<int>(&greedy)->default_value(24), "greedy continuation steps");
  po::variables_map vm;
  if (!parse_options("logits", "--model M.gguf --tokens 1,5,9 [--greedy N]", desc, args, vm)) return kExitOk;
  if (greedy < 0) fail("--greedy: {} must be >= 0", greedy);
  if (threads < 1) fail("--threads: {} must be >= 1", threads);

  auto file = gguf::File::open(model_path);
  auto model = Model::load(*file);
  kern::ThreadPool pool(threads);
  const auto prompt = parse_token_list(tokens);
  const LogitsReport r = compute_logits_report(*model, prompt, greedy, pool);
  std::printf("%s\n", logits_report_json(r).c_str());
  return kExitOk;
}

}  // namespace ranklm::cli
