#include "chat/chat_template.h"

#include <filesystem>


#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/read_file.h"

namespace ranklm::chat {

namespace {

// chatml: ChatML turns with no default system message. llama3: Meta-Llama-3-Instruct.
// gemma3: Gemma 3 instruction-tuned (a system message is folded into the first user turn).
const BuiltinTemplate kBuiltins[] = {
    {"chatml", R"JINJA({%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
)JINJA"},
    {"llama3", R"JINJA({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %})JINJA"},
    {"gemma3", R"JINJA({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
)JINJA"},
};

std::string token_or_empty(const Tokenizer& tok, int32_t id) {
  return id >= 0 && id < tok.n_vocab() ? tok.token_text(id) : std::string();
}

}  // namespace

const BuiltinTemplate& builtin_template(std::string_view name) {
  for (const auto& b : kBuiltins) {
    if (b.name == name) return b;
  }
  fail("unknown built-in chat template '{}' (known: chatml, llama3, gemma3)", name);
}

std::vector<int32_t> ChatTemplate::encode(const Tokenizer& tok, const std::vector<Message>& messages,
                                          bool add_generation_prompt, bool content_specials) const {
  bool marked = false;
  if (!content_specials) {
    for (const Message& m : messages) marked = marked || tok.has_control_text(m.content);
  }
  if (!marked) {
    const std::string text = apply(messages, add_generation_prompt);
    return tok.encode(text, needs_bos(tok, text), true);
  }
  // Some content holds control-token text: render with every content between literal markers
  // (any markers already in it removed), so only the template's own text makes control tokens.
  std::vector<Message> wrapped = messages;
  for (Message& m : wrapped) {
    std::string c;
    for (size_t at = 0; at < m.content.size();) {
      if (m.content.compare(at, 3, Tokenizer::kLiteralBegin) == 0 || m.content.compare(at, 3, Tokenizer::kLiteralEnd) == 0) {
        at += 3;
      } else {
        c += m.content[at++];
      }
    }
    m.content = std::string(Tokenizer::kLiteralBegin) + c + Tokenizer::kLiteralEnd;
  }
  const std::string text = apply(wrapped, add_generation_prompt);
  return tok.encode_with_literals(text, needs_bos(tok, text));
}

bool needs_bos(const Tokenizer& tok, const std::string& text) {
  const std::string bos = token_or_empty(tok, tok.bos());
  return bos.empty() || text.rfind(bos, 0) != 0;
}

ChatTemplate::ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string origin)
    : tmpl_(source, origin), source_(source), bos_(std::move(bos_token)), eos_(std::move(eos_token)),
      origin_(std::move(origin)) {}

ChatTemplate ChatTemplate::for_model(const gguf::File& f, const Tokenizer& tok, const std::string& override_path) {
  const std::string bos = token_or_empty(tok, tok.bos());
  const std::string eos = token_or_empty(tok, tok.eos());
  if (!override_path.empty()) {
    // A built-in name, unless a file of that name exists.
    if (!std::filesystem::exists(override_path)) {
      for (const BuiltinTemplate& b : kBuiltins) {
        if (override_path == b.name) {
          return ChatTemplate(b.source, bos, eos, fmt::format("built-in '{}' template (--chat-template)", b.name));
        }
      }
    }
    return ChatTemplate(read_whole_file(override_path, "the --chat-template file", kMaxTemplateBytes), bos, eos, override_path);
  }
  if (auto src = f.get_string_opt("tokenizer.chat_template")) {
    return ChatTemplate(*src, bos, eos, f.path() + ": tokenizer.chat_template");
  }
  // No template in the file: a base model (instruction-tuned files carry their template), whose
  // training never saw chat turns. Guessing a family's format would give plausible-looking noise.
  std::string names;
  for (const BuiltinTemplate& b : kBuiltins) names += std::string(names.empty() ? "" : ", ") + b.name;
  fail("{}: --chat: the model has no chat template (metadata 'tokenizer.chat_template' is absent; a base model, "
       "not an instruction-tuned one, usually is); drop --chat to continue a plain prompt, or pass "
       "--chat-template FILE.jinja or a built-in template name ({})",
       f.path(), names);
}

std::string ChatTemplate::apply(const std::vector<Message>& messages, bool add_generation_prompt) const {
  nlohmann::ordered_json ctx;
  ctx["messages"] = nlohmann::ordered_json::array();
  for (const auto& m : messages) ctx["messages"].push_back({{"role", m.role}, {"content", m.content}});
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_;
  ctx["eos_token"] = eos_;
  return tmpl_.render(ctx);
}

const ChatTemplate& LazyChatTemplate::get() {
  // Loaded once, under the lock; rendering a loaded template is read-only and runs in parallel.
  std::lock_guard<std::mutex> lk(m_);
  if (!tmpl_ && error_.empty()) {
    try {
      tmpl_ = ChatTemplate::for_model(f_, tok_, override_);
    } catch (const Error& e) {
      error_ = e.what();
    }
  }
  if (!tmpl_) fail("{}", error_);
  return *tmpl_;
}

}  // namespace ranklm::chat
