// mpirun ... ranklm run --shards DIR --prompts FILE --out RESULTS.jsonl [--resume]: a batch job.
// Rank 0 reads the prompt file (text or OpenAI Batch JSONL, batch/prompts.h), feeds the
// requests to the continuous-batching scheduler, and appends a whole, flushed record to the
// results file as each one finishes (batch/results.h, batch/records.h); the other ranks serve.
// --resume skips every custom_id already in the results. -m M.gguf runs the same job on one
// process without shards.
#include <algorithm>
#include <chrono>
#include <deque>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <memory>

#include "batch/progress.h"
#include "batch/prompts.h"
#include "batch/records.h"
#include "batch/results.h"
#include "chat/chat_template.h"
#include "serve/api.h"
#include "cli/commands.h"
#include "cli/engine.h"
#include "cli/options.h"
#include "cli/watchdog.h"
#include "io/gguf.h"
#include "plan/identity.h"
#include "sys/cpu_binding.h"
#include "runtime/scheduler.h"
#include "tokenizer/stop.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/read_file.h"

namespace ranklm::cli {

namespace {

struct RunOptions {
  ModelSource src;
  std::string prompts, out, format = "auto", system, template_path;
  PayloadOptions payloads;
  std::string progress = "auto", model_name;
  std::vector<std::string> stops;
  bool resume = false, chat = false, wait_lock = false, force_resume = false, no_prefix_sharing = false;
  int max_tokens = 256, threads = 1, parallel = 8, ctx = 2048;
  int64_t prefill_chunk = 256;
  double progress_interval = 30;
  SamplingParams sp;
};

// One request's text so far: tokens become text as they come, stop strings end it.
struct TextState {
  TextStream stream;
  std::string text;
  TextState(const Tokenizer& tok, std::vector<std::string> stops) : stream(tok, std::move(stops)) {}
};

batch::PromptFormat parse_format(const std::string& s) {
  if (s == "auto") return batch::PromptFormat::kAuto;
  if (s == "text") return batch::PromptFormat::kText;
  if (s == "jsonl") return batch::PromptFormat::kJsonl;
  usage_fail("--format: '{}' is not a prompt format (auto, text or jsonl)", s);
}

// Rank 0's side of the scheduler for a batch job. Every choice of an item (a completions line
// may hold several prompts) is a request of its own, id item * kMaxPrompts + choice; the item's
// record is written once all its choices have ended (an error record if one failed).
struct ChoiceRun {
  const RunOptions& o;
  std::vector<batch::PromptItem>& items;
  batch::ResultsFile& results;
  batch::Progress& progress;
  const Tokenizer& tok;
  const serve::RequestDefaults& defaults;
  const std::string& model_name;
  int64_t created;

  struct ItemState {
    std::vector<batch::Completion> choices;
    std::vector<serve::ChoiceTokens> tokens;
    size_t left = 0;
    bool failed = false;
  };
  static constexpr int64_t kIds = static_cast<int64_t>(batch::kMaxPrompts);
  std::map<int64_t, std::shared_ptr<TextState>> texts{};
  std::map<size_t, ItemState> open_items{};
  std::deque<runtime::Request> ready{};
  size_t next_item = 0;

  void write_error(const batch::PromptItem& it, const std::string& code, const std::string& msg, const std::string& param) {
    results.write(batch::error_record(it, code, msg, param));
    progress.finished(false, 0, 0);
  }

