// libFuzzer target: prompt files (text and OpenAI Batch JSONL) on arbitrary bytes; the first
// byte picks the format and --chat, or (bit 2) one HTTP request body of ranklm serve (bit 3:
// chat or completions). Nothing may crash; a body is either parsed or carries its error.
#include <cstdint>
#include <string_view>

#include "batch/prompts.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 4) {
    batch::StreamOptions so;
    const batch::PromptItem it =
        batch::parse_request_body(rest, data[0] & 8 ? batch::Endpoint::kChat : batch::Endpoint::kCompletion, so);
    if (it.error.empty() && it.messages.empty() && it.prompts.empty()) __builtin_trap();
    return 0;
  }
  const auto f = data[0] & 1 ? batch::PromptFormat::kJsonl : batch::PromptFormat::kText;
  const bool chat = (data[0] & 2) != 0;
  try {
    for (const auto& it : batch::parse_prompts(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1),
                                               "fuzz.jsonl", f, chat)) {
      (void)it.custom_id.size();
    }
  } catch (const Error&) {
  }
  return 0;
}
