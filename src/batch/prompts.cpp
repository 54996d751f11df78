#include "batch/prompts.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "batch/schema.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/json_file.h"
#include "util/read_file.h"

namespace ranklm::batch {

using json = nlohmann::ordered_json;

namespace {

// Strict UTF-8 (tokenizer/unicode.h) without NUL bytes.
bool valid_text(std::string_view s) { return s.find('\0') == std::string_view::npos && unicode::valid_utf8(s); }

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\f\v") == std::string_view::npos; }

std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Raised inside one line's parse; becomes that item's error.
struct LineError {
  std::string param, message;
};

[[noreturn]] void bad(const std::string& param, const std::string& what, const json& got) {
  throw LineError{param, fmt::format("{} must be {} (got {} {})", param, what, type_name(got), short_dump(got))};
}

void read_stream_options(const json& body, StreamOptions& so) {
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) bad("body.stream", "a boolean", body["stream"]);
    so.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& v = body["stream_options"];
    if (!v.is_object()) bad("body.stream_options", "an object", v);
    if (v.contains("include_usage") && !v["include_usage"].is_null()) {
      if (!v["include_usage"].is_boolean()) bad("body.stream_options.include_usage", "a boolean", v["include_usage"]);
      so.include_usage = v["include_usage"].get<bool>();
    }
  }
  for (const char* key : {"model", "user"}) {
    if (body.contains(key) && !body[key].is_null() && !body[key].is_string()) bad(std::string("body.") + key, "a string", body[key]);
  }
}

// Fields a request may carry. Known OpenAI fields that are not implemented are refused unless
// they hold their default value; anything else unknown is refused too (OpenAI answers an
// unrecognized argument with a 400 as well), so nothing a client asks for is silently dropped.
void check_fields(const json& body, Endpoint ep) {
  static const std::vector<std::string_view> kCommon = {"model", "user", "max_tokens", "temperature", "top_p", "seed", "stop", "n",
                                        "stream", "stream_options", "max_completion_tokens", "frequency_penalty", "presence_penalty",
                                        "logit_bias", "ignore_eos", "top_k", "min_p", "repeat_penalty",
                                        "repetition_penalty", "response_format"};
  static const std::vector<std::string_view> kChat = {"messages", "logprobs", "top_logprobs"};
  static const std::vector<std::string_view> kCompletion = {"prompt", "logprobs", "echo"};
  auto in = [](const std::vector<std::string_view>& list, const std::string& k) {
    return std::find(list.begin(), list.end(), k) != list.end();
  };
  const bool chat = ep == Endpoint::kChat;
  for (const auto& [key, v] : body.items()) {
    if (in(kCommon, key) || in(chat ? kChat : kCompletion, key)) continue;
    // Known to OpenAI, not implemented here: accepted only as their defaults.
    bool is_default = v.is_null();
    if (key == "tools" || key == "functions") is_default = is_default || (v.is_array() && v.empty());
    if (key == "tool_choice" || key == "function_call") is_default = is_default || v == "none";
    if (key == "parallel_tool_calls" || key == "store") is_default = is_default || v.is_boolean();
    if (key == "echo") is_default = is_default || v == false;
    if (key == "best_of") is_default = is_default || v == 1;
    if (key == "suffix") is_default = is_default || v == "";
    if (key == "service_tier") is_default = is_default || v == "auto" || v == "default";
    if (key == "metadata") is_default = is_default || v.is_object();
    static const std::vector<std::string_view> kKnown = {"logprobs", "top_logprobs", "response_format", "tools", "functions",
                                         "tool_choice", "function_call", "parallel_tool_calls", "store", "echo",
                                         "best_of", "suffix", "service_tier", "metadata", "modalities", "audio",
                                         "prediction", "reasoning_effort", "web_search_options", "messages",
                                         "prompt", "verbosity", "prompt_cache_key", "safety_identifier"};
    const std::string p = "body." + key;
    if (!in(kKnown, key)) {
      throw LineError{p, fmt::format("{} is not a request field this server knows (unrecognized; leave it out)", p)};
    }
    if (!is_default) {
      if (key == "messages" || key == "prompt" || key == "echo" || key == "top_logprobs") {  // the other endpoint's field
        throw LineError{p, fmt::format("{} is not a field of {} (use {})", p, chat ? "/v1/chat/completions" : "/v1/completions",
                                       chat ? "/v1/completions" : "/v1/chat/completions")};
      }
      throw LineError{p, fmt::format("{} is not supported by this server yet ({} would be ignored; leave it out)", p, short_dump(v))};
    }
  }
}