  // The requests of the next item still to run, or false when it cannot run (its error written).
  bool open_item(size_t i) {
    batch::PromptItem& it = items[i];
    if (results.done().count(it.custom_id)) return false;
    if (!it.error.empty()) {
      write_error(it, it.error_code, it.error, it.error_param);
      return false;
    }
    std::vector<runtime::Request> reqs(it.n_choices());
    std::string why, param;
    for (size_t k = 0; k < reqs.size(); ++k) {
      reqs[k].id = static_cast<int64_t>(i) * kIds + static_cast<int64_t>(k);
      if (!serve::to_request(it, k, defaults, it.custom_id, reqs[k], why, param)) {
        write_error(it, "invalid_request", fmt::format("{}: line {}: {}", o.prompts, it.line, why), "body." + param);
        return false;
      }
    }
    ItemState& st = open_items[i];
    st.choices.resize(reqs.size());
    st.tokens.resize(reqs.size());
    st.left = reqs.size();
    for (runtime::Request& r : reqs) {
      auto text = std::make_shared<TextState>(tok, it.o.stop.value_or(o.stops));
      texts[r.id] = text;
      r.stop = [text, this](const std::vector<int32_t>& out) {
        progress.token();
        text->text += text->stream.push(out.back());
        return text->stream.stopped();
      };
      st.tokens[static_cast<size_t>(r.id % kIds)].prompt = r.prompt;
      ready.push_back(std::move(r));
    }
    return true;
  }

  std::optional<runtime::Request> next() {
    while (ready.empty() && next_item < items.size()) open_item(next_item++);
    if (ready.empty()) return std::nullopt;
    runtime::Request r = std::move(ready.front());
    ready.pop_front();
    return r;
  }

  // A choice has ended (failed: `error` non-empty, with its code); the item's record once every
  // choice has.
  void choice_end(int64_t id, const std::string& code, const std::string& error) {
    const size_t i = static_cast<size_t>(id / kIds);
    ItemState& st = open_items.at(i);
    if (!error.empty() && !st.failed) {
      st.failed = true;
      write_error(items[i], code, error, "");
    }
    texts.erase(id);
    if (--st.left > 0) return;
    if (!st.failed) {
      int64_t prompt = 0, completion = 0, cached = 0;
      for (const batch::Completion& c : st.choices) {
        prompt += c.prompt_tokens;
        completion += c.completion_tokens;
        cached += c.cached_tokens;
      }
      results.write(batch::result_record(items[i], model_name, st.choices, created));
      progress.finished(true, prompt, completion, cached);
    }
    open_items.erase(i);
  }

  void done(runtime::Finished&& f) {
    const batch::PromptItem& it = items[static_cast<size_t>(f.id / kIds)];
    if (f.finish_reason == "error") {
      return choice_end(f.id, "model_error",
                        fmt::format("{}: line {}: the model's logits were NaN or infinite after {} generated tokens; its "
                                    "weights or hyperparameters are damaged", o.prompts, it.line, f.tokens.size()));
    }
    TextState& text = *texts.at(f.id);
    text.text += text.stream.finish();
    const size_t k = static_cast<size_t>(f.id % kIds);
    ItemState& st = open_items.at(static_cast<size_t>(f.id / kIds));
    serve::ChoiceTokens& ct = st.tokens[k];
    ct.tokens = std::move(f.tokens);
    ct.logprobs = std::move(f.logprobs);
    ct.prompt_logprobs = std::move(f.prompt_logprobs);
    batch::Completion& c = st.choices[k];
    c.text = serve::echo_text(it, k, tok, ct.prompt) + text.text;
    // A stop string counts as a stop even when it ended the sequence at its token limit.
    c.finish_reason = text.stream.stopped() ? "stop" : f.finish_reason;
    c.prompt_tokens = f.n_prompt;
    c.cached_tokens = f.n_cached;
    c.completion_tokens = static_cast<int64_t>(ct.tokens.size());
    c.first_token_s = f.first_token_s;
    c.total_s = f.total_s;
    c.logprobs = serve::choice_logprobs(it, tok, ct);
    choice_end(f.id, "", "");
  }

