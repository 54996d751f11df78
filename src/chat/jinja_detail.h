// Internals of the Jinja engine (chat/jinja.h), shared by its parts: the lexer
// (jinja_lexer.cpp), operations on values and the methods of str, dict and list
// (jinja_value_ops.cpp), the filter and test tables (jinja_filters.cpp), the syntax tree
// (jinja_nodes.h) and the parser with the Template itself (jinja.cpp). Not for use outside
// src/chat.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"

namespace ranklm::jinja::detail {

// An error at a template line; Template turns it into ranklm::Error with the template's name.
struct JinjaError {
  int line;
  std::string msg;
};

[[noreturn]] inline void error_at(int line, std::string msg) { throw JinjaError{line, std::move(msg)}; }

// ---- lexer (jinja_lexer.cpp) ----
enum class Tk { Name, Str, Int, Float, Op, End };

struct Token {
  Tk type;
  std::string text;
  int line;
};

enum class PieceKind { Text, Var, Block, Comment };

struct Piece {
  PieceKind kind;
  std::string text;           // for Text
  std::vector<Token> tokens;  // for Var and Block
  int line = 1;
  bool strip_before = false, plus_before = false;  // {%- / {%+
  bool strip_after = false, plus_after = false;    // -%} / +%}
};

inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// The template's pieces (text, {{ }}, {% %}, {# #}) with whitespace control applied.
std::vector<Piece> lex(std::string_view src);

// ---- the syntax tree and the render's bounds ----
class Context;

// Bounds on rendering an untrusted template (GGUF files carry them): nesting of evaluation,
// steps, the size of any one value and of the output. Breaking one is an error naming the line.
constexpr int kMaxEvalDepth = 300;
constexpr int64_t kMaxSteps = 5'000'000;
constexpr size_t kMaxValueBytes = size_t{16} << 20;
constexpr size_t kMaxItems = 1'000'000;
constexpr size_t kMaxOutputBytes = size_t{16} << 20;

// The budget of the render in progress on this thread.
struct Budget {
  int64_t steps = 0;
  int depth = 0;
};
inline thread_local Budget* g_budget = nullptr;

struct DepthGuard {
  explicit DepthGuard(int line) {
    if (!g_budget) return;
    if (++g_budget->steps > kMaxSteps) {
      error_at(line, fmt::format("rendering takes more than {} steps (a loop or recursion without end?)", kMaxSteps));
    }
    if (++g_budget->depth > kMaxEvalDepth) {
      --g_budget->depth;
      error_at(line, fmt::format("expressions, blocks or macro calls nested deeper than {}", kMaxEvalDepth));
    }
  }
  ~DepthGuard() {
    if (g_budget) --g_budget->depth;
  }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
};

inline void check_string_size(size_t bytes, int line) {
  if (bytes > kMaxValueBytes) error_at(line, fmt::format("a string of {} bytes, more than the {} allowed", bytes, kMaxValueBytes));
}
inline void check_items(size_t n, int line) {
  if (n > kMaxItems) error_at(line, fmt::format("a list of {} items, more than the {} allowed", n, kMaxItems));
}

struct Expr {
  int line = 0;
  virtual ~Expr() = default;
  Value eval(Context& ctx) const;
  virtual Value eval_node(Context& ctx) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> pos;
  std::vector<std::pair<std::string, ExprPtr>> kw;
  Args eval(Context& ctx) const;
};

enum class Flow { Normal, Break, Continue };

struct Stmt {
  int line = 0;
  virtual ~Stmt() = default;
  Flow exec(Context& ctx, std::string& out) const {
    DepthGuard g(line);
    const Flow f = exec_node(ctx, out);
    if (out.size() > kMaxOutputBytes) error_at(line, fmt::format("the output passed {} bytes", kMaxOutputBytes));
    return f;
  }
  virtual Flow exec_node(Context& ctx, std::string& out) const = 0;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

inline Flow exec_body(const Body& body, Context& ctx, std::string& out) {
  for (const auto& s : body) {
    const Flow f = s->exec(ctx, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

// ---- the render's variables ----
class Context {
 public:
  Context() { scopes_.emplace_back(); }
  const Value* lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return &f->second;
    }
    return nullptr;
  }
  void set(const std::string& name, Value v) { scopes_.back()[name] = std::move(v); }
  void push() { scopes_.emplace_back(); }
  void pop() { scopes_.pop_back(); }
  int depth = 0;  // macro recursion guard

 private:
  std::vector<std::unordered_map<std::string, Value>> scopes_;
};

struct ScopeGuard {
  Context& ctx;
  explicit ScopeGuard(Context& c) : ctx(c) { ctx.push(); }
  ~ScopeGuard() { ctx.pop(); }
};

// ---- operations on values (jinja_value_ops.cpp) ----
std::vector<std::string> codepoints(const std::string& s);
int64_t py_len(const Value& v, int line);
std::vector<Value> iterate(const Value& v, int line);
int compare_values(const Value& a, const Value& b, int line);
bool contains(const Value& hay, const Value& needle, int line);
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::string ascii_lower(std::string s);
std::string ascii_upper(std::string s);
std::string py_title(std::string s);
std::string py_capitalize(std::string s);
std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
int64_t arg_int(const Value* v, int64_t dflt, int line, const char* what);
std::string arg_str(const Value* v, int line, const char* what);
Value py_split(const std::string& s, const Value* sep_v, int64_t maxsplit);
bool starts_or_ends(const std::string& s, const Value& arg, bool start, int line);
Value get_attr(const Value& obj, const std::string& name, int line);
Value get_item(const Value& obj, const Value& key, int line);
Value slice_value(const Value& obj, const Value& a, const Value& b, const Value& c, int line);
Value arith(const std::string& op, const Value& l, const Value& r, int line);

// ---- methods, filters and tests: tables looked up when a template is parsed ----
// A method of a str, dict or list value (`s.strip()`, `d.items()`, `l.append(x)`).
using MethodFn = Value (*)(const Value& self, const Args& a, int line);
struct Method {
  MethodFn str = nullptr, dict = nullptr, list = nullptr;  // by the receiver's type
};
// The methods named `name` (nullptr: no type has one).
const Method* find_method(std::string_view name);
// The method for this value, bound to it as a callable value; undefined when it has none.
Value bind_method(const Value& self, const Method& m, int line);

using FilterFn = Value (*)(const Value& v, const Args& a, int line);
using TestFn = bool (*)(const Value& v, const Args& a, int line);
// nullptr: unknown.
FilterFn find_filter(std::string_view name);
TestFn find_test(std::string_view name);
// By a name known only when rendering (select("odd"), map("upper")): unknown is an error.
Value apply_filter(const std::string& name, const Value& v, const Args& a, int line);
bool apply_test(const std::string& name, const Value& v, const Args& a, int line);

}  // namespace ranklm::jinja::detail