// Chat: logprobs (a boolean) and top_logprobs (0..20, only with logprobs true); completions:
// logprobs (0..20) and echo (a boolean).
void read_logprobs(const json& body, PromptItem& it) {
  auto count = [&](const char* key) -> std::optional<int> {
    if (!body.contains(key) || body[key].is_null()) return std::nullopt;
    const json& v = body[key];
    const std::string p = std::string("body.") + key;
    if (!v.is_number_integer()) bad(p, fmt::format("an integer in 0..{}", kMaxLogprobs), v);
    const int64_t n = v.get<int64_t>();
    if (n < 0 || n > kMaxLogprobs) throw LineError{p, fmt::format("{} is {}, outside 0..{}", p, n, kMaxLogprobs)};
    return static_cast<int>(n);
  };
  if (it.endpoint == Endpoint::kChat) {
    bool want = false;
    if (body.contains("logprobs") && !body["logprobs"].is_null()) {
      if (!body["logprobs"].is_boolean()) bad("body.logprobs", "a boolean (chat completions; top_logprobs gives the count)", body["logprobs"]);
      want = body["logprobs"].get<bool>();
    }
    const std::optional<int> top = count("top_logprobs");
    if (top && !want) throw LineError{"body.top_logprobs", "body.top_logprobs needs body.logprobs set to true"};
    if (want) it.o.logprobs = top.value_or(0);
    return;
  }
  if (const std::optional<int> n = count("logprobs")) it.o.logprobs = *n;
  if (body.contains("echo") && !body["echo"].is_null()) {
    if (!body["echo"].is_boolean()) bad("body.echo", "a boolean", body["echo"]);
    it.o.echo = body["echo"].get<bool>();
  }
}

// response_format: text (nothing), json_object, or json_schema {name, schema, strict} whose
// schema uses only the keywords the grammar holds output to (batch/schema.h).
void read_response_format(const json& body, PromptItem& it) {
  if (!body.contains("response_format") || body["response_format"].is_null()) return;
  const json& v = body["response_format"];
  const std::string p = "body.response_format";
  if (!v.is_object() || !v.contains("type") || !v["type"].is_string()) {
    bad(p, "an object with a type (text, json_object or json_schema)", v);
  }
  const std::string type = v["type"].get<std::string>();
  if (type == "text") return;
  if (type == "json_object") {
    it.o.format_kind = 1;
    return;
  }
  if (type != "json_schema") {
    throw LineError{p + ".type", fmt::format("{}.type is '{}'; use text, json_object or json_schema", p,
                                             type.size() > 40 ? type.substr(0, 40) + "..." : type)};
  }
  if (!v.contains("json_schema") || !v["json_schema"].is_object()) {
    bad(p + ".json_schema", "an object with name and schema", v.value("json_schema", json()));
  }
  const json& js = v["json_schema"];
  for (const auto& [key, x] : js.items()) {
    if (key != "name" && key != "schema" && key != "strict" && key != "description") {
      throw LineError{p + ".json_schema." + key, fmt::format("{}.json_schema.{} is not a field of json_schema (name, schema, "
                                                             "strict, description)", p, key)};
    }
  }
  if (js.contains("name") && !js["name"].is_string()) bad(p + ".json_schema.name", "a string", js["name"]);
  if (js.contains("strict") && !js["strict"].is_null() && !js["strict"].is_boolean()) {
    bad(p + ".json_schema.strict", "a boolean", js["strict"]);
  }
  const std::string ps = p + ".json_schema.schema";
  if (!js.contains("schema") || !js["schema"].is_object()) bad(ps, "a JSON schema (an object)", js.value("schema", json()));
  std::string text = js["schema"].dump();
  if (text.size() > kMaxSchemaBytes) {
    throw LineError{ps, fmt::format("{} has {} bytes of JSON; at most {}", ps, text.size(), kMaxSchemaBytes)};
  }
  const std::string why = check_json_schema(js["schema"]);
  if (!why.empty()) throw LineError{ps, fmt::format("{}: {}", ps, why)};
  it.o.format_kind = 2;
  it.o.schema = std::move(text);
}

