// Result records in the OpenAI Batch API output shape (one JSON object a line):
//   {"id": "batch_req_…", "custom_id": "q1",
//    "response": {"status_code": 200, "request_id": "req_…",
//                 "body": {"id": "chatcmpl-…", "object": "chat.completion", "created": 1700000000,
//                          "model": "…", "choices": [{"index": 0, "message": {"role": "assistant",
//                          "content": "…"}, "finish_reason": "stop"}],
//                          "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
//                                    "prompt_tokens_details": {"cached_tokens": 0}}}},
//    "error": null,
//    "timing": {"time_to_first_token_s": 0.21, "total_s": 1.4, "decode_tokens_per_s": 24.3}}
// Completions have "object": "text_completion" and choices[0].text. A request that cannot run
// has "response": {"status_code": 400, "body": {"error": {…}}} and "error": {"code", "message"}.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "batch/prompts.h"

namespace ranklm::batch {

struct Completion {
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double first_token_s = 0, total_s = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose KV was shared from another request
  nlohmann::ordered_json logprobs;  // the choice's "logprobs" (null unless asked; serve/api.h)
};

// The response body of a completion (chat.completion or text_completion), with id `id`: one
// choice per Completion (a completions request of several prompts), the usage summed.
nlohmann::ordered_json completion_body(Endpoint ep, const std::string& id, const std::string& model,
                                       const std::vector<Completion>& choices, int64_t created);
nlohmann::ordered_json result_record(const PromptItem& it, const std::string& model, const std::vector<Completion>& choices,
                                     int64_t created);
// code: "invalid_request" (the line), "context_length_exceeded", ...
nlohmann::ordered_json error_record(const PromptItem& it, const std::string& code, const std::string& message,
                            const std::string& param = "");

// The sampling seed of a request without its own: derived from the job's seed and the
// custom_id, so a request gets the same tokens whatever the order, the resume point or the
// rank layout.
uint64_t request_seed(uint64_t job_seed, const std::string& custom_id);

}  // namespace ranklm::batch
