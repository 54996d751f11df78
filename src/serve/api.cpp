#include "serve/api.h"

#include <fmt/format.h>

#include "batch/records.h"

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

bool to_request(const batch::PromptItem& it, const RequestDefaults& d, const std::string& seed_key, runtime::Request& r,
                std::string& why, std::string& param) {
  if (!batch::prompt_ids(it, d.tok, d.chat_template, d.system, r.prompt, why, param)) return false;
  r.max_tokens = static_cast<int>(it.o.max_tokens.value_or(d.max_tokens));
  r.sampling = d.sampling;
  apply_overrides(it.o, r.sampling);
  r.sampling.seed = it.o.seed ? *it.o.seed : batch::request_seed(d.sampling.seed, seed_key);
  r.end_tokens.clear();
  if (!it.o.ignore_eos) r.end_tokens = d.end_tokens;
  return true;
}

}  // namespace ranklm::serve