void read_body(const json& body, PromptItem& it, StreamOptions* so = nullptr) {
  check_fields(body, it.endpoint);
  auto number = [&](const char* key, double lo, double hi, bool lo_open) -> std::optional<float> {
    if (!body.contains(key) || body[key].is_null()) return std::nullopt;
    const json& v = body[key];
    const std::string p = std::string("body.") + key;
    if (!v.is_number()) bad(p, "a number", v);
    const double x = v.get<double>();
    if (x > hi || x < lo || (lo_open && x == lo)) {
      throw LineError{p, fmt::format("{} is {}, outside {}{}, {}]", p, x, lo_open ? "(" : "[", lo, hi)};
    }
    return static_cast<float>(x);
  };
  it.o.temperature = number("temperature", 0.0, 2.0, false);
  it.o.top_p = number("top_p", 0.0, 1.0, true);
  it.o.frequency_penalty = number("frequency_penalty", -kMaxPenalty, kMaxPenalty, false);
  it.o.presence_penalty = number("presence_penalty", -kMaxPenalty, kMaxPenalty, false);
  it.o.min_p = number("min_p", 0.0, 1.0, false);
  it.o.repeat_penalty = number("repeat_penalty", 0.0, 10.0, true);
  if (const auto rp = number("repetition_penalty", 0.0, 10.0, true)) {
    if (it.o.repeat_penalty && *it.o.repeat_penalty != *rp) {
      throw LineError{"body.repetition_penalty", "body.repetition_penalty and body.repeat_penalty differ; give one"};
    }
    it.o.repeat_penalty = rp;
  }
  if (body.contains("top_k") && !body["top_k"].is_null()) {
    const json& v = body["top_k"];
    if (!v.is_number_integer()) bad("body.top_k", "an integer", v);
    const int64_t k = v.get<int64_t>();
    // vLLM's -1 and llama.cpp's 0 both mean off.
    if (k < -1 || k > (int64_t{1} << 24)) throw LineError{"body.top_k", fmt::format("body.top_k is {}, outside -1..16777216 (-1 or 0: off)", k)};
    it.o.top_k = static_cast<int>(std::max<int64_t>(k, 0));
  }
  if (body.contains("logit_bias") && !body["logit_bias"].is_null()) {
    const json& v = body["logit_bias"];
    if (!v.is_object()) bad("body.logit_bias", "an object of token ids to biases", v);
    if (v.size() > kMaxLogitBiasEntries) {
      throw LineError{"body.logit_bias", fmt::format("body.logit_bias has {} entries; at most {}", v.size(), kMaxLogitBiasEntries)};
    }
    for (const auto& [k, b] : v.items()) {
      const std::string p = fmt::format("body.logit_bias[\"{}\"]", k.size() > 20 ? k.substr(0, 20) + "..." : k);
      char* end = nullptr;
      const long long id = k.empty() || k.size() > 10 ? -1 : std::strtoll(k.c_str(), &end, 10);
      if (id < 0 || id > INT32_MAX || *end != '\0') {
        throw LineError{"body.logit_bias", fmt::format("{}: the key must be a token id (a non-negative integer)", p)};
      }
      if (!b.is_number()) bad(p, "a number", b);
      const double x = b.get<double>();
      if (!(x >= -kMaxLogitBias && x <= kMaxLogitBias)) {
        throw LineError{"body.logit_bias", fmt::format("{} is {}, outside [-100, 100]", p, x)};
      }
      it.o.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(x));
    }
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!body.contains(key) || body[key].is_null()) continue;
    const json& v = body[key];
    const std::string p = std::string("body.") + key;
    if (!v.is_number_integer()) bad(p, "an integer", v);
    const int64_t n = v.get<int64_t>();
    // Completions may ask for none (scoring the prompt: echo with logprobs).
    const int64_t lo = it.endpoint == Endpoint::kCompletion ? 0 : 1;
    if (n < lo || n > (int64_t{1} << 24)) throw LineError{p, fmt::format("{} is {}, outside {}..{}", p, n, lo, int64_t{1} << 24)};
    it.o.max_tokens = static_cast<int>(n);
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    const json& v = body["seed"];
    if (!v.is_number_integer()) bad("body.seed", "an integer", v);
    it.o.seed = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& v = body["stop"];
    std::vector<std::string> stops;
    if (v.is_string()) {
      stops.push_back(v.get<std::string>());
    } else if (v.is_array() && v.size() <= 4) {
      for (const json& s : v) {
        if (!s.is_string()) bad("body.stop", "a string or an array of up to 4 strings", v);
        stops.push_back(s.get<std::string>());
      }
    } else {
      bad("body.stop", "a string or an array of up to 4 strings", v);
    }
    for (const std::string& s : stops) {
      if (s.empty()) throw LineError{"body.stop", "body.stop holds an empty string"};
    }
    it.o.stop = stops;
  }
  if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
    if (!body["ignore_eos"].is_boolean()) bad("body.ignore_eos", "a boolean", body["ignore_eos"]);
    it.o.ignore_eos = body["ignore_eos"].get<bool>();
  }
  read_logprobs(body, it);
  read_response_format(body, it);
  if (body.contains("n") && !body["n"].is_null() && body["n"] != 1) {
    throw LineError{"body.n", fmt::format("body.n is {}; one completion per request is supported (1)", short_dump(body["n"]))};
  }
  if (so) {
    read_stream_options(body, *so);
    if (so->stream && it.o.logprobs >= 0) {
      throw LineError{"body.logprobs", "body.logprobs with body.stream is not supported (ask without streaming)"};
    }
    if (so->stream && it.o.echo) {
      throw LineError{"body.echo", "body.echo with body.stream is not supported (ask without streaming)"};
    }
    if (so->stream && it.prompts.size() > 1) {
      throw LineError{"body.prompt", fmt::format("body.prompt holds {} prompts; streaming takes one", it.prompts.size())};
    }
  } else if (body.contains("stream") && body["stream"] == true) {
    throw LineError{"body.stream", "body.stream is true; batch results are written whole (leave it out)"};
  }
}

