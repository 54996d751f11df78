// Prompt files for batch jobs (ranklm run): plain text, one prompt a line, or JSONL in the
// OpenAI Batch API input shape. Parsing is a pure function of the file's bytes; a line that
// cannot be run becomes an item carrying its error (the job writes an error record for it and
// runs the rest), while a file that cannot be used at all (unreadable, no prompts, repeated
// custom_ids) is one fatal error before anything runs.
//
// JSONL line: {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
//              "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64,
//                       "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["\n\n"]}}
// or "url": "/v1/completions" with "body": {"prompt": "Once upon a time", ...}: a string, token
// ids, or a list of either (one choice per prompt). Also honoured: frequency_penalty,
// presence_penalty, logit_bias, max_completion_tokens, n (1), log-probabilities (chat: logprobs
// true and top_logprobs 0..20; completions: logprobs 0..20 and echo, which scores the prompt,
// with max_tokens 0 allowed), and the llama.cpp / vLLM extensions top_k, min_p, repeat_penalty
// (repetition_penalty) and ignore_eos (runs to max_tokens), and response_format (json_object, or
// json_schema with the keywords pydantic emits; any other keyword is refused naming it). model
// and user are accepted (one model is served; user identifies the caller to the provider). An
// OpenAI field this server does not implement (tools, ...) is refused unless it holds its default, and
// so is a field OpenAI does not know: each an error for that line naming the field, never ignored.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "util/json_file.h"

namespace ranklm::batch {

// The largest prompt file read (a bound on untrusted input; it is read whole into memory).
constexpr uint64_t kMaxPromptFileBytes = uint64_t{16} << 30;
// JSON nesting allowed in one JSONL line (deeper lines are that line's error, checked before
// the line is parsed: nothing recurses over an attacker's depth).
constexpr int kMaxJsonDepth = 64;

enum class Endpoint { kChat, kCompletion };
enum class PromptFormat { kAuto, kText, kJsonl };

// Per-request settings; unset ones take the command line's defaults.
struct Overrides {
  std::optional<int> max_tokens;
  std::optional<float> temperature, top_p;
  std::optional<uint64_t> seed;
  std::optional<std::vector<std::string>> stop;
  bool ignore_eos = false;  // generate max_tokens whatever the model's end tokens (benchmarks)
  std::optional<float> frequency_penalty, presence_penalty, min_p, repeat_penalty;
  std::optional<int> top_k;
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id, bias (checked against the vocabulary later)
  // Log-probabilities: -1 none, else the chosen tokens' and this many alternatives (chat:
  // top_logprobs once logprobs is true; completions: logprobs N). echo (completions): the
  // prompt comes back in the text, and with logprobs its tokens' entries (the first is null).
  int logprobs = -1;
  bool echo = false;
  // Structured output (response_format): 0 none ("text"), 1 a JSON object ("json_object"), 2 a
  // document the schema validates ("json_schema"; the schema's text in `schema`).
  int32_t format_kind = 0;
  std::string schema;
};

// Bounds of the OpenAI fields.
constexpr double kMaxPenalty = 2.0;
constexpr double kMaxLogitBias = 100.0;
constexpr size_t kMaxLogitBiasEntries = 1024;  // the wire's bound too (runtime/protocol.h)
constexpr int kMaxLogprobs = 20;               // top_logprobs / logprobs N (runtime/logprobs.h)
constexpr size_t kMaxPrompts = 4096;           // prompts in one completions request
// A response_format schema: at most this many levels of nested subschemas, this many
// subschemas, this many bytes of JSON.
constexpr int kMaxSchemaDepth = 32;
constexpr int kMaxSchemaNodes = 4096;
constexpr size_t kMaxSchemaBytes = 64 * 1024;

// One prompt of a completions request: text, or token ids.
struct CompletionPrompt {
  std::string text;
  std::vector<int32_t> ids;
};

struct PromptItem {
  int64_t line = 0;            // 1-based line of the file
  std::string custom_id;       // JSONL: its custom_id ("line-N" when it has none); text: "N"
  Endpoint endpoint = Endpoint::kCompletion;
  std::vector<chat::Message> messages;  // kChat
  std::vector<CompletionPrompt> prompts;  // kCompletion: one choice each
  Overrides o;
  // Choices the request asks for: one per prompt (completions), one (chat).
  size_t n_choices() const { return endpoint == Endpoint::kChat ? 1 : prompts.size(); }
  std::string error;        // non-empty: not runnable; the message names the line and field
  std::string error_param;  // the field at fault ("body.temperature"), or empty
  // "invalid_line": the line is no request (not JSON, no custom_id or url), so it never reached
  // the endpoint; "invalid_request": a request the endpoint refuses (a 400).
  std::string error_code = "invalid_request";
};

// One request body as an HTTP server receives it (ranklm serve): the same fields and checks as
// a JSONL line's body, plus "stream" and "stream_options": {"include_usage": bool}. An error
// is left in the item (error, error_param) with the field named as the API names it
// ("temperature", not "body.temperature").
struct StreamOptions {
  bool stream = false, include_usage = false;
};
PromptItem parse_request_body(std::string_view text, Endpoint ep, StreamOptions& so);

// The prompt ids of a request's choice `choice`: its own token ids (checked against the
// vocabulary), its messages through the chat template (after `system`, unless the request has
// its own system message), or its text. False, with the error and the field at fault, when it
// cannot be run.
bool prompt_ids(const PromptItem& it, size_t choice, const Tokenizer& tok,
                const std::function<const chat::ChatTemplate&()>& chat_template,
                const std::string& system, std::vector<int32_t>& ids, std::string& why, std::string& param);

// "prompts.jsonl" / ".json" are JSONL, anything else text, unless the format is given.
PromptFormat resolve_format(PromptFormat f, const std::string& path);

// Parses a whole file's content. `chat`: text lines become user messages (chat endpoint).
// Throws ranklm::Error naming `path` when there is no prompt at all or a custom_id repeats.
std::vector<PromptItem> parse_prompts(std::string_view content, const std::string& path, PromptFormat f, bool chat);
std::vector<PromptItem> read_prompts(const std::string& path, PromptFormat f, bool chat);

}  // namespace ranklm::batch
