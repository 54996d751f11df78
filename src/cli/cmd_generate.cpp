// ranklm generate --model M.gguf --prompt TEXT [--chat]: streams the completion (with --chat, the
// assistant's reply to the prompt as a user message, formatted by the model's chat template), then
// prefill and decode tokens/s on stderr.
#include <chrono>
#include <cstdio>

#include "runtime/cpu_binding.h"
#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ranklm::cli {

int cmd_generate(const std::vector<std::string>& args) {
  po::options_description desc("generate options");
  std::string model_path, prompt, system, template_path;
  std::vector<std::string> stops;
  int n_predict = 128, threads = default_threads(), ctx = 0;
  SamplingParams sp;
  bool chat = false, verbose_prompt = false;
  add_model_options(desc, model_path, threads, default_threads());
  desc.add_options()
      ("prompt,p", po::value<std::string>(&prompt)->required(), "prompt text")
      ("chat", po::bool_switch(&chat), "send the prompt as a user message through the model's chat template")
      ("system", po::value<std::string>(&system), "system message (with --chat)")
      ("chat-template", po::value<std::string>(&template_path), "Jinja file to use instead of the model's template (with --chat)")
      ("verbose-prompt", po::bool_switch(&verbose_prompt), "print the formatted prompt and its token ids to stderr")
      ("stop", po::value<std::vector<std::string>>(&stops)->composing(), "stop string (repeatable); not printed")
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
  if (!chat && (!system.empty() || !template_path.empty())) fail("--system and --chat-template need --chat");

  auto file = gguf::File::open(model_path);
  auto model = Model::load(*file);
  auto tok = Tokenizer::from_gguf(*file);
  kern::ThreadPool pool(threads, core_binder(threads));
  std::string text = prompt;
  bool add_special = true;
  if (chat) {
    const auto tmpl = chat::ChatTemplate::for_model(*file, *tok, template_path);
    std::vector<chat::Message> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", prompt});
    text = tmpl.apply(messages, true);
    // Templates that write the BOS text themselves must not get a second one.
    const std::string bos = tok->bos() >= 0 ? tok->token_text(tok->bos()) : std::string();
    add_special = bos.empty() || text.rfind(bos, 0) != 0;
  }
  std::vector<int32_t> ids = tok->encode(text, add_special, true);
  if (ids.empty()) fail("--prompt: the prompt produced no tokens");
  if (verbose_prompt) {
    std::string list;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (k) list += ',';
      list += std::to_string(ids[k]);
    }
    std::fprintf(stderr, "prompt (%zu tokens):\n%s\ntoken ids: %s\n", ids.size(), text.c_str(), list.c_str());
  }
  const int64_t n_ctx = ctx > 0 ? ctx : static_cast<int64_t>(ids.size()) + n_predict;
  if (static_cast<int64_t>(ids.size()) >= n_ctx) {
    fail("--prompt: {} tokens do not fit the context size {}", ids.size(), n_ctx);
  }
  KvCache cache = model->make_cache(n_ctx);
  Sampler sampler(sp);
  StreamDecoder dec(*tok);
  StopMatcher stop(stops);
  std::vector<float> logits(model->hparams().n_vocab);

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  model->forward(ids.data(), static_cast<int64_t>(ids.size()), 0, cache, false, logits.data(), pool);
  const auto t1 = clock::now();
  const size_t n_prompt = ids.size();
  int64_t pos = static_cast<int64_t>(ids.size());
  int generated = 0;
  if (!chat) std::fputs(prompt.c_str(), stdout);
  while (generated < n_predict && pos < n_ctx) {
    const int32_t next = sampler.sample(logits.data(), model->hparams().n_vocab, ids);
    ++generated;
    if (tok->is_eog(next)) break;
    ids.push_back(next);
    std::fputs(stop.push(dec.push(next)).c_str(), stdout);
    std::fflush(stdout);
    if (stop.stopped()) break;
    if (generated == n_predict || pos + 1 >= n_ctx) break;
    model->forward(&next, 1, pos++, cache, false, logits.data(), pool);
  }
  std::fputs(stop.push(dec.flush()).c_str(), stdout);
  std::fputs(stop.flush().c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  const auto t2 = clock::now();
  const double pre_s = std::chrono::duration<double>(t1 - t0).count();
  const double dec_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "prefill: %zu tokens in %.2f s (%.1f tokens/s) | decode: %d tokens in %.2f s (%.1f tokens/s)\n",
               n_prompt, pre_s, static_cast<double>(n_prompt) / pre_s, generated, dec_s,
               generated / std::max(dec_s, 1e-9));
  return kExitOk;
}

}  // namespace ranklm::cli