void read_messages(const json& body, PromptItem& it) {
  if (!body.contains("messages")) throw LineError{"body.messages", "body.messages is missing (chat completions need it)"};
  const json& ms = body["messages"];
  if (!ms.is_array() || ms.empty()) bad("body.messages", "a non-empty array of messages", ms);
  for (size_t i = 0; i < ms.size(); ++i) {
    const std::string p = fmt::format("body.messages[{}]", i);
    const json& m = ms[i];
    if (!m.is_object()) bad(p, "an object with role and content", m);
    if (!m.contains("role") || !m["role"].is_string()) bad(p + ".role", "a string", m.value("role", json()));
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" && role != "developer") {
      throw LineError{p + ".role", fmt::format("{}.role is '{}'; use system, user, assistant or tool", p, role)};
    }
    if (!m.contains("content")) throw LineError{p + ".content", p + ".content is missing"};
    const json& c = m["content"];
    std::string text;
    if (c.is_string()) {
      text = c.get<std::string>();
    } else if (c.is_array()) {
      // Content parts: only text parts can be run by a text model.
      for (size_t k = 0; k < c.size(); ++k) {
        const std::string pk = fmt::format("{}.content[{}]", p, k);
        const json& part = c[k];
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
          throw LineError{pk, fmt::format("{} is not a text part ({{\"type\": \"text\", \"text\": ...}}); this model reads text only", pk)};
        }
        text += part["text"].get<std::string>();
      }
    } else {
      bad(p + ".content", "a string or an array of text parts", c);
    }
    it.messages.push_back({role == "developer" ? "system" : role, text});
  }
}

bool all_ids(const json& p) {
  return p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const json& x) { return x.is_number_integer(); });
}

CompletionPrompt one_prompt(const json& p, const std::string& where) {
  CompletionPrompt cp;
  if (p.is_string()) {
    cp.text = p.get<std::string>();
    if (cp.text.empty()) throw LineError{"body.prompt", where + " is empty"};
    return cp;
  }
  for (const json& x : p) {
    const int64_t id = x.get<int64_t>();
    if (id < 0 || id > INT32_MAX) throw LineError{"body.prompt", fmt::format("{}: token id {} is negative or too large", where, id)};
    cp.ids.push_back(static_cast<int32_t>(id));
  }
  return cp;
}