  void reject(const runtime::Request& r, const std::string& why) {
    const batch::PromptItem& it = items[static_cast<size_t>(r.id / kIds)];
    choice_end(r.id, "context_length_exceeded", fmt::format("{}: line {}: {}", o.prompts, it.line, why));
  }
};

// The job on rank 0: every not-yet-done prompt through the scheduler, a record per request.
void drive(const RunOptions& o, runtime::Executor& ex, int n_stages, const gguf::File& meta, int64_t n_vocab,
           std::vector<batch::PromptItem>& items, batch::ResultsFile& results) {
  auto tok = Tokenizer::from_gguf(meta);
  if (tok->n_vocab() != n_vocab) {
    fail("{}: the vocabulary has {} tokens (metadata 'tokenizer.ggml.tokens') but the model's embedding has {} rows; "
         "the model is inconsistent (convert it again)", meta.path(), tok->n_vocab(), n_vocab);
  }
  std::string model_name = o.model_name;
  if (model_name.empty()) model_name = meta.get_string_opt("general.name").value_or("ranklm");
  // The chat template, loaded on first use. A model without one fails every chat request with
  // the same message; text prompts sent as chat all need it, so there it is fatal.
  chat::LazyChatTemplate tmpl(meta, *tok, o.template_path);
  if (o.chat) tmpl.get();
  const std::function<const chat::ChatTemplate&()> chat_template = [&]() -> const chat::ChatTemplate& { return tmpl.get(); };
  const std::vector<int32_t> end_tokens = tok->eog_tokens();
  const int64_t skipped = static_cast<int64_t>(std::count_if(items.begin(), items.end(), [&](const batch::PromptItem& it) {
    return results.done().count(it.custom_id) > 0;
  }));
  const int64_t skipped_errors = static_cast<int64_t>(std::count_if(items.begin(), items.end(), [&](const batch::PromptItem& it) {
    return results.failed().count(it.custom_id) > 0;
  }));
  batch::Progress progress(batch::parse_progress_mode(o.progress), static_cast<int64_t>(items.size()) - skipped, skipped,
                           o.progress_interval, stderr, skipped_errors);
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  const serve::RequestDefaults defaults{*tok, chat_template, o.system, o.sp, end_tokens, o.max_tokens};
  ChoiceRun run{o, items, results, progress, *tok, defaults, model_name, created};
  auto source = [&] { return run.next(); };
  auto done = [&](runtime::Finished&& f) { run.done(std::move(f)); };
  auto reject = [&](const runtime::Request& r, const std::string& why) { run.reject(r, why); };
  runtime::SchedulerOptions so;
  so.n_micro = n_stages;
  so.prefill_chunk = o.prefill_chunk;
  so.share_prefixes = !o.no_prefix_sharing;
  runtime::Scheduler(ex, so).run(source, done, reject);
  progress.summary();
}

}  // namespace

int cmd_run(const std::vector<std::string>& args) {
  po::options_description desc("run options");
  RunOptions o;
  o.threads = default_threads();
  add_source_options(desc, o.src);
  add_rank_options(desc, o.threads, o.payloads, default_threads());
  desc.add_options()
      ("prompts,f", po::value(&o.prompts)->required(), "prompt file: text (one prompt a line) or JSONL (OpenAI Batch input)")
      ("out,o", po::value(&o.out)->required(), "results file (JSONL, OpenAI Batch output shape), appended as requests finish")
      ("resume", po::bool_switch(&o.resume), "continue a job: skip every custom_id already in --out")
      ("wait-lock", po::bool_switch(&o.wait_lock), "if another job holds --out, wait for it to end instead of refusing")
      ("force-resume", po::bool_switch(&o.force_resume), "resume although --out answers another prompt file or model")
      ("format", po::value(&o.format)->default_value("auto"), "prompt file format: auto (by extension: .jsonl/.json), text, jsonl")
      ("chat", po::bool_switch(&o.chat), "text prompts: send each line as a user message through the chat template")
      ("system", po::value(&o.system), "chat requests: a system message (unless the request has its own)")
      ("chat-template", po::value(&o.template_path), "Jinja file to use instead of the model's template")
      ("max-tokens,n", po::value(&o.max_tokens)->default_value(256), "default max_tokens per request")
      ("stop", po::value(&o.stops)->composing(), "default stop string (repeatable)")
      ("parallel", po::value(&o.parallel)->default_value(8), "sequences in flight (KV slots)")
      ("prefill-chunk", po::value(&o.prefill_chunk)->default_value(256), "prompt tokens per sequence per step")
      ("no-prefix-sharing", po::bool_switch(&o.no_prefix_sharing),
       "compute every prompt whole (by default a prompt that starts like one in the KV cache shares its blocks)")
      ("progress", po::value(&o.progress)->default_value("auto"), "auto (a live line on a terminal, else log lines), bar, log, none")
      ("progress-interval", po::value(&o.progress_interval)->default_value(30.0), "seconds between log lines")
      ("model-name", po::value(&o.model_name), "the \"model\" field of the results (default: the model's general.name)");
  add_sampling_options(desc, o.sp, "default ");
  add_context_option(desc, o.ctx, 2048, "context (KV positions) per sequence: prompt + completion");
  po::variables_map vm;
  if (!parse_options("run", "(--shards DIR | -m M.gguf) --prompts FILE --out RESULTS.jsonl [--resume] [options]", desc, args, vm)) {
    return kExitOk;
  }
  o.src.check();
  if (o.max_tokens < 1) usage_fail("--max-tokens: {} must be >= 1", o.max_tokens);
  if (o.ctx < 2) usage_fail("--ctx-size: {} must be >= 2", o.ctx);
  if (o.parallel < 1 || o.parallel > kMaxParallel) usage_fail("--parallel: {} must be in 1..{}", o.parallel, kMaxParallel);
  if (o.prefill_chunk < 1) usage_fail("--prefill-chunk: {} must be >= 1", o.prefill_chunk);
  if (!(o.progress_interval > 0)) usage_fail("--progress-interval: {} must be > 0", o.progress_interval);
  if (o.ctx > kMaxContext) usage_fail("--ctx-size: {} is more than {}", o.ctx, kMaxContext);
  check_sampling(o.sp);
  o.threads = usable_threads(o.threads, default_threads());
  const batch::PromptFormat format = parse_format(o.format);
  batch::parse_progress_mode(o.progress);
  if (o.chat && batch::resolve_format(format, o.prompts) == batch::PromptFormat::kJsonl) {
    usage_fail("--chat is for text prompt files; a JSONL request says its endpoint in its url");
  }
  const comm::Payloads z = parse_payloads(o.payloads);

  return with_world("run", [&](comm::World& world) {
    comm::Comm& c = world.comm();
    o.src.check(c.size());  // before the results file is opened
    // Rank 0 checks the prompt file and the results file before any weights are read.
    std::vector<batch::PromptItem> items;
    std::unique_ptr<batch::ResultsFile> results;
    std::string prompt_bytes;
    if (c.rank() == 0) {
      batch::ResultsOptions ro;
      ro.resume = o.resume;
      ro.wait_lock = o.wait_lock;
      ro.force_resume = o.force_resume;
      ro.prompts_path = o.prompts;
      prompt_bytes = read_whole_file(o.prompts, "the prompt file", batch::kMaxPromptFileBytes);
      items = batch::parse_prompts(prompt_bytes, o.prompts, format, o.chat);
      Watchdog::hold(o.wait_lock);  // waiting for another job's lock is not a stuck start-up
      results = std::make_unique<batch::ResultsFile>(o.out, ro);
      Watchdog::hold(false);
    }
    auto engine = load_engine(world, o.src, o.threads);
    engine->start(o.parallel, o.ctx, z);
    if (!engine->drives()) {
      engine->exec().serve();
      return kExitOk;
    }
    // Nothing is written before this: the job is checked against the one that wrote --out.
    const plan::ModelIdentity& mid = engine->plan().model;
    results->begin(batch::JobIdentity::of_prompts(o.prompts, prompt_bytes, mid.name, mid.gguf_hash));
    prompt_bytes = std::string();
    if (results->torn_bytes() > 0) {
      std::fprintf(stderr, "ranklm run: %s: cut off a torn last line (%lld bytes) left by an interrupted job\n",
                   o.out.c_str(), static_cast<long long>(results->torn_bytes()));
    }
    drive(o, engine->exec(), static_cast<int>(engine->plan().stages.size()), engine->meta(), mid.n_vocab, items, *results);
    engine->exec().stop();
    return kExitOk;
  });
}

}  // namespace ranklm::cli
