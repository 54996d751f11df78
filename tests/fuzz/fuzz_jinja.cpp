// libFuzzer target: the Jinja engine on arbitrary templates (they come inside GGUF files),
// rendered with a chat-shaped context.
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "chat/jinja.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  static const nlohmann::ordered_json ctx = {
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello, <b>world</b>"}},
        {{"role", "assistant"}, {"content", "Hi."}}, {{"role", "user"}, {"content", "Again?"}}}},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"add_generation_prompt", true},
      {"tools", nlohmann::ordered_json::array()}};
  try {
    jinja::Template t(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.jinja");
    (void)t.render(ctx);
  } catch (const Error&) {
  }
  return 0;
}