// A string, token ids, or a list of strings or of token-id arrays (one choice each).
void read_completion_prompt(const json& body, PromptItem& it) {
  if (!body.contains("prompt")) throw LineError{"body.prompt", "body.prompt is missing (completions need it)"};
  const json& p = body["prompt"];
  const char* shape = "a string, an array of token ids, or an array of strings or of token-id arrays";
  if (p.is_string() || all_ids(p)) {
    it.prompts.push_back(one_prompt(p, "body.prompt"));
    return;
  }
  if (!p.is_array() || p.empty()) bad("body.prompt", shape, p);
  if (p.size() > kMaxPrompts) throw LineError{"body.prompt", fmt::format("body.prompt holds {} prompts; at most {}", p.size(), kMaxPrompts)};
  for (size_t i = 0; i < p.size(); ++i) {
    const std::string where = fmt::format("body.prompt[{}]", i);
    if (!p[i].is_string() && !all_ids(p[i])) bad(where, "a string or a non-empty array of token ids", p[i]);
    it.prompts.push_back(one_prompt(p[i], where));
  }
}

void parse_json_line(std::string_view text, PromptItem& it) {
  it.custom_id = fmt::format("line-{}", it.line);
  if (!valid_text(text)) throw LineError{"", "not UTF-8 text (binary data?)"};
  if (json_deeper_than(text, kMaxJsonDepth)) {
    throw LineError{"", fmt::format("JSON nested deeper than {} levels; a request needs a few", kMaxJsonDepth)};
  }
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) throw LineError{"", "not valid JSON"};
  if (!j.is_object()) bad("the line", "a JSON object", j);
  if (!j.contains("custom_id")) throw LineError{"custom_id", "custom_id is missing"};
  if (!j["custom_id"].is_string() || j["custom_id"].get<std::string>().empty()) bad("custom_id", "a non-empty string", j["custom_id"]);
  it.custom_id = j["custom_id"].get<std::string>();
  if (j.contains("method") && j["method"] != "POST") bad("method", "\"POST\"", j["method"]);
  if (!j.contains("url")) throw LineError{"url", "url is missing (/v1/chat/completions or /v1/completions)"};
  if (!j["url"].is_string()) bad("url", "a string", j["url"]);
  const std::string url = j["url"].get<std::string>();
  if (url == "/v1/chat/completions") {
    it.endpoint = Endpoint::kChat;
  } else if (url == "/v1/completions") {
    it.endpoint = Endpoint::kCompletion;
  } else {
    throw LineError{"url", fmt::format("url '{}' is not served; use /v1/chat/completions or /v1/completions", url)};
  }
  if (!j.contains("body")) throw LineError{"body", "body is missing"};
  const json& body = j["body"];
  if (!body.is_object()) bad("body", "an object", body);
  if (it.endpoint == Endpoint::kChat) {
    read_messages(body, it);
  } else {
    read_completion_prompt(body, it);
  }
  read_body(body, it);
}

// The item cannot run: its error, and nothing of its prompt.
void not_runnable(PromptItem& it, std::string error, std::string param) {
  it.error = std::move(error);
  it.error_param = std::move(param);
  it.messages.clear();
  it.prompts.clear();
}

std::string without_body_prefix(std::string s) {
  for (size_t at = s.find("body."); at != std::string::npos; at = s.find("body.", at)) s.erase(at, 5);
  return s;
}

}  // namespace

PromptItem parse_request_body(std::string_view text, Endpoint ep, StreamOptions& so) {
  PromptItem it;
  it.endpoint = ep;
  try {
    if (!valid_text(text)) throw LineError{"", "the request body is not UTF-8 text"};
    if (json_deeper_than(text, kMaxJsonDepth)) {
      throw LineError{"", fmt::format("the request body is JSON nested deeper than {} levels; a request needs a few", kMaxJsonDepth)};
    }
    const json body = json::parse(text, nullptr, false);
    if (body.is_discarded()) throw LineError{"", "the request body is not valid JSON"};
    if (!body.is_object()) bad("the request body", "a JSON object", body);
    if (ep == Endpoint::kChat) {
      read_messages(body, it);
    } else {
      read_completion_prompt(body, it);
    }
    read_body(body, it, &so);
  } catch (const LineError& e) {
    not_runnable(it, without_body_prefix(e.message), without_body_prefix(e.param));
  }
  return it;
}

