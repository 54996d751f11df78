// ranklm generate (--model M.gguf | --shards DIR) --prompt TEXT [--chat]: streams the completion
// (with --chat, the assistant's reply to the prompt as a user message, formatted by the model's
// chat template), then prefill and decode tokens/s on stderr. One request through the engine
// and scheduler, as a batch job runs it; under mpirun with shards rank 0 prints, the others serve.
#include <chrono>
#include <cstdio>
#include <memory>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/engine.h"
#include "cli/options.h"
#include "runtime/scheduler.h"
#include "tokenizer/stop.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ranklm::cli {

namespace {

struct GenerateOptions {
  ModelSource src;
  std::string prompt, system, template_path;
  PayloadOptions payloads;
  std::vector<std::string> stops;
  int n_predict = 128, threads = 1, ctx = 0;
  SamplingParams sp;
  bool chat = false, verbose_prompt = false;
};

// The prompt's token ids: the text itself, or (--chat) the conversation through the template;
// `text` receives what was tokenized.
std::vector<int32_t> prompt_ids(const GenerateOptions& o, const gguf::File& meta, const Tokenizer& tok, std::string& text) {
  text = o.prompt;
  bool add_special = true;
  if (o.chat) {
    const auto tmpl = chat::ChatTemplate::for_model(meta, tok, o.template_path);
    std::vector<chat::Message> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    text = tmpl.apply(messages, true);
    add_special = chat::needs_bos(tok, text);
  }
  std::vector<int32_t> ids = tok.encode(text, add_special, true);
  if (ids.empty()) fail("--prompt: the prompt produced no tokens");
  return ids;
}

void print_prompt(const std::string& text, const std::vector<int32_t>& ids) {
  std::string list;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (k) list += ',';
    list += std::to_string(ids[k]);
  }
  std::fprintf(stderr, "prompt (%zu tokens):\n%s\ntoken ids: %s\n", ids.size(), text.c_str(), list.c_str());
}

// Rank 0: the request through the scheduler, each token printed as it comes.
void stream(const GenerateOptions& o, runtime::Executor& ex, const Tokenizer& tok, std::vector<int32_t> ids) {
  TextStream text(tok, o.stops);
  runtime::Request req;
  req.prompt = std::move(ids);
  req.max_tokens = o.n_predict;
  req.sampling = o.sp;
  req.end_tokens = tok.eog_tokens();
  req.stop = [&](const std::vector<int32_t>& out) {
    std::fputs(text.push(out.back()).c_str(), stdout);
    std::fflush(stdout);
    return text.stopped();
  };
  if (!o.chat) std::fputs(o.prompt.c_str(), stdout);
  const size_t n_prompt = req.prompt.size();
  std::optional<runtime::Request> pending = std::move(req);
  runtime::Finished fin;
  std::string rejected;
  runtime::SchedulerOptions so;
  so.prefill_chunk = static_cast<int64_t>(n_prompt);
  runtime::Scheduler(ex, so).run([&] { return std::exchange(pending, std::nullopt); },
                                 [&](runtime::Finished&& f) { fin = std::move(f); },
                                 [&](const runtime::Request&, const std::string& why) { rejected = why; });
  if (!rejected.empty()) fail("--prompt: {}", rejected);
  if (fin.finish_reason == "error") fail("the model's logits are NaN or infinite; its weights or hyperparameters are damaged");
  std::fputs(text.finish().c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  // The first token comes with the prefill; each later one is a decode step. A stop on the
  // end token counts that token too (it was computed).
  const int64_t generated = static_cast<int64_t>(fin.tokens.size()) + (fin.finish_reason == "stop" ? 1 : 0);
  const double pre_s = fin.first_token_s, dec_s = fin.total_s - fin.first_token_s;
  std::fprintf(stderr, "prefill: %zu tokens in %.2f s (%.1f tokens/s) | decode: %lld tokens in %.2f s (%.1f tokens/s)\n",
               n_prompt, pre_s, static_cast<double>(n_prompt) / std::max(pre_s, 1e-9), static_cast<long long>(generated),
               dec_s, static_cast<double>(generated) / std::max(dec_s, 1e-9));
}

}  // namespace

int cmd_generate(const std::vector<std::string>& args) {
  po::options_description desc("generate options");
  GenerateOptions o;
  add_source_options(desc, o.src);
  add_rank_options(desc, o.threads, o.payloads, default_threads());
  desc.add_options()
      ("prompt,p", po::value<std::string>(&o.prompt)->required(), "prompt text")
      ("chat", po::bool_switch(&o.chat), "send the prompt as a user message through the model's chat template")
      ("system", po::value<std::string>(&o.system), "system message (with --chat)")
      ("chat-template", po::value<std::string>(&o.template_path), "Jinja file to use instead of the model's template (with --chat)")
      ("verbose-prompt", po::bool_switch(&o.verbose_prompt), "print the formatted prompt and its token ids to stderr")
      ("stop", po::value<std::vector<std::string>>(&o.stops)->composing(), "stop string (repeatable); not printed")
      ("n-predict,n", po::value<int>(&o.n_predict)->default_value(128), "tokens to generate");
  add_sampling_options(desc, o.sp);
  add_context_option(desc, o.ctx, 0, "context size (0 = prompt + n-predict)");
  po::variables_map vm;
  if (!parse_options("generate", "(--model M.gguf | --shards DIR) --prompt TEXT [options]", desc, args, vm)) return kExitOk;
  o.src.check();
  if (o.n_predict < 1) usage_fail("--n-predict: {} must be >= 1", o.n_predict);
  if (o.ctx < 0 || o.ctx > kMaxContext) usage_fail("--ctx-size: {} must be in 0..{} (0 = prompt + n-predict)", o.ctx, kMaxContext);
  check_sampling(o.sp);
  o.threads = usable_threads(o.threads, default_threads());
  if (!o.chat && (!o.system.empty() || !o.template_path.empty())) usage_fail("--system and --chat-template need --chat");
  const comm::Payloads z = parse_payloads(o.payloads);

  return with_world("generate", [&](comm::World& world) {
    auto engine = load_engine(world, o.src, o.threads);
    // Rank 0 tokenizes; the others only when the context size depends on the prompt's length.
    std::unique_ptr<Tokenizer> tok;
    std::vector<int32_t> ids;
    std::string text;
    if (engine->drives() || o.ctx == 0) {
      tok = Tokenizer::from_gguf(engine->meta());
      ids = prompt_ids(o, engine->meta(), *tok, text);
    }
    const int64_t n_ctx = o.ctx > 0 ? o.ctx : static_cast<int64_t>(ids.size()) + o.n_predict;
    if (engine->drives()) {
      if (o.verbose_prompt) print_prompt(text, ids);
      if (static_cast<int64_t>(ids.size()) >= n_ctx) fail("--prompt: {} tokens do not fit the context size {}", ids.size(), n_ctx);
    }
    engine->start(1, n_ctx, z);
    if (!engine->drives()) {
      engine->exec().serve();
      return kExitOk;
    }
    stream(o, engine->exec(), *tok, std::move(ids));
    engine->exec().stop();
    return kExitOk;
  });
}

}  // namespace ranklm::cli
