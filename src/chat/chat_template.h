// Chat prompts: renders a conversation with the model's `tokenizer.chat_template` (or a built-in
// template for model families whose GGUF files often lack one) through the Jinja subset.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/jinja.h"

namespace ranklm {
namespace gguf { class File; }
class Tokenizer;
}  // namespace ranklm

namespace ranklm::chat {

struct Message {
  std::string role;     // system, user, assistant, tool
  std::string content;
};

// The largest --chat-template file read.
constexpr uint64_t kMaxTemplateBytes = uint64_t{1} << 20;

struct BuiltinTemplate {
  std::string name;
  std::string source;
};

// Built-in templates: "chatml", "llama3", "gemma3". Throws ranklm::Error for other names.
const BuiltinTemplate& builtin_template(std::string_view name);

// Whether a rendered prompt still needs the tokenizer's special start tokens: templates that
// write the BOS text themselves must not get a second one.
bool needs_bos(const Tokenizer& tok, const std::string& text);

class ChatTemplate {
 public:
  // `origin` says where the source came from, for messages ("tokenizer.chat_template of X").
  ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string origin);

  // The template of a GGUF model: `override_path` when not empty (a Jinja file, or the name of
  // a built-in template when no such file exists), else tokenizer.chat_template. A file
  // without one (a base model) is refused with a message naming the file and the ways out.
  static ChatTemplate for_model(const gguf::File& f, const Tokenizer& tok, const std::string& override_path = "");

  // Renders the conversation (add_generation_prompt: end with the assistant's turn header).
  std::string apply(const std::vector<Message>& messages, bool add_generation_prompt) const;

  // The conversation as tokens: rendered, with BOS added unless the template wrote it. Control-
  // token texts typed inside a message's content stay text (no injected turns), unless
  // `content_specials` (the request asks for them).
  std::vector<int32_t> encode(const Tokenizer& tok, const std::vector<Message>& messages, bool add_generation_prompt,
                              bool content_specials = false) const;

  const std::string& origin() const { return origin_; }
  const std::string& source() const { return source_; }  // the Jinja text

 private:
  jinja::Template tmpl_;
  std::string source_, bos_, eos_, origin_;
};

// A model's template (ChatTemplate::for_model) loaded on first use: a model without one fails
// every use with the same message, found once. Not thread-safe (callers serialize).
class LazyChatTemplate {
 public:
  LazyChatTemplate(const gguf::File& f, const Tokenizer& tok, std::string override_path)
      : f_(f), tok_(tok), override_(std::move(override_path)) {}
  const ChatTemplate& get();  // throws ranklm::Error; any thread

 private:
  const gguf::File& f_;
  const Tokenizer& tok_;
  std::string override_, error_;
  std::optional<ChatTemplate> tmpl_;
  std::mutex m_;
};

}  // namespace ranklm::chat
