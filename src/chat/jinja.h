// A Jinja2 subset, enough for the chat templates that ship in GGUF files
// (`tokenizer.chat_template`). It follows the environment that chat templates are written for:
// trim_blocks and lstrip_blocks on, loop controls (break/continue) on, `tojson` formatted like
// Python's json.dumps (insertion order, ", " and ": " separators, non-ASCII kept), and the globals
// raise_exception, namespace, range and strftime_now.
//
// Supported: {{ }}, {% %}, {# #} with -/+ whitespace control; if/elif/else, for (tuple targets,
// inline `if` filter, else, loop.*), set (plain, tuple, namespace attribute, block form), macro,
// break/continue, generation (rendered as its body); literals, lists, dicts, attribute and
// subscript access, slices, calls with keyword arguments, filters, tests, `in`, comparisons,
// arithmetic, `~`, and/or/not, the ternary `a if c else b`; common str/dict/list methods.
// Anything else is a parse error that names the template, the line and the construct. Filters,
// tests and method names are looked up in their tables when the template is parsed: an unknown
// filter or test is refused when the template loads, not when a request reaches it. The parts:
// jinja_lexer.cpp, jinja_value_ops.cpp (values and methods), jinja_filters.cpp, jinja_nodes.h
// (the syntax tree) and jinja.cpp (the parser and this class); jinja_detail.h joins them.
//
// Templates are untrusted input (they come inside GGUF files), so parsing and rendering are
// bounded: 1 MiB of source, 4000 tokens in a tag, 64 levels of nesting in an expression or of
// blocks, 300 levels of evaluation (macro recursion included), 5 million evaluation steps,
// 16 MiB in any string or in the output, a million items in a list; integer arithmetic is
// checked for overflow. Breaking a bound is an error naming the template, line and bound.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace ranklm::jinja {

struct Node;

class Template {
 public:
  // Parses `source`; `name` is used in error messages (e.g. "tokenizer.chat_template").
  Template(std::string_view source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the given variables (a JSON object). Errors (including raise_exception) throw
  // ranklm::Error naming the template.
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  std::string name_;
  std::shared_ptr<Node> root_;
};

}  // namespace ranklm::jinja