bool prompt_ids(const PromptItem& it, size_t choice, const Tokenizer& tok,
                const std::function<const chat::ChatTemplate&()>& chat_template,
                const std::string& system, std::vector<int32_t>& ids, std::string& why, std::string& param) {
  for (const auto& [id, b] : it.o.logit_bias) {
    if (id >= tok.n_vocab()) {
      why = fmt::format("logit_bias: token id {} is outside the vocabulary (0..{})", id, tok.n_vocab() - 1);
      param = "logit_bias";
      return false;
    }
  }
  if (it.endpoint != Endpoint::kChat) {
    const CompletionPrompt& cp = it.prompts.at(choice);
    if (cp.ids.empty()) {
      ids = tok.encode(cp.text, true, true);
      return true;
    }
    const auto bad_id = std::find_if(cp.ids.begin(), cp.ids.end(), [&](int32_t id) { return id >= tok.n_vocab(); });
    if (bad_id != cp.ids.end()) {
      why = fmt::format("prompt: token id {} is outside the vocabulary (0..{})", *bad_id, tok.n_vocab() - 1);
      param = "prompt";
      return false;
    }
    ids = cp.ids;
    return true;
  }
  try {
    std::vector<chat::Message> msgs;
    if (!system.empty() && (it.messages.empty() || it.messages.front().role != "system")) msgs.push_back({"system", system});
    msgs.insert(msgs.end(), it.messages.begin(), it.messages.end());
    ids = chat_template().encode(tok, msgs, true);
    return true;
  } catch (const Error& e) {
    why = e.what();
    param = "messages";
    return false;
  }
}

PromptFormat resolve_format(PromptFormat f, const std::string& path) {
  if (f != PromptFormat::kAuto) return f;
  auto ends = [&](const char* e) {
    const std::string s(e);
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".jsonl") || ends(".json") || ends(".JSONL") ? PromptFormat::kJsonl : PromptFormat::kText;
}

std::vector<PromptItem> parse_prompts(std::string_view content, const std::string& path, PromptFormat f, bool chat) {
  f = resolve_format(f, path);
  // A UTF-8 byte order mark (editors on Windows write one) is not part of the first prompt.
  if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);
  std::vector<PromptItem> items;
  std::map<std::string, int64_t> first_line;
  int64_t line = 0;
  size_t at = 0;
  while (at < content.size()) {
    size_t end = content.find('\n', at);
    if (end == std::string_view::npos) end = content.size();
    std::string_view text = content.substr(at, end - at);
    at = end + 1;
    ++line;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (blank(text)) continue;
    PromptItem it;
    it.line = line;
    if (f == PromptFormat::kText) {
      it.custom_id = std::to_string(line);
      if (!valid_text(text)) {
        it.error = fmt::format("{}: line {}: not UTF-8 text (binary data?)", path, line);
        it.error_code = "invalid_line";
      } else if (chat) {
        it.endpoint = Endpoint::kChat;
        it.messages.push_back({"user", std::string(text)});
      } else {
        it.prompts.push_back({std::string(text), {}});
      }
    } else {
      try {
        parse_json_line(text, it);
      } catch (const LineError& e) {
        not_runnable(it, fmt::format("{}: line {}: {}", path, line, e.message), e.param);
        if (e.param.rfind("body", 0) != 0) it.error_code = "invalid_line";
      }
    }
    const auto [pos, fresh] = first_line.emplace(it.custom_id, line);
    if (!fresh) {
      fail("{}: line {}: custom_id '{}' is already used on line {}; every request needs its own custom_id "
           "(results are matched, and resumed, by it)", path, line, it.custom_id, pos->second);
    }
    items.push_back(std::move(it));
  }
  if (items.empty()) {
    fail("{}: no prompts ({}); give one prompt a line, or JSONL requests", path,
         content.empty() ? "the file is empty" : "every line is blank");
  }
  return items;
}

std::vector<PromptItem> read_prompts(const std::string& path, PromptFormat f, bool chat) {
  return parse_prompts(read_whole_file(path, "the prompt file", kMaxPromptFileBytes), path, f, chat);
}

}  // namespace ranklm::batch
