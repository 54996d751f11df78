#include "serve/api.h"

#include <fmt/format.h>

#include "batch/records.h"
#include "grammar/grammar.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/json_file.h"

namespace ranklm::serve {

using json = nlohmann::ordered_json;

std::string error_json(const ApiError& e) {
  const json j = {{"error",
                   {{"message", e.message},
                    {"type", e.type},
                    {"param", e.param.empty() ? json() : json(e.param)},
                    {"code", e.code.empty() ? json() : json(e.code)}}}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json chunk_json(batch::Endpoint ep, const std::string& id, const std::string& model, int64_t created, const std::string& text,
                bool first, const std::optional<std::string>& finish) {
  const bool chat = ep == batch::Endpoint::kChat;
  json choice = {{"index", 0}};
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish ? json(*finish) : json();
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json usage_json(int64_t prompt, int64_t completion, int64_t cached) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

std::string sse(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

json models_json(const std::string& model, int64_t created) {
  return {{"object", "list"},
          {"data", json::array({{{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "ranklm"}}})}};
}

std::string metrics_text(const Metrics& m) {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  auto single = [&](const char* name, const char* type, const char* help, int64_t v) {
    family(name, type, help);
    out += fmt::format("{} {}\n", name, v);
  };
  family("ranklm_requests_total", "counter", "HTTP requests answered, by status code.");
  for (const auto& [status, n] : m.requests) out += fmt::format("ranklm_requests_total{{code=\"{}\"}} {}\n", status, n);
  single("ranklm_requests_cancelled_total", "counter", "Requests whose client left before the end (their slot freed at once).",
         m.cancelled);
  single("ranklm_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", m.prompt_tokens);
  single("ranklm_prompt_tokens_cached_total", "counter", "Prompt tokens whose KV was shared from another request.",
         m.cached_tokens);
  single("ranklm_completion_tokens_total", "counter", "Generated tokens of finished requests.", m.completion_tokens);
  single("ranklm_queue_length", "gauge", "Requests waiting for a slot.", m.queued + m.waiting_for_kv);
  single("ranklm_slots_in_use", "gauge", "KV slots holding a running request.", m.slots_in_use);
  single("ranklm_slots", "gauge", "KV slots (--parallel).", m.slots);
  single("ranklm_kv_blocks_in_use", "gauge", "Rank 0's KV blocks held (running requests and prefixes kept for reuse).",
         m.kv_blocks_in_use);
  single("ranklm_kv_blocks", "gauge", "Rank 0's KV block pool.", m.kv_blocks);
  auto per_rank = [&](const char* name, const char* help, double RankSeconds::*field) {
    family(name, "counter", help);
    for (size_t r = 0; r < m.ranks.size(); ++r) out += fmt::format("{}{{rank=\"{}\"}} {:.6f}\n", name, r, m.ranks[r].*field);
  };
  per_rank("ranklm_rank_compute_seconds_total", "Seconds each rank spent computing.", &RankSeconds::compute_s);
  per_rank("ranklm_rank_comm_seconds_total", "Seconds each rank spent waiting for messages (transfers and other ranks).",
           &RankSeconds::comm_s);
  return out;
}

void apply_overrides(const batch::Overrides& o, SamplingParams& sp) {
  if (o.temperature) sp.temperature = *o.temperature;
  if (o.top_p) sp.top_p = *o.top_p;
  if (o.top_k) sp.top_k = *o.top_k;
  if (o.min_p) sp.min_p = *o.min_p;
  if (o.repeat_penalty) sp.repeat_penalty = *o.repeat_penalty;
  if (o.frequency_penalty) sp.frequency_penalty = *o.frequency_penalty;
  if (o.presence_penalty) sp.presence_penalty = *o.presence_penalty;
  if (!o.logit_bias.empty()) sp.logit_bias = o.logit_bias;
}

bool to_request(const batch::PromptItem& it, size_t choice, const RequestDefaults& d, const std::string& seed_key,
                runtime::Request& r, std::string& why, std::string& param) {
  if (!batch::prompt_ids(it, choice, d.tok, d.chat_template, d.system, r.prompt, why, param)) return false;
  r.logprobs = runtime::LogprobAsk{it.o.logprobs, it.o.echo ? it.o.logprobs : -1};
  r.grammar_kind = it.o.format_kind;
  r.grammar = it.o.schema;
  if (r.grammar_kind == static_cast<int32_t>(grammar::Kind::kJsonSchema)) {
    // What the grammar engine makes of it (a pattern that is no regular expression, a $ref to
    // nothing): refused here, before the head rank compiles it.
    const std::string bad = grammar::check_schema(r.grammar);
    if (!bad.empty()) {
      why = "response_format.json_schema.schema cannot be turned into a grammar: " + bad;
      param = "response_format";
      return false;
    }
  }
  r.max_tokens = static_cast<int>(it.o.max_tokens.value_or(d.max_tokens));
  r.sampling = d.sampling;
  apply_overrides(it.o, r.sampling);
  // Each prompt of a list draws its own numbers.
  const std::string key = choice == 0 ? seed_key : fmt::format("{}#{}", seed_key, choice);
  r.sampling.seed = it.o.seed ? *it.o.seed + choice : batch::request_seed(d.sampling.seed, key);
  r.end_tokens.clear();
  if (!it.o.ignore_eos) r.end_tokens = d.end_tokens;
  return true;
}

namespace {

// A token's text for the API: its bytes when they are whole UTF-8, else "bytes:\xNN..." (vLLM).
std::string token_string(const std::string& piece) {
  if (unicode::valid_utf8(piece)) return piece;
  std::string out = "bytes:";
  for (unsigned char c : piece) out += fmt::format("\\x{:02x}", c);
  return out;
}

json bytes_json(const std::string& piece) {
  json b = json::array();
  for (unsigned char c : piece) b.push_back(static_cast<int>(c));
  return b;
}

json chat_entry(const Tokenizer& tok, const runtime::TokenLogprob& e) {
  const std::string piece = tok.token_to_piece(e.token, true);
  json top = json::array();
  for (const runtime::TopLogprob& t : e.top) {
    const std::string p = tok.token_to_piece(t.token, true);
    top.push_back({{"token", token_string(p)}, {"logprob", t.logprob}, {"bytes", bytes_json(p)}});
  }
  return {{"token", token_string(piece)}, {"logprob", e.logprob}, {"bytes", bytes_json(piece)}, {"top_logprobs", top}};
}

}  // namespace

std::string echo_text(const batch::PromptItem& it, size_t choice, const Tokenizer& tok, const std::vector<int32_t>& ids) {
  if (!it.o.echo || it.endpoint == batch::Endpoint::kChat) return "";
  const batch::CompletionPrompt& cp = it.prompts.at(choice);
  return cp.ids.empty() ? cp.text : tok.decode(ids);
}

json choice_logprobs(const batch::PromptItem& it, const Tokenizer& tok, const ChoiceTokens& c) {
  if (it.o.logprobs < 0) return nullptr;
  if (it.endpoint == batch::Endpoint::kChat) {
    json content = json::array();
    for (const runtime::TokenLogprob& e : c.logprobs) content.push_back(chat_entry(tok, e));
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  int64_t offset = 0;  // in characters of the returned text (code points, as vLLM counts them)
  auto add = [&](int32_t id, const runtime::TokenLogprob* e) {
    const std::string piece = tok.token_to_piece(id, true);
    tokens.push_back(token_string(piece));
    offsets.push_back(offset);
    for (unsigned char ch : piece) offset += (ch & 0xC0) != 0x80 ? 1 : 0;
    if (!e) {
      lps.push_back(nullptr);
      tops.push_back(nullptr);
      return;
    }
    lps.push_back(e->logprob);
    json top = json::object();
    for (const runtime::TopLogprob& t : e->top) {
      const std::string key = token_string(tok.token_to_piece(t.token, true));
      if (!top.contains(key)) top[key] = t.logprob;
    }
    tops.push_back(top);
  };
  if (it.o.echo) {
    for (size_t i = 0; i < c.prompt.size(); ++i) add(c.prompt[i], i == 0 ? nullptr : &c.prompt_logprobs.at(i - 1));
  }
  for (size_t i = 0; i < c.tokens.size() && i < c.logprobs.size(); ++i) add(c.tokens[i], &c.logprobs[i]);
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

namespace {

json parse_object(const std::string& body) {
  if (!unicode::valid_utf8(body)) throw ApiError{400, "invalid_request_error", "the request body is not UTF-8 text", "", ""};
  if (json_deeper_than(body, batch::kMaxJsonDepth)) {
    throw ApiError{400, "invalid_request_error", fmt::format("the request body is JSON nested deeper than {} levels", batch::kMaxJsonDepth), "", ""};
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw ApiError{400, "invalid_request_error", "the request body is not a JSON object", "", ""};
  return j;
}

bool flag(const json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean()) throw ApiError{400, "invalid_request_error", fmt::format("{} must be a boolean", key), key, ""};
  return j[key].get<bool>();
}

std::string text_field(const json& j, const char* key) {
  if (!j[key].is_string()) throw ApiError{400, "invalid_request_error", fmt::format("{} must be a string", key), key, ""};
  return j[key].get<std::string>();
}

}  // namespace

json tokenize_json(const std::string& body, const TokenizerView& v) {
  const json j = parse_object(body);
  if (j.contains("content")) {  // llama-server
    const std::vector<int32_t> ids = v.tok.encode(text_field(j, "content"), flag(j, "add_special", false), true);
    if (!flag(j, "with_pieces", false)) return {{"tokens", ids}};
    json pieces = json::array();
    for (int32_t id : ids) pieces.push_back({{"id", id}, {"piece", token_string(v.tok.token_to_piece(id, true))}});
    return {{"tokens", pieces}};
  }
  std::vector<int32_t> ids;
  if (j.contains("messages")) {
    // The same checks as a chat request's messages.
    batch::StreamOptions so;
    json req = {{"messages", j["messages"]}};
    const batch::PromptItem it = batch::parse_request_body(req.dump(), batch::Endpoint::kChat, so);
    if (!it.error.empty()) throw ApiError{400, "invalid_request_error", it.error, it.error_param, ""};
    try {
      ids = v.chat_template().encode(v.tok, it.messages, flag(j, "add_generation_prompt", true));
    } catch (const Error& e) {
      throw ApiError{400, "invalid_request_error", e.what(), "messages", ""};
    }
  } else if (j.contains("prompt")) {
    ids = v.tok.encode(text_field(j, "prompt"), flag(j, "add_special_tokens", true), true);
  } else {
    throw ApiError{400, "invalid_request_error", "give prompt (text) or messages (a chat), or content (llama-server's shape)", "prompt", ""};
  }
  json strs = nullptr;
  if (flag(j, "return_token_strs", false)) {
    strs = json::array();
    for (int32_t id : ids) strs.push_back(token_string(v.tok.token_to_piece(id, true)));
  }
  return {{"count", ids.size()}, {"max_model_len", v.n_ctx}, {"tokens", ids}, {"token_strs", strs}};
}

json detokenize_json(const std::string& body, const TokenizerView& v) {
  const json j = parse_object(body);
  if (!j.contains("tokens") || !j["tokens"].is_array()) {
    throw ApiError{400, "invalid_request_error", "tokens must be an array of token ids", "tokens", ""};
  }
  std::vector<int32_t> ids;
  for (const json& x : j["tokens"]) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= v.tok.n_vocab()) {
      throw ApiError{400, "invalid_request_error",
                     fmt::format("tokens: {} is not a token id of this vocabulary (0..{})", x.dump(), v.tok.n_vocab() - 1), "tokens", ""};
    }
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  const std::string text = v.tok.decode(ids, true);  // bytes that are not UTF-8 become U+FFFD when written
  return {{"prompt", text}, {"content", text}};
}

json tokenizer_info_json(const TokenizerView& v) {
  auto token = [&](int32_t id) -> json { return id >= 0 && id < v.tok.n_vocab() ? json(v.tok.token_text(id)) : json(); };
  json tmpl = nullptr;
  try {
    tmpl = v.chat_template().source();
  } catch (const Error&) {  // a base model: no template
  }
  return {{"tokenizer_class", "GGUFTokenizer"}, {"vocab_size", v.tok.n_vocab()}, {"model_max_length", v.n_ctx},
          {"bos_token", token(v.tok.bos())}, {"eos_token", token(v.tok.eos())}, {"pad_token", nullptr}, {"chat_template", tmpl}};
}

}  // namespace ranklm::serve
