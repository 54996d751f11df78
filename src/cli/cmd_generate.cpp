// ranklm generate --model M.gguf --prompt TEXT: streams the completion, then prefill and decode
// tokens/s on stderr.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ranklm::cli {

int cmd_generate(const std::vector<std::string>& args) {
  po::options_description desc("generate options");
  std::string model_path, prompt;
  int n_predict = 128, threads = default_threads(), ctx = 0;
  SamplingParams sp;
  bool chat = false;
  add_model_options(desc, model_path, threads, default_threads());
  desc.add_options()
      ("prompt,p", po::value<std::string>(&prompt)->required(), "prompt text")
      ("chat", po::bool_switch(&chat), "format the prompt with the model's chat template")
      ("n-predict,n", po::value<int>(&n_predict)->default_value(128), "tokens to generate")
      ("temp", po::value<float>(&sp.temperature)->default_value(0.8f), "temperature (0 = greedy)")
      ("top-k", po::value<int>(&sp.top_k)->default_value(40), "top-k (0 = off)")
      ("top-p", po::value<float>(&sp.top_p)->default_value(0.95f), "top-p (1 = off)")
      ("min-p", po::value<float>(&sp.min_p)->default_value(0.05f), "min-p (0 = off)")
      ("repeat-penalty", po::value<float>(&sp.repeat_penalty)->default_value(1.0f), "repetition penalty (1 = off)")
      ("seed,s", po::value<uint64_t>(&sp.seed)->default_value(0), "random seed")
      ("ctx-size,c", po::value<int>(&ctx)->default_value(0), "context size (0 = prompt + n-predict)");
  po::variables_map vm;
  if (!parse_options("generate", "--model M.gguf --prompt TEXT [options]", desc, args, vm)) return kExitOk;
  if (n_predict < 0) fail("--n-predict: {} must be >= 0", n_predict);
  if (threads < 1) fail("--threads: {} must be >= 1", threads);
  if (sp.temperature < 0) fail("--temp: {} must be >= 0", sp.temperature);
  if (chat) {
    fail("--chat: chat templates (tokenizer.chat_template) are not rendered yet; pass the "
         "formatted prompt text instead");
  }

  auto file = gguf::File::open(model_path);
  auto model = Model::load(*file);
  auto tok = Tokenizer::from_gguf(*file);
  kern::ThreadPool pool(threads);
  std::vector<int32_t> ids = tok->encode(prompt, true, true);
  if (ids.empty()) fail("--prompt: the prompt produced no tokens");
  const int64_t n_ctx = ctx > 0 ? ctx : static_cast<int64_t>(ids.size()) + n_predict;
  if (static_cast<int64_t>(ids.size()) >= n_ctx) {
    fail("--prompt: {} tokens do not fit the context size {}", ids.size(), n_ctx);
  }
  KvCache cache = model->make_cache(n_ctx);
  Sampler sampler(sp);
  StreamDecoder dec(*tok);
  std::vector<float> logits(model->hparams().n_vocab);

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  model->forward(ids.data(), static_cast<int64_t>(ids.size()), 0, cache, false, logits.data(), pool);
  const auto t1 = clock::now();
  const size_t n_prompt = ids.size();
  int64_t pos = static_cast<int64_t>(ids.size());
  int generated = 0;
  std::fputs(prompt.c_str(), stdout);
  while (generated < n_predict && pos < n_ctx) {
    const int32_t next = sampler.sample(logits.data(), model->hparams().n_vocab, ids);
    ++generated;
    if (tok->is_eog(next)) break;
    ids.push_back(next);
    std::fputs(dec.push(next).c_str(), stdout);
    std::fflush(stdout);
    if (generated == n_predict || pos + 1 >= n_ctx) break;
    model->forward(&next, 1, pos++, cache, false, logits.data(), pool);
  }
  std::fputs(dec.flush().c_str(), stdout);
  std::fputs("\n", stdout);
  const auto t2 = clock::now();
  const double pre_s = std::chrono::duration<double>(t1 - t0).count();
  const double dec_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "prefill: %zu tokens in %.2f s (%.1f tokens/s) | decode: %d tokens in %.2f s (%.1f tokens/s)\n",
               n_prompt, pre_s, static_cast<double>(n_prompt) / pre_s, generated, dec_s,
               generated / std::max(dec_s, 1e-9));
  return kExitOk;
}

}  // namespace ranklm::cli
