#include "batch/records.h"

#include <fmt/format.h>

#include "util/checksum.h"
#include "util/unique_id.h"

namespace ranklm::batch {

using json = nlohmann::ordered_json;

namespace {

uint64_t fnv1a(const std::string& s, uint64_t h = kFnv1a64Basis) { return fnv1a64(s.data(), s.size(), h); }


}  // namespace

uint64_t request_seed(uint64_t job_seed, const std::string& custom_id) {
  // splitmix64 of the job seed, mixed into the id's hash.
  uint64_t z = job_seed + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return fnv1a(custom_id, z);
}

json completion_body(Endpoint ep, const std::string& id, const std::string& model, const std::vector<Completion>& choices,
                     int64_t created) {
  const bool chat = ep == Endpoint::kChat;
  json list = json::array();
  int64_t prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const Completion& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}, {"logprobs", c.logprobs}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
    }
    list.push_back(choice);
    prompt += c.prompt_tokens;
    completion += c.completion_tokens;
    cached += c.cached_tokens;
  }
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", list},
          {"usage",
           {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}}}};
}

json result_record(const PromptItem& it, const std::string& model, const std::vector<Completion>& choices, int64_t created) {
  const bool chat = it.endpoint == Endpoint::kChat;
  const json body = completion_body(it.endpoint, unique_id(chat ? "chatcmpl-" : "cmpl-"), model, choices, created);
  // The timing of the slowest choice.
  Completion c;
  for (const Completion& x : choices) {
    if (x.total_s >= c.total_s) c = x;
  }
  const double decode_s = c.total_s - c.first_token_s;
  return {{"id", unique_id("batch_req_")},
          {"custom_id", it.custom_id},
          {"response", {{"status_code", 200}, {"request_id", unique_id("req_")}, {"body", body}}},
          {"error", nullptr},
          {"timing",
           {{"time_to_first_token_s", c.first_token_s},
            {"total_s", c.total_s},
            {"decode_tokens_per_s", c.completion_tokens > 1 && decode_s > 0 ? (c.completion_tokens - 1) / decode_s : 0.0}}}};
}

json error_record(const PromptItem& it, const std::string& code, const std::string& message, const std::string& param) {
  // A line that is no request at all (not JSON, no custom_id, no url) never reached the
  // endpoint: OpenAI's top-level error, no response. Any other failure is the endpoint's
  // answer (400 for the request, 500 when the model could not answer): response, error null.
  if (code == "invalid_line") {
    return {{"id", unique_id("batch_req_")},
            {"custom_id", it.custom_id},
            {"response", nullptr},
            {"error", {{"code", code}, {"message", message}, {"line", it.line}}}};
  }
  const bool server = code == "model_error";
  json err = {{"message", message}, {"type", server ? "server_error" : "invalid_request_error"},
              {"param", param.empty() ? json() : json(param)}, {"code", code}};
  return {{"id", unique_id("batch_req_")},
          {"custom_id", it.custom_id},
          {"response", {{"status_code", server ? 500 : 400}, {"request_id", unique_id("req_")}, {"body", {{"error", err}}}}},
          {"error", nullptr}};
}

}  // namespace ranklm::batch
