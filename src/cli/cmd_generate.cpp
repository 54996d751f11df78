// ranklm generate --model M.gguf --prompt TEXT [--chat]: streams the completion (with --chat, the
// assistant's reply to the prompt as a user message, formatted by the model's chat template), then
// prefill and decode tokens/s on stderr.
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>

#include "runtime/cpu_binding.h"
#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/distributed.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ranklm::cli {

namespace {

// One sequence's forward pass: n tokens at pos, then the next token sampled from the last
// one's logits (one model here, or the last pipeline stage of the distributed executor).
using StepFn = std::function<int32_t(const int32_t* tokens, int64_t n, int64_t pos)>;

}  // namespace

int cmd_generate(const std::vector<std::string>& args) {
  po::options_description desc("generate options");
  std::string model_path, shards, prompt, system, template_path, allreduce = "f32";
  std::vector<std::string> stops;
  int n_predict = 128, threads = default_threads(), ctx = 0;
  SamplingParams sp;
  bool chat = false, verbose_prompt = false;
  desc.add_options()
      ("model,m", po::value<std::string>(&model_path), "GGUF model file")
      ("shards", po::value<std::string>(&shards), "or: a shard directory (ranklm-repack); under mpirun, one rank per shard")
      ("threads,t", po::value<int>(&threads)->default_value(default_threads()), "worker threads (per rank)")
      ("allreduce", po::value<std::string>(&allreduce)->default_value("f32"), "with --shards: TP allreduce payload, f32 or q8_0")
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
  if (!parse_options("generate", "(--model M.gguf | --shards DIR) --prompt TEXT [options]", desc, args, vm)) return kExitOk;
  if (model_path.empty() == shards.empty()) usage_fail("give exactly one of --model and --shards");
  if (n_predict < 0) usage_fail("--n-predict: {} must be >= 0", n_predict);
  if (threads < 1) usage_fail("--threads: {} must be >= 1", threads);
  if (ctx < 0 || ctx > (1 << 24)) usage_fail("--ctx-size: {} must be in 0..{} (0 = prompt + n-predict)", ctx, 1 << 24);
  check_sampling(sp);
  threads = usable_threads(threads, default_threads());
  if (!chat && (!system.empty() || !template_path.empty())) usage_fail("--system and --chat-template need --chat");

  auto run = [&](comm::World* world) -> int {
    // Under mpirun with --shards every rank loads its part; rank 0 tokenizes, samples and prints,
    // the others serve its steps.
    std::unique_ptr<ShardJob> job;
    std::unique_ptr<gguf::File> file;
    std::unique_ptr<Model> model;
    const gguf::File* meta = nullptr;
    if (!shards.empty()) {
      job = load_shard_job(*world, shards, threads);
      meta = job->rank_file.file.get();
    } else {
      file = gguf::File::open(model_path);
      model = Model::load(*file);
      meta = file.get();
    }
    auto tok = Tokenizer::from_gguf(*meta);

    std::string text = prompt;
    bool add_special = true;
    if (chat) {
      const auto tmpl = chat::ChatTemplate::for_model(*meta, *tok, template_path);
      std::vector<chat::Message> messages;
      if (!system.empty()) messages.push_back({"system", system});
      messages.push_back({"user", prompt});
      text = tmpl.apply(messages, true);
      add_special = chat::needs_bos(*tok, text);
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
    StepFn step;
    std::unique_ptr<kern::ThreadPool> pool;
    std::unique_ptr<KvCache> cache;
    std::unique_ptr<Sampler> sampler;
    std::vector<float> logits;
    if (job) {
      start_executor(*world, *job, 1, n_ctx, parse_compression(allreduce));
      runtime::Executor& ex = *job->exec;
      if (world->comm().rank() != 0) {
        ex.serve();
        return kExitOk;
      }
      ex.setup_slot(0, sp, ids);  // the last stage samples; only token ids come back
      step = [&ex](const int32_t* t, int64_t n, int64_t pos) {
        runtime::Batch b;
        b.seqs.push_back({0, static_cast<int32_t>(pos), static_cast<int32_t>(n), 1});
        b.tokens.assign(t, t + n);
        ex.submit_sampled(b);
        std::vector<int32_t> next;
        ex.collect_tokens(next);
        return next.at(0);
      };
    } else {
      pool = std::make_unique<kern::ThreadPool>(threads, core_binder(threads));
      cache = std::make_unique<KvCache>(model->make_cache(n_ctx));
      sampler = std::make_unique<Sampler>(sp);
      logits.resize(static_cast<size_t>(model->hparams().n_vocab));
      step = [&](const int32_t* t, int64_t n, int64_t pos) {
        model->forward(t, n, pos, *cache, false, logits.data(), *pool);
        const int32_t next = sampler->sample(logits.data(), model->hparams().n_vocab, ids);
        if (next == kBadLogits) fail("the model's logits are NaN or infinite; its weights or hyperparameters are damaged");
        return next;
      };
    }
    StreamDecoder dec(*tok);
    StopMatcher stop(stops);

    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    int32_t next = step(ids.data(), static_cast<int64_t>(ids.size()), 0);
    const auto t1 = clock::now();
    const size_t n_prompt = ids.size();
    int64_t pos = static_cast<int64_t>(ids.size());
    int generated = 0;
    if (!chat) std::fputs(prompt.c_str(), stdout);
    while (generated < n_predict && pos < n_ctx) {
      ++generated;
      if (tok->is_eog(next)) break;
      ids.push_back(next);
      std::fputs(stop.push(dec.push(next)).c_str(), stdout);
      std::fflush(stdout);
      if (stop.stopped()) break;
      if (generated == n_predict || pos + 1 >= n_ctx) break;
      next = step(&next, 1, pos++);
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
    if (job) job->exec->stop();
    return kExitOk;
};
  if (!shards.empty()) return with_world("generate", [&](comm::World& w) { return run(&w); });
  return run(nullptr);
}

}  // namespace ranklm::cli
