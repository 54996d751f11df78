// The OpenAI API's shapes, as ranklm serve writes them: errors, streamed chunks (server-sent
// events), the model list, and the Prometheus text of /metrics.
//
//   error:  {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}
//   chunk:  {"id": "chatcmpl-…", "object": "chat.completion.chunk", "created": 1700000000, "model": "…",
//            "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": null, "finish_reason": null}]}
//           (completions: "object": "text_completion", choices[0].text); the last chunk carries the
//           finish_reason, then, when stream_options.include_usage, one with "choices": [] and the usage.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "batch/prompts.h"
#include "runtime/sampler.h"
#include "serve/hub.h"

namespace ranklm::serve {

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";  // or "server_error", "authentication_error", ...
  std::string message;
  std::string param;  // the request field at fault, if any
  std::string code;   // e.g. "context_length_exceeded", "invalid_api_key"
};

std::string error_json(const ApiError& e);

// A request's sampling fields (a server body or a batch line) over the defaults; the seed is
// the caller's to set.
void apply_overrides(const batch::Overrides& o, SamplingParams& sp);

// What a request gets where it says nothing: the server's or the batch job's settings.
struct RequestDefaults {
  const Tokenizer& tok;
  const std::function<const chat::ChatTemplate&()>& chat_template;
  const std::string& system;
  const SamplingParams& sampling;
  const std::vector<int32_t>& end_tokens;
  int64_t max_tokens;
};
// A request (a server body or a batch line) as the scheduler takes it: its prompt ids, token
// limit, sampling over the defaults, its seed (its own, or one derived from the job's seed and
// seed_key), the end tokens unless it ignores them. False, with the error and the field at
// fault, when its prompt cannot be run. The one mapping of `ranklm run` and `ranklm serve`.
// `choice`: which of the request's prompts (completions may give several).
bool to_request(const batch::PromptItem& it, size_t choice, const RequestDefaults& d, const std::string& seed_key,
                runtime::Request& r, std::string& why, std::string& param);

// What one choice brought back, for its "logprobs" field and its echoed text.
struct ChoiceTokens {
  std::vector<int32_t> prompt;  // the prompt's ids
  std::vector<int32_t> tokens;  // generated (the end token excluded)
  std::vector<runtime::TokenLogprob> prompt_logprobs, logprobs;
};
// The choice's "logprobs": null unless asked. Chat: {"content": [{"token", "logprob", "bytes",
// "top_logprobs": [...]}], "refusal": null}. Completions, the legacy shape: {"tokens",
// "token_logprobs", "top_logprobs" (token -> log-probability), "text_offset"}, with echo the
// prompt's tokens first (the first one's entries null). A token that is not whole UTF-8 is
// written "bytes:\xNN..." (as vLLM writes it).
nlohmann::ordered_json choice_logprobs(const batch::PromptItem& it, const Tokenizer& tok, const ChoiceTokens& c);
// With echo, the text of choice `choice`'s prompt (its string, or its ids decoded), else "".
std::string echo_text(const batch::PromptItem& it, size_t choice, const Tokenizer& tok, const std::vector<int32_t>& ids);

// One streamed chunk. `first` adds the assistant role (chat); `finish` ends the choice.
nlohmann::ordered_json chunk_json(batch::Endpoint ep, const std::string& id, const std::string& model, int64_t created,
                                  const std::string& text, bool first, const std::optional<std::string>& finish);
nlohmann::ordered_json usage_json(int64_t prompt, int64_t completion, int64_t cached);
// "data: {…}\n\n"
std::string sse(const nlohmann::ordered_json& j);

nlohmann::ordered_json models_json(const std::string& model, int64_t created);

// The tokenizer endpoints (vLLM's shapes, which lm-evaluation-harness's remote tokenizer uses,
// and llama-server's /tokenize):
//   POST /tokenize    {"prompt": "...", "add_special_tokens": true, "return_token_strs": false}, or
//                     {"messages": [...], "add_generation_prompt": true} (through the chat template)
//                     -> {"count", "max_model_len", "tokens", "token_strs"};
//                     llama-server: {"content": "...", "add_special": false, "with_pieces": false}
//                     -> {"tokens": [ids]} or, with pieces, {"tokens": [{"id", "piece"}]}
//   POST /detokenize  {"tokens": [ids]} -> {"prompt": "...", "content": "..."} (vLLM's and llama-server's key)
//   GET /tokenizer_info -> {"tokenizer_class", "vocab_size", "model_max_length", "bos_token",
//                     "eos_token", "pad_token", "chat_template"}
// A bad body is an ApiError naming the field.
struct TokenizerView {
  const Tokenizer& tok;
  const std::function<const chat::ChatTemplate&()>& chat_template;
  int64_t n_ctx;
};
nlohmann::ordered_json tokenize_json(const std::string& body, const TokenizerView& v);
nlohmann::ordered_json detokenize_json(const std::string& body, const TokenizerView& v);
nlohmann::ordered_json tokenizer_info_json(const TokenizerView& v);

// Prometheus text exposition format 0.0.4.
std::string metrics_text(const Metrics& m);

}  // namespace ranklm::serve
