// libFuzzer target: prompt files (text and OpenAI Batch JSONL) on arbitrary bytes; the first
// byte picks the format and --chat.
#include <cstdint>
#include <string_view>

#include "batch/prompts.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  if (size == 0) return 0;
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
