// Lexer, parser and tree-walking renderer for the Jinja subset described in jinja.h.
#include "chat/jinja.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <unordered_map>

#include "chat/jinja_value.h"
#include "tokenizer/unicode.h"
#include <optional>
#include "util/error.h"

namespace ranklm::jinja {

using unicode::codepoint_to_utf8;
using unicode::next_codepoint;

namespace {

// An error at a template line; Template turns it into ranklm::Error with the template's name.
struct JinjaError {
  int line;
  std::string msg;
};

[[noreturn]] void error_at(int line, std::string msg) { throw JinjaError{line, std::move(msg)}; }

// ------------------------------------------------------------------------------------------
// Lexer
// ------------------------------------------------------------------------------------------

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

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Piece> run() {
    std::vector<Piece> out;
    while (pos_ < src_.size()) {
      size_t p = pos_;
      while (p + 1 < src_.size() &&
             !(src_[p] == '{' && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#'))) {
        ++p;
      }
      if (p + 1 >= src_.size()) p = src_.size();
      if (p > pos_) {
        Piece t{PieceKind::Text, std::string(src_.substr(pos_, p - pos_)), {}, line_};
        count_lines(pos_, p);
        out.push_back(std::move(t));
      }
      if (p >= src_.size()) break;
      pos_ = p;
      out.push_back(tag());
    }
    return out;
  }

 private:
  void count_lines(size_t a, size_t b) {
    for (size_t k = a; k < b; ++k) line_ += src_[k] == '\n';
  }

  Piece tag() {
    Piece pc;
    pc.line = line_;
    const char open = src_[pos_ + 1];
    pc.kind = open == '{' ? PieceKind::Var : open == '%' ? PieceKind::Block : PieceKind::Comment;
    pos_ += 2;
    if (pos_ < src_.size() && src_[pos_] == '-') {
      pc.strip_before = true;
      ++pos_;
    } else if (pos_ < src_.size() && src_[pos_] == '+') {
      pc.plus_before = true;
      ++pos_;
    }
    if (pc.kind == PieceKind::Comment) {
      const size_t e = src_.find("#}", pos_);
      if (e == std::string_view::npos) error_at(pc.line, "unterminated comment '{#'");
      if (e > pos_ && src_[e - 1] == '-') pc.strip_after = true;
      count_lines(pos_, e + 2);
      pos_ = e + 2;
      return pc;
    }
    const std::string_view close = pc.kind == PieceKind::Var ? "}}" : "%}";
    for (;;) {
      while (pos_ < src_.size() && is_ws(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
      if (pos_ >= src_.size()) {
        error_at(pc.line, fmt::format("unterminated tag: expected '{}'", close));
      }
      if ((src_[pos_] == '-' || src_[pos_] == '+') && src_.substr(pos_ + 1, 2) == close) {
        (src_[pos_] == '-' ? pc.strip_after : pc.plus_after) = true;
        pos_ += 3;
        break;
      }
      if (src_.substr(pos_, 2) == close) {
        pos_ += 2;
        break;
      }
      pc.tokens.push_back(token());
    }
    pc.tokens.push_back(Token{Tk::End, "", line_});
    return pc;
  }

  Token token() {
    const char c = src_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = pos_;
      while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      Token t{Tk::Name, std::string(src_.substr(pos_, e - pos_)), line_};
      pos_ = e;
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = pos_;
      bool is_float = false;
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        is_float = true;
        ++e;
        while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
      }
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t k = e + 1;
        if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
        if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
          is_float = true;
          e = k;
          while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        }
      }
      std::string text(src_.substr(pos_, e - pos_));
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      pos_ = e;
      return Token{is_float ? Tk::Float : Tk::Int, text, line_};
    }
    if (c == '\'' || c == '"') return string_literal(c);
    static const char* const two[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : two) {
      if (src_.substr(pos_, 2) == op) {
        pos_ += 2;
        return Token{Tk::Op, op, line_};
      }
    }
    if (std::string_view("()[]{}.,:|~+-*/%<>=!").find(c) != std::string_view::npos) {
      ++pos_;
      return Token{Tk::Op, std::string(1, c), line_};
    }
    error_at(line_, fmt::format("unexpected character '{}' in tag", c));
  }

  Token string_literal(char q) {
    const int start_line = line_;
    std::string out;
    ++pos_;
    while (pos_ < src_.size() && src_[pos_] != q) {
      char c = src_[pos_];
      if (c == '\n') ++line_;
      if (c == '\\' && pos_ + 1 < src_.size()) {
        const char e = src_[++pos_];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case '0': out += '\0'; break;
          case '\\': out += '\\'; break;
          case '\'': out += '\''; break;
          case '"': out += '"'; break;
          case 'u':
          case 'x': {
            const size_t n = e == 'u' ? 4 : 2;
            if (pos_ + n >= src_.size()) error_at(line_, "truncated escape in string literal");
            const std::string hex(src_.substr(pos_ + 1, n));
            if (!std::all_of(hex.begin(), hex.end(), [](char h) { return std::isxdigit(static_cast<unsigned char>(h)); })) {
              error_at(line_, fmt::format("bad escape '\\{}{}' in string literal", e, hex));
            }
            out += codepoint_to_utf8(static_cast<uint32_t>(std::stoul(hex, nullptr, 16)));
            pos_ += n;
            break;
          }
          case '\n': ++line_; break;
          default:
            out += '\\';
            out += e;
        }
        ++pos_;
        continue;
      }
      out += c;
      ++pos_;
    }
    if (pos_ >= src_.size()) error_at(start_line, "unterminated string literal");
    ++pos_;
    return Token{Tk::Str, std::move(out), start_line};
  }

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1;
};

// Whitespace control: `-` strips all whitespace on that side; trim_blocks removes the first
// newline after a block or comment tag; lstrip_blocks removes spaces and tabs before a block or
// comment tag that starts a line. `+` turns the last two off for that tag.
void apply_whitespace_control(std::vector<Piece>& pieces) {
  for (size_t k = 0; k < pieces.size(); ++k) {
    Piece& t = pieces[k];
    if (t.kind != PieceKind::Text) continue;
    bool line_start = k == 0;
    if (k > 0) {
      const Piece& prev = pieces[k - 1];
      if (prev.strip_after) {
        size_t n = 0;
        while (n < t.text.size() && is_ws(t.text[n])) ++n;
        line_start = n > 0 && t.text[n - 1] == '\n';
        t.text.erase(0, n);
      } else if ((prev.kind == PieceKind::Block || prev.kind == PieceKind::Comment) && !prev.plus_after) {
        if (t.text.rfind("\r\n", 0) == 0) {
          t.text.erase(0, 2);
          line_start = true;
        } else if (!t.text.empty() && t.text[0] == '\n') {
          t.text.erase(0, 1);
          line_start = true;
        }
      }
    }
    if (k + 1 < pieces.size()) {
      const Piece& next = pieces[k + 1];
      if (next.strip_before) {
        size_t n = t.text.size();
        while (n > 0 && is_ws(t.text[n - 1])) --n;
        t.text.resize(n);
      } else if ((next.kind == PieceKind::Block || next.kind == PieceKind::Comment) && !next.plus_before) {
        const size_t nl = t.text.rfind('\n');
        const size_t from = nl == std::string::npos ? 0 : nl + 1;
        if (nl != std::string::npos || line_start) {
          if (std::all_of(t.text.begin() + static_cast<std::ptrdiff_t>(from), t.text.end(),
                          [](char c) { return c == ' ' || c == '\t'; })) {
            t.text.resize(from);
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// AST
// ------------------------------------------------------------------------------------------

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
thread_local Budget* g_budget = nullptr;

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

void check_string_size(size_t bytes, int line) {
  if (bytes > kMaxValueBytes) error_at(line, fmt::format("a string of {} bytes, more than the {} allowed", bytes, kMaxValueBytes));
}
void check_items(size_t n, int line) {
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

Flow exec_body(const Body& body, Context& ctx, std::string& out) {
  for (const auto& s : body) {
    const Flow f = s->exec(ctx, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

}  // namespace

struct Node {
  Body body;
};

namespace {

// ------------------------------------------------------------------------------------------
// Runtime context
// ------------------------------------------------------------------------------------------

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

Value Expr::eval(Context& ctx) const {
  DepthGuard g(line);
  Value v = eval_node(ctx);
  if (v.is_string()) check_string_size(v.s.size(), line);
  if (v.is_array()) check_items(v.arr->size(), line);
  return v;
}

Args CallArgs::eval(Context& ctx) const {
  Args a;
  for (const auto& e : pos) a.pos.push_back(e->eval(ctx));
  for (const auto& [k, e] : kw) a.kw.emplace_back(k, e->eval(ctx));
  return a;
}

// ---------- helpers on values ----------

std::vector<std::string> codepoints(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    next_codepoint(s, i);
    if (i == start) ++i;
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

int64_t py_len(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::String: return static_cast<int64_t>(codepoints(v.s).size());
    case Value::Kind::Array: return static_cast<int64_t>(v.arr->size());
    case Value::Kind::Object: return static_cast<int64_t>(v.obj->items.size());
    case Value::Kind::Undefined: return 0;
    default: error_at(line, fmt::format("object of type '{}' has no length", v.type_name()));
  }
}

// Iterating: lists give their items, dicts their keys, strings their characters.
std::vector<Value> iterate(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::Array: return *v.arr;
    case Value::Kind::Object: {
      std::vector<Value> out;
      for (const auto& [k, e] : v.obj->items) out.push_back(Value::string(k));
      return out;
    }
    case Value::Kind::String: {
      std::vector<Value> out;
      for (auto& c : codepoints(v.s)) out.push_back(Value::string(std::move(c)));
      return out;
    }
    case Value::Kind::Undefined: return {};
    default: error_at(line, fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

int compare_values(const Value& a, const Value& b, int line) {
  if ((a.is_number() || a.kind == Value::Kind::Bool) && (b.is_number() || b.kind == Value::Kind::Bool)) {
    const double x = a.kind == Value::Kind::Bool ? a.b : a.as_double();
    const double y = b.kind == Value::Kind::Bool ? b.b : b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  if (a.is_array() && b.is_array()) {
    const size_t n = std::min(a.arr->size(), b.arr->size());
    for (size_t k = 0; k < n; ++k) {
      const int c = compare_values((*a.arr)[k], (*b.arr)[k], line);
      if (c) return c;
    }
    return a.arr->size() < b.arr->size() ? -1 : a.arr->size() > b.arr->size() ? 1 : 0;
  }
  error_at(line, fmt::format("cannot compare '{}' with '{}'", a.type_name(), b.type_name()));
}

bool contains(const Value& hay, const Value& needle, int line) {
  switch (hay.kind) {
    case Value::Kind::String:
      if (!needle.is_string()) error_at(line, "'in <string>' requires a string on the left");
      return hay.s.find(needle.s) != std::string::npos;
    case Value::Kind::Array:
      return std::any_of(hay.arr->begin(), hay.arr->end(), [&](const Value& e) { return values_equal(e, needle); });
    case Value::Kind::Object: return needle.is_string() && hay.obj->find(needle.s) != nullptr;
    case Value::Kind::Undefined: return false;
    default: error_at(line, fmt::format("argument of type '{}' is not iterable", hay.type_name()));
  }
}

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::string set = chars && chars->is_string() ? chars->s : std::string(" \t\n\r\f\v");
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && set.find(s[b]) != std::string::npos) ++b;
  }
  if (right) {
    while (e > b && set.find(s[e - 1]) != std::string::npos) --e;
  }
  return s.substr(b, e - b);
}

std::string ascii_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string py_title(std::string s) {
  bool prev_alpha = false;
  for (auto& c : s) {
    const auto u = static_cast<unsigned char>(c);
    c = static_cast<char>(prev_alpha ? std::tolower(u) : std::toupper(u));
    prev_alpha = std::isalpha(u) != 0;
  }
  return s;
}
std::string py_capitalize(std::string s) {
  s = ascii_lower(std::move(s));
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}
std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t p = 0;
  int64_t n = 0;
  for (;;) {
    const size_t f = s.find(from, p);
    if (f == std::string::npos || (count >= 0 && n >= count)) break;
    out.append(s, p, f - p);
    out += to;
    p = f + from.size();
    ++n;
  }
  out.append(s, p);
  return out;
}

int64_t arg_int(const Value* v, int64_t dflt, int line, const char* what) {
  if (!v || v->is_none() || v->is_undefined()) return dflt;
  if (v->kind == Value::Kind::Int) return v->i;
  if (v->kind == Value::Kind::Bool) return v->b;
  error_at(line, fmt::format("{}: expected an integer, got '{}'", what, v->type_name()));
}

std::string arg_str(const Value* v, int line, const char* what) {
  if (!v || !v->is_string()) {
    error_at(line, fmt::format("{}: expected a string, got '{}'", what, v ? v->type_name() : "nothing"));
  }
  return v->s;
}

Value get_attr(const Value& obj, const std::string& name, int line);

Value py_split(const std::string& s, const Value* sep_v, int64_t maxsplit) {
  std::vector<Value> out;
  if (!sep_v || sep_v->is_none()) {
    size_t i = 0;
    int64_t n = 0;
    while (i < s.size()) {
      while (i < s.size() && is_ws(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && n >= maxsplit) {
        size_t e = s.size();
        while (e > i && is_ws(s[e - 1])) --e;
        out.push_back(Value::string(s.substr(i, e - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !is_ws(s[j])) ++j;
      out.push_back(Value::string(s.substr(i, j - i)));
      ++n;
      i = j;
    }
    return Value::array(std::move(out));
  }
  const std::string& sep = sep_v->s;
  if (sep.empty()) error_at(0, "split(): empty separator");
  size_t p = 0;
  int64_t n = 0;
  for (;;) {
    const size_t f = s.find(sep, p);
    if (f == std::string::npos || (maxsplit >= 0 && n >= maxsplit)) break;
    out.push_back(Value::string(s.substr(p, f - p)));
    p = f + sep.size();
    ++n;
  }
  out.push_back(Value::string(s.substr(p)));
  return Value::array(std::move(out));
}

bool starts_or_ends(const std::string& s, const Value& arg, bool start, int line) {
  const auto one = [&](const Value& p) {
    if (!p.is_string()) error_at(line, "startswith/endswith: expected a string or a list of strings");
    if (p.s.size() > s.size()) return false;
    return start ? s.compare(0, p.s.size(), p.s) == 0 : s.compare(s.size() - p.s.size(), p.s.size(), p.s) == 0;
  };
  if (arg.is_array()) return std::any_of(arg.arr->begin(), arg.arr->end(), one);
  return one(arg);
}

// Methods reachable as attributes (`s.strip()`, `d.items()`, `l.append(x)`).
Value bound_method(const Value& self, const std::string& name, int line) {
  if (self.is_string()) {
    const std::string s = self.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool l = name != "rstrip", r = name != "lstrip";
      return Value::function([s, l, r](const Args& a) { return Value::string(py_strip(s, a.get(0, "chars"), l, r)); });
    }
    if (name == "upper") return Value::function([s](const Args&) { return Value::string(ascii_upper(s)); });
    if (name == "lower") return Value::function([s](const Args&) { return Value::string(ascii_lower(s)); });
    if (name == "title") return Value::function([s](const Args&) { return Value::string(py_title(s)); });
    if (name == "capitalize") return Value::function([s](const Args&) { return Value::string(py_capitalize(s)); });
    if (name == "startswith" || name == "endswith") {
      const bool start = name == "startswith";
      return Value::function([s, start, line](const Args& a) {
        const Value* p = a.get(0, "prefix");
        if (!p) error_at(line, "startswith/endswith: missing argument");
        return Value::boolean(starts_or_ends(s, *p, start, line));
      });
    }
    if (name == "split") {
      return Value::function([s, line](const Args& a) {
        return py_split(s, a.get(0, "sep"), arg_int(a.get(1, "maxsplit"), -1, line, "split"));
      });
    }
    if (name == "replace") {
      return Value::function([s, line](const Args& a) {
        return Value::string(py_replace(s, arg_str(a.get(0, "old"), line, "replace"),
                                        arg_str(a.get(1, "new"), line, "replace"),
                                        arg_int(a.get(2, "count"), -1, line, "replace")));
      });
    }
    if (name == "find") {
      return Value::function([s, line](const Args& a) {
        const size_t f = s.find(arg_str(a.get(0, "sub"), line, "find"));
        return Value::integer(f == std::string::npos ? -1 : static_cast<int64_t>(f));
      });
    }
    if (name == "count") {
      return Value::function([s, line](const Args& a) {
        const std::string sub = arg_str(a.get(0, "sub"), line, "count");
        int64_t n = 0;
        if (!sub.empty()) {
          for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        }
        return Value::integer(n);
      });
    }
    if (name == "join") {
      return Value::function([s, line](const Args& a) {
        const Value* v = a.get(0, "iterable");
        if (!v) error_at(line, "join: missing argument");
        std::string out;
        bool first = true;
        for (const auto& e : iterate(*v, line)) {
          if (!first) out += s;
          first = false;
          out += e.str();
        }
        return Value::string(out);
      });
    }
  } else if (self.is_object()) {
    auto obj = self.obj;
    if (name == "items") {
      return Value::function([obj](const Args&) {
        std::vector<Value> out;
        for (const auto& [k, v] : obj->items) out.push_back(Value::make_tuple({Value::string(k), v}));
        return Value::array(std::move(out));
      });
    }
    if (name == "keys") {
      return Value::function([obj](const Args&) {
        std::vector<Value> out;
        for (const auto& [k, v] : obj->items) out.push_back(Value::string(k));
        return Value::array(std::move(out));
      });
    }
    if (name == "values") {
      return Value::function([obj](const Args&) {
        std::vector<Value> out;
        for (const auto& [k, v] : obj->items) out.push_back(v);
        return Value::array(std::move(out));
      });
    }
    if (name == "get") {
      return Value::function([obj, line](const Args& a) {
        const std::string key = arg_str(a.get(0, "key"), line, "get");
        if (const Value* v = obj->find(key)) return *v;
        const Value* d = a.get(1, "default");
        return d ? *d : Value::none();
      });
    }
  } else if (self.is_array()) {
    auto arr = self.arr;
    if (name == "append") {
      return Value::function([arr, line](const Args& a) {
        if (a.pos.size() != 1) error_at(line, "append() takes exactly one argument");
        arr->push_back(a.pos[0]);
        return Value::none();
      });
    }
    if (name == "pop") {
      return Value::function([arr, line](const Args& a) {
        if (arr->empty()) error_at(line, "pop from empty list");
        int64_t idx = arg_int(a.get(0, "index"), -1, line, "pop");
        if (idx < 0) idx += static_cast<int64_t>(arr->size());
        if (idx < 0 || idx >= static_cast<int64_t>(arr->size())) error_at(line, "pop index out of range");
        Value v = (*arr)[static_cast<size_t>(idx)];
        arr->erase(arr->begin() + idx);
        return v;
      });
    }
  }
  return Value();
}

Value get_attr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) error_at(line, fmt::format("cannot read '{}' of an undefined value", name));
  if (obj.is_object()) {
    if (const Value* v = obj.obj->find(name)) return *v;
  }
  return bound_method(obj, name, line);
}

Value get_item(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined()) error_at(line, fmt::format("cannot index an undefined value with {}", key.repr()));
  if (obj.is_object()) {
    if (key.is_string()) {
      if (const Value* v = obj.obj->find(key.s)) return *v;
    }
    return Value();
  }
  if ((obj.is_array() || obj.is_string()) && (key.kind == Value::Kind::Int || key.kind == Value::Kind::Bool)) {
    const int64_t k = key.kind == Value::Kind::Bool ? key.b : key.i;
    if (obj.is_array()) {
      const auto n = static_cast<int64_t>(obj.arr->size());
      const int64_t idx = k < 0 ? k + n : k;
      return idx >= 0 && idx < n ? (*obj.arr)[static_cast<size_t>(idx)] : Value();
    }
    const auto cps = codepoints(obj.s);
    const auto n = static_cast<int64_t>(cps.size());
    const int64_t idx = k < 0 ? k + n : k;
    return idx >= 0 && idx < n ? Value::string(cps[static_cast<size_t>(idx)]) : Value();
  }
  if (key.is_string()) return get_attr(obj, key.s, line);
  return Value();
}

// Python slice semantics for lists and strings.
Value slice_value(const Value& obj, const Value& a, const Value& b, const Value& c, int line) {
  const auto opt = [&](const Value& v) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (v.kind != Value::Kind::Int) error_at(line, "slice indices must be integers");
    return v.i;
  };
  std::vector<Value> items;
  const bool is_str = obj.is_string();
  if (is_str) {
    for (auto& s : codepoints(obj.s)) items.push_back(Value::string(std::move(s)));
  } else if (obj.is_array()) {
    items = *obj.arr;
  } else if (obj.is_undefined()) {
    return Value();
  } else {
    error_at(line, fmt::format("'{}' object cannot be sliced", obj.type_name()));
  }
  const auto n = static_cast<int64_t>(items.size());
  const int64_t step = opt(c).value_or(1);
  if (step == 0) error_at(line, "slice step cannot be zero");
  const auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v < 0 ? *v + n : *v;
    if (step > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t start = clamp(opt(a), step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(opt(b), step > 0 ? n : -1);
  std::vector<Value> out;
  for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
    out.push_back(items[static_cast<size_t>(k)]);
    if (__builtin_add_overflow(k, step, &k)) break;
  }
  if (!is_str) return Value::array(std::move(out));
  std::string s;
  for (const auto& v : out) s += v.s;
  return Value::string(std::move(s));
}

Value arith(const std::string& op, const Value& l, const Value& r, int line) {
  const auto bad = [&]() -> Value {
    error_at(line, fmt::format("unsupported operand types for {}: '{}' and '{}'", op, l.type_name(), r.type_name()));
  };
  if (op == "~") {
    std::string a = l.str(), b = r.str();
    check_string_size(a.size() + b.size(), line);
    return Value::string(a + b);
  }
  if (op == "+") {
    if (l.is_string() && r.is_string()) {
      check_string_size(l.s.size() + r.s.size(), line);
      return Value::string(l.s + r.s);
    }
    if (l.is_array() && r.is_array()) {
      check_items(l.arr->size() + r.arr->size(), line);
      std::vector<Value> out = *l.arr;
      out.insert(out.end(), r.arr->begin(), r.arr->end());
      return Value::array(std::move(out));
    }
  }
  if (op == "*") {
    if ((l.is_string() || l.is_array()) && r.kind == Value::Kind::Int) {
      const size_t unit = l.is_string() ? l.s.size() : l.arr->size();
      if (r.i > 0 && unit > 0) {
        const uint64_t times = static_cast<uint64_t>(r.i);
        if (times > kMaxValueBytes || unit * times > (l.is_string() ? kMaxValueBytes : kMaxItems)) {
          error_at(line, fmt::format("repeating a {} of {} {} {} times passes the bound of {}", l.type_name(), unit,
                                     l.is_string() ? "bytes" : "items", r.i, l.is_string() ? kMaxValueBytes : kMaxItems));
        }
      }
      if (l.is_string()) {
        std::string out;
        for (int64_t k = 0; k < r.i; ++k) out += l.s;
        return Value::string(out);
      }
      std::vector<Value> out;
      for (int64_t k = 0; k < r.i; ++k) out.insert(out.end(), l.arr->begin(), l.arr->end());
      return Value::array(std::move(out));
    }
  }
  const auto num = [](const Value& v) { return v.is_number() || v.kind == Value::Kind::Bool; };
  if (!num(l) || !num(r)) return bad();
  const auto as_i = [](const Value& v) { return v.kind == Value::Kind::Bool ? int64_t{v.b} : v.i; };
  const auto as_d = [](const Value& v) { return v.kind == Value::Kind::Bool ? double(v.b) : v.as_double(); };
  const bool ints = l.kind != Value::Kind::Float && r.kind != Value::Kind::Float;
  if (op == "/") {
    if (as_d(r) == 0) error_at(line, "division by zero");
    return Value::number(as_d(l) / as_d(r));
  }
  if (ints) {
    const int64_t a = as_i(l), b = as_i(r);
    int64_t res = 0;
    const auto overflow = [&]() -> Value {
      error_at(line, fmt::format("integer overflow: {} {} {} is outside 64-bit integers", a, op, b));
    };
    if (op == "+") return __builtin_add_overflow(a, b, &res) ? overflow() : Value::integer(res);
    if (op == "-") return __builtin_sub_overflow(a, b, &res) ? overflow() : Value::integer(res);
    if (op == "*") return __builtin_mul_overflow(a, b, &res) ? overflow() : Value::integer(res);
    if (op == "//" || op == "%") {
      if (b == 0) error_at(line, "integer division or modulo by zero");
      if (a == INT64_MIN && b == -1) return op == "%" ? Value::integer(0) : overflow();
      int64_t q = a / b, m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) {
        --q;
        m += b;
      }
      return Value::integer(op == "//" ? q : m);
    }
    if (op == "**") {
      if (b < 0) return Value::number(std::pow(double(a), double(b)));
      // By squaring: O(log b) steps, each checked.
      int64_t p = 1, base = a, e = b;
      while (e > 0) {
        if ((e & 1) && __builtin_mul_overflow(p, base, &p)) return overflow();
        e >>= 1;
        if (e > 0 && __builtin_mul_overflow(base, base, &base)) {
          if (a == 0 || a == 1) break;  // unreachable: 0 and 1 never overflow
          return overflow();
        }
      }
      return Value::integer(p);
    }
  }
  const double a = as_d(l), b = as_d(r);
  if (op == "+") return Value::number(a + b);
  if (op == "-") return Value::number(a - b);
  if (op == "*") return Value::number(a * b);
  if (op == "//" || op == "%") {
    if (b == 0) error_at(line, "float division or modulo by zero");
    const double q = std::floor(a / b);
    return Value::number(op == "//" ? q : a - q * b);
  }
  if (op == "**") return Value::number(std::pow(a, b));
  return bad();
}

// ---------- tests and filters ----------

bool apply_test(const std::string& name, const Value& v, const Args& a, int line) {
  const Value* arg = a.get(0, "other");
  const auto need = [&]() -> const Value& {
    if (!arg) error_at(line, fmt::format("test '{}' needs an argument", name));
    return *arg;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == Value::Kind::Bool;
  if (name == "true") return v.kind == Value::Kind::Bool && v.b;
  if (name == "false") return v.kind == Value::Kind::Bool && !v.b;
  if (name == "integer") return v.kind == Value::Kind::Int;
  if (name == "float") return v.kind == Value::Kind::Float;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_array() || v.is_object() || v.is_string();
  if (name == "sequence") return v.is_array() || v.is_object() || v.is_string();
  if (name == "callable") return v.is_func();
  if (name == "odd") return v.kind == Value::Kind::Int && (v.i % 2 != 0);
  if (name == "even") return v.kind == Value::Kind::Int && v.i % 2 == 0;
  if (name == "divisibleby") {
    const int64_t d = arg_int(&need(), 0, line, "divisibleby");
    if (d == 0) error_at(line, "divisibleby 0");
    return v.kind == Value::Kind::Int && v.i % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, need());
  if (name == "ne" || name == "!=") return !values_equal(v, need());
  if (name == "lt" || name == "lessthan" || name == "<") return compare_values(v, need(), line) < 0;
  if (name == "le" || name == "<=") return compare_values(v, need(), line) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare_values(v, need(), line) > 0;
  if (name == "ge" || name == ">=") return compare_values(v, need(), line) >= 0;
  if (name == "in") return contains(need(), v, line);
  if (name == "sameas") {
    const Value& o = need();
    if (v.kind != o.kind) return false;
    if (v.is_array()) return v.arr == o.arr;
    if (v.is_object()) return v.obj == o.obj;
    return values_equal(v, o);
  }
  if (name == "lower") return v.is_string() && ascii_lower(v.s) == v.s;
  if (name == "upper") return v.is_string() && ascii_upper(v.s) == v.s;
  error_at(line, fmt::format("unknown test '{}'", name));
}

Value apply_filter(const std::string& name, const Value& v, const Args& a, int line);

std::vector<Value> select_items(const std::string& name, const Value& v, const Args& a, int line) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool keep = name == "select" || name == "selectattr";
  size_t k = 0;
  std::string attr;
  if (by_attr) attr = arg_str(a.get(k++, "attribute"), line, name.c_str());
  const Value* test_v = k < a.pos.size() ? &a.pos[k] : nullptr;
  std::string test = test_v ? arg_str(test_v, line, name.c_str()) : "";
  Args rest;
  for (size_t j = k + 1; j < a.pos.size(); ++j) rest.pos.push_back(a.pos[j]);
  std::vector<Value> out;
  for (const auto& item : iterate(v, line)) {
    const Value subject = by_attr ? (item.is_object() ? get_attr(item, attr, line) : Value()) : item;
    const bool ok = test.empty() ? subject.truthy() : apply_test(test, subject, rest, line);
    if (ok == keep) out.push_back(item);
  }
  return out;
}

Value apply_filter(const std::string& name, const Value& v, const Args& a, int line) {
  if (name == "safe" || (name == "string" && v.is_string())) return v;
  if (name == "string") return Value::string(v.str());
  if (name == "trim") {
    if (v.is_undefined()) return Value::string("");
    return Value::string(py_strip(v.str(), a.get(0, "chars"), true, true));
  }
  if (name == "length" || name == "count") return Value::integer(py_len(v, line));
  if (name == "upper") return Value::string(ascii_upper(v.str()));
  if (name == "lower") return Value::string(ascii_lower(v.str()));
  if (name == "title") return Value::string(py_title(v.str()));
  if (name == "capitalize") return Value::string(py_capitalize(v.str()));
  if (name == "default" || name == "d") {
    const Value* dflt = a.get(0, "default_value");
    const Value* boolean = a.get(1, "boolean");
    const bool use = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
    return use ? (dflt ? *dflt : Value::string("")) : v;
  }
  if (name == "tojson") {
    const Value* indent = a.get(0, "indent");
    return Value::string(v.to_json(indent && !indent->is_none() ? static_cast<int>(arg_int(indent, 0, line, "tojson")) : -1));
  }
  if (name == "join") {
    const Value* sep = a.get(0, "d");
    const Value* attr = a.get(1, "attribute");
    std::string out;
    bool first = true;
    for (const auto& e : iterate(v, line)) {
      if (!first) out += sep ? sep->str() : "";
      first = false;
      out += (attr ? get_attr(e, attr->str(), line) : e).str();
    }
    return Value::string(out);
  }
  if (name == "first" || name == "last") {
    auto items = iterate(v, line);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::array(iterate(v, line));
  if (name == "reverse") {
    if (v.is_string()) {
      auto cps = codepoints(v.s);
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value::string(out);
    }
    auto items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value::array(std::move(items));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::array();
    if (!v.is_object()) error_at(line, fmt::format("items: expected a dict, got '{}'", v.type_name()));
    std::vector<Value> out;
    for (const auto& [k, e] : v.obj->items) out.push_back(Value::make_tuple({Value::string(k), e}));
    return Value::array(std::move(out));
  }
  if (name == "int") {
    if (v.kind == Value::Kind::Int) return v;
    if (v.kind == Value::Kind::Float) {
      if (!(v.f > -9.2e18 && v.f < 9.2e18)) error_at(line, fmt::format("int: {} does not fit a 64-bit integer", v.f));
      return Value::integer(static_cast<int64_t>(v.f));
    }
    if (v.kind == Value::Kind::Bool) return Value::integer(v.b);
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string t = py_strip(v.s, nullptr, true, true);
        const int64_t x = std::stoll(t, &used);
        if (used == t.size()) return Value::integer(x);
      } catch (const std::exception&) {
      }
    }
    const Value* d = a.get(0, "default");
    return d ? *d : Value::integer(0);
  }
  if (name == "float") {
    if (v.is_number()) return Value::number(v.as_double());
    if (v.is_string()) {
      try {
        return Value::number(std::stod(v.s));
      } catch (const std::exception&) {
      }
    }
    const Value* d = a.get(0, "default");
    return d ? *d : Value::number(0.0);
  }
  if (name == "abs") {
    if (v.kind == Value::Kind::Int) {
      if (v.i == INT64_MIN) error_at(line, "abs: integer overflow");
      return Value::integer(v.i < 0 ? -v.i : v.i);
    }
    if (v.kind == Value::Kind::Float) return Value::number(std::fabs(v.f));
    error_at(line, fmt::format("abs: expected a number, got '{}'", v.type_name()));
  }
  if (name == "round") {
    const int64_t prec = arg_int(a.get(0, "precision"), 0, line, "round");
    const std::string method = a.get(1, "method") ? a.get(1, "method")->str() : "common";
    const double scale = std::pow(10.0, static_cast<double>(prec));
    const double x = v.as_double() * scale;
    const double r = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::round(x);
    return Value::number(r / scale);
  }
  if (name == "replace") {
    return Value::string(py_replace(v.str(), arg_str(a.get(0, "old"), line, "replace"),
                                    arg_str(a.get(1, "new"), line, "replace"),
                                    arg_int(a.get(2, "count"), -1, line, "replace")));
  }
  if (name == "indent") {
    const Value* w = a.get(0, "width");
    const std::string pad = w && w->is_string() ? w->s : std::string(static_cast<size_t>(arg_int(w, 4, line, "indent")), ' ');
    const bool first = a.get(1, "first") && a.get(1, "first")->truthy();
    const bool blank = a.get(2, "blank") && a.get(2, "blank")->truthy();
    const std::string s = v.str();
    std::string out;
    size_t p = 0;
    bool is_first = true;
    for (;;) {
      const size_t e = s.find('\n', p);
      const std::string ln = s.substr(p, e == std::string::npos ? std::string::npos : e - p);
      if ((!is_first || first) && (blank || !ln.empty())) out += pad;
      out += ln;
      if (e == std::string::npos) break;
      out += '\n';
      p = e + 1;
      is_first = false;
    }
    return Value::string(out);
  }
  if (name == "escape" || name == "e") {
    std::string out;
    for (char c : v.str()) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return Value::string(out);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return Value::array(select_items(name, v, a, line));
  }
  if (name == "map") {
    std::vector<Value> out;
    const Value* attr = a.get(99, "attribute");
    for (const auto& item : iterate(v, line)) {
      if (attr) {
        Value got = item.is_object() ? get_attr(item, attr->str(), line) : Value();
        if (got.is_undefined() && a.get(99, "default")) got = *a.get(99, "default");
        out.push_back(got);
      } else {
        if (a.pos.empty()) error_at(line, "map: needs a filter name or attribute=");
        Args rest;
        rest.pos.assign(a.pos.begin() + 1, a.pos.end());
        rest.kw = a.kw;
        out.push_back(apply_filter(arg_str(&a.pos[0], line, "map"), item, rest, line));
      }
    }
    return Value::array(std::move(out));
  }
  if (name == "unique") {
    std::vector<Value> out;
    for (const auto& item : iterate(v, line)) {
      const auto same = [&](const Value& o) {
        if (item.is_string() && o.is_string()) return ascii_lower(item.s) == ascii_lower(o.s);
        return values_equal(item, o);
      };
      if (std::none_of(out.begin(), out.end(), same)) out.push_back(item);
    }
    return Value::array(std::move(out));
  }
  if (name == "sort") {
    auto items = iterate(v, line);
    const bool rev = a.get(0, "reverse") && a.get(0, "reverse")->truthy();
    const bool cs = a.get(1, "case_sensitive") && a.get(1, "case_sensitive")->truthy();
    const Value* attr = a.get(2, "attribute");
    const auto key = [&](const Value& x) {
      Value k = attr ? get_attr(x, attr->str(), line) : x;
      if (!cs && k.is_string()) k.s = ascii_lower(k.s);
      return k;
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      const int c = compare_values(key(x), key(y), line);
      return rev ? c > 0 : c < 0;
    });
    return Value::array(std::move(items));
  }
  if (name == "sum") {
    const Value* attr = a.get(0, "attribute");
    Value acc = a.get(1, "start") ? *a.get(1, "start") : Value::integer(0);
    for (const auto& item : iterate(v, line)) acc = arith("+", acc, attr ? get_attr(item, attr->str(), line) : item, line);
    return acc;
  }
  if (name == "min" || name == "max") {
    auto items = iterate(v, line);
    if (items.empty()) return Value();
    Value best = items[0];
    for (const auto& item : items) {
      const int c = compare_values(item, best, line);
      if (name == "min" ? c < 0 : c > 0) best = item;
    }
    return best;
  }
  if (name == "dictsort") {
    if (!v.is_object()) error_at(line, "dictsort: expected a dict");
    auto items = v.obj->items;
    std::stable_sort(items.begin(), items.end(), [](const auto& x, const auto& y) { return ascii_lower(x.first) < ascii_lower(y.first); });
    std::vector<Value> out;
    for (auto& [k, e] : items) out.push_back(Value::make_tuple({Value::string(k), e}));
    return Value::array(std::move(out));
  }
  error_at(line, fmt::format("unknown filter '{}'", name));
}

// ---------- expression nodes ----------

struct Literal : Expr {
  Value v;
  Value eval_node(Context&) const override { return v; }
};

struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value eval_node(Context& ctx) const override {
    std::vector<Value> out;
    for (const auto& e : items) out.push_back(e->eval(ctx));
    return tuple ? Value::make_tuple(std::move(out)) : Value::array(std::move(out));
  }
};

struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval_node(Context& ctx) const override {
    Value o = Value::object();
    for (const auto& [k, e] : items) {
      const Value key = k->eval(ctx);
      if (!key.is_string()) error_at(line, "dict keys must be strings");
      o.obj->set(key.s, e->eval(ctx));
    }
    return o;
  }
};

struct NameExpr : Expr {
  std::string name;
  Value eval_node(Context& ctx) const override {
    const Value* v = ctx.lookup(name);
    return v ? *v : Value();
  }
};

struct AttrExpr : Expr {
  ExprPtr obj;
  std::string name;
  Value eval_node(Context& ctx) const override { return get_attr(obj->eval(ctx), name, line); }
};

struct ItemExpr : Expr {
  ExprPtr obj, key;
  Value eval_node(Context& ctx) const override { return get_item(obj->eval(ctx), key->eval(ctx), line); }
};

struct SliceExpr : Expr {
  ExprPtr obj, a, b, c;
  Value eval_node(Context& ctx) const override {
    const auto ev = [&](const ExprPtr& e) { return e ? e->eval(ctx) : Value(); };
    return slice_value(obj->eval(ctx), ev(a), ev(b), ev(c), line);
  }
};

struct CallExpr : Expr {
  ExprPtr fn;
  CallArgs args;
  std::string what;
  Value eval_node(Context& ctx) const override {
    const Value f = fn->eval(ctx);
    if (!f.is_func()) error_at(line, fmt::format("'{}' is not callable ({})", what, f.type_name()));
    return (*f.fn)(args.eval(ctx));
  }
};

struct FilterExpr : Expr {
  ExprPtr value;
  std::string name;
  CallArgs args;
  Value eval_node(Context& ctx) const override { return apply_filter(name, value->eval(ctx), args.eval(ctx), line); }
};

struct TestExpr : Expr {
  ExprPtr value;
  std::string name;
  CallArgs args;
  bool negated = false;
  Value eval_node(Context& ctx) const override {
    return Value::boolean(apply_test(name, value->eval(ctx), args.eval(ctx), line) != negated);
  }
};

struct UnaryExpr : Expr {
  std::string op;
  ExprPtr e;
  Value eval_node(Context& ctx) const override {
    const Value v = e->eval(ctx);
    if (op == "not") return Value::boolean(!v.truthy());
    if (v.kind == Value::Kind::Int) {
      if (op == "-" && v.i == INT64_MIN) error_at(line, "integer overflow: -(-9223372036854775808)");
      return Value::integer(op == "-" ? -v.i : v.i);
    }
    if (v.kind == Value::Kind::Float) return Value::number(op == "-" ? -v.f : v.f);
    error_at(line, fmt::format("bad operand type for unary {}: '{}'", op, v.type_name()));
  }
};

struct BinaryExpr : Expr {
  std::string op;
  ExprPtr l, r;
  Value eval_node(Context& ctx) const override {
    if (op == "and") {
      Value a = l->eval(ctx);
      return a.truthy() ? r->eval(ctx) : a;
    }
    if (op == "or") {
      Value a = l->eval(ctx);
      return a.truthy() ? a : r->eval(ctx);
    }
    return arith(op, l->eval(ctx), r->eval(ctx), line);
  }
};

struct CompareExpr : Expr {
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
  Value eval_node(Context& ctx) const override {
    Value left = first->eval(ctx);
    for (const auto& [op, e] : rest) {
      Value right = e->eval(ctx);
      bool ok;
      if (op == "==") ok = values_equal(left, right);
      else if (op == "!=") ok = !values_equal(left, right);
      else if (op == "in") ok = contains(right, left, line);
      else if (op == "not in") ok = !contains(right, left, line);
      else {
        const int c = compare_values(left, right, line);
        ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
      }
      if (!ok) return Value::boolean(false);
      left = std::move(right);
    }
    return Value::boolean(true);
  }
};

struct CondExpr : Expr {
  ExprPtr then, cond, otherwise;
  Value eval_node(Context& ctx) const override {
    if (cond->eval(ctx).truthy()) return then->eval(ctx);
    return otherwise ? otherwise->eval(ctx) : Value();
  }
};

// ---------- statements ----------

struct TextStmt : Stmt {
  std::string text;
  Flow exec_node(Context&, std::string& out) const override {
    out += text;
    return Flow::Normal;
  }
};

struct OutputStmt : Stmt {
  ExprPtr e;
  Flow exec_node(Context& ctx, std::string& out) const override {
    out += e->eval(ctx).str();
    return Flow::Normal;
  }
};

struct IfStmt : Stmt {
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
  Flow exec_node(Context& ctx, std::string& out) const override {
    for (const auto& [c, body] : branches) {
      if (c->eval(ctx).truthy()) return exec_body(body, ctx, out);
    }
    return exec_body(otherwise, ctx, out);
  }
};

void assign_targets(Context& ctx, const std::vector<std::string>& targets, const Value& v, int line) {
  if (targets.size() == 1) {
    ctx.set(targets[0], v);
    return;
  }
  const auto items = iterate(v, line);
  if (items.size() != targets.size()) {
    error_at(line, fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
  }
  for (size_t k = 0; k < targets.size(); ++k) ctx.set(targets[k], items[k]);
}

struct ForStmt : Stmt {
  std::vector<std::string> targets;
  ExprPtr iter, cond;
  Body body, otherwise;
  Flow exec_node(Context& ctx, std::string& out) const override {
    std::vector<Value> items = iterate(iter->eval(ctx), line);
    if (cond) {
      std::vector<Value> kept;
      for (auto& item : items) {
        ScopeGuard g(ctx);
        assign_targets(ctx, targets, item, line);
        if (cond->eval(ctx).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec_body(otherwise, ctx, out);
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      ScopeGuard g(ctx);
      Value loop = Value::object();
      auto& o = *loop.obj;
      o.set("index", Value::integer(k + 1));
      o.set("index0", Value::integer(k));
      o.set("revindex", Value::integer(n - k));
      o.set("revindex0", Value::integer(n - k - 1));
      o.set("first", Value::boolean(k == 0));
      o.set("last", Value::boolean(k == n - 1));
      o.set("length", Value::integer(n));
      o.set("previtem", k > 0 ? items[static_cast<size_t>(k - 1)] : Value());
      o.set("nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value());
      o.set("cycle", Value::function([k, l = line](const Args& a) {
              if (a.pos.empty()) error_at(l, "loop.cycle() needs at least one argument");
              return a.pos[static_cast<size_t>(k) % a.pos.size()];
            }));
      ctx.set("loop", loop);
      assign_targets(ctx, targets, items[static_cast<size_t>(k)], line);
      if (exec_body(body, ctx, out) == Flow::Break) break;
    }
    return Flow::Normal;
  }
};

struct SetStmt : Stmt {
  std::vector<std::string> targets;
  std::string ns_attr;  // `set ns.attr = ...` when not empty (targets has the namespace name)
  ExprPtr value;        // null: block form, the body renders the value
  Body body;
  Flow exec_node(Context& ctx, std::string&) const override {
    Value v;
    if (value) {
      v = value->eval(ctx);
    } else {
      std::string s;
      exec_body(body, ctx, s);
      v = Value::string(std::move(s));
    }
    if (!ns_attr.empty()) {
      const Value* ns = ctx.lookup(targets[0]);
      if (!ns || !ns->is_object() || !ns->obj->is_namespace) {
        error_at(line, fmt::format("cannot assign attribute '{}' on '{}': it is not a namespace()", ns_attr, targets[0]));
      }
      ns->obj->set(ns_attr, std::move(v));
      return Flow::Normal;
    }
    assign_targets(ctx, targets, v, line);
    return Flow::Normal;
  }
};

struct MacroStmt : Stmt {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;
  std::shared_ptr<Body> body;
  Flow exec_node(Context& ctx, std::string&) const override {
    // Defaults are evaluated at definition time, as values.
    std::vector<std::pair<std::string, Value>> defaults;
    for (const auto& [p, e] : params) defaults.emplace_back(p, e ? e->eval(ctx) : Value());
    Context* c = &ctx;
    auto b = body;
    const int l = line;
    const std::string n = name;
    ctx.set(name, Value::function([c, b, defaults, l, n](const Args& a) {
      if (a.pos.size() > defaults.size()) error_at(l, fmt::format("macro '{}' takes {} arguments, got {}", n, defaults.size(), a.pos.size()));
      if (++c->depth > 64) error_at(l, fmt::format("macro '{}': recursion too deep", n));
      ScopeGuard g(*c);
      for (size_t k = 0; k < defaults.size(); ++k) {
        const Value* v = a.get(k, defaults[k].first);
        c->set(defaults[k].first, v ? *v : defaults[k].second);
      }
      std::string out;
      exec_body(*b, *c, out);
      --c->depth;
      return Value::string(std::move(out));
    }));
    return Flow::Normal;
  }
};

struct FlowStmt : Stmt {
  Flow flow;
  Flow exec_node(Context&, std::string&) const override { return flow; }
};

struct BlockStmt : Stmt {  // {% generation %} ... {% endgeneration %}: renders its body
  Body body;
  Flow exec_node(Context& ctx, std::string& out) const override { return exec_body(body, ctx, out); }
};

// ------------------------------------------------------------------------------------------
// Parser
// ------------------------------------------------------------------------------------------

// Bounds on parsing: tokens in one tag (which bounds the depth of an expression's tree) and
// nesting of parentheses, brackets, `not`, unary signs and blocks (the parser's recursion).
constexpr size_t kMaxTagTokens = 4000;
constexpr int kMaxParseNesting = 64;

struct NestGuard {
  int& n;
  NestGuard(int& counter, int line, const char* what) : n(counter) {
    if (++n > kMaxParseNesting) {
      --n;
      error_at(line, fmt::format("{} nested deeper than {}", what, kMaxParseNesting));
    }
  }
  ~NestGuard() { --n; }
  NestGuard(const NestGuard&) = delete;
  NestGuard& operator=(const NestGuard&) = delete;
};

class ExprParser {
 public:
  ExprParser(const std::vector<Token>& toks, size_t pos = 0) : t_(toks), p_(pos) {
    if (toks.size() > kMaxTagTokens) {
      error_at(toks.front().line, fmt::format("a tag of {} tokens, more than the {} allowed", toks.size(), kMaxTagTokens));
    }
  }

  size_t pos() const { return p_; }
  const Token& peek(size_t ahead = 0) const { return t_[std::min(p_ + ahead, t_.size() - 1)]; }
  bool at_end() const { return peek().type == Tk::End; }
  bool is_op(const char* op, size_t ahead = 0) const { return peek(ahead).type == Tk::Op && peek(ahead).text == op; }
  bool is_name(const char* n, size_t ahead = 0) const { return peek(ahead).type == Tk::Name && peek(ahead).text == n; }
  Token next() { return t_[std::min(p_++, t_.size() - 1)]; }

  void expect_op(const char* op) {
    if (!is_op(op)) error_at(peek().line, fmt::format("expected '{}', found {}", op, describe(peek())));
    ++p_;
  }
  std::string expect_name() {
    if (peek().type != Tk::Name) error_at(peek().line, fmt::format("expected a name, found {}", describe(peek())));
    return next().text;
  }
  void expect_end() {
    if (!at_end()) error_at(peek().line, fmt::format("unexpected {} at the end of the tag", describe(peek())));
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tk::End: return "end of tag";
      case Tk::Str: return fmt::format("string '{}'", t.text);
      default: return fmt::format("'{}'", t.text);
    }
  }

  ExprPtr expression() {
    NestGuard nest(nest_, peek().line, "expressions");
    ExprPtr e = or_expr();
    if (is_name("if")) {
      const int line = next().line;
      auto c = std::make_unique<CondExpr>();
      c->line = line;
      c->then = std::move(e);
      c->cond = or_expr();
      if (is_name("else")) {
        next();
        c->otherwise = expression();
      }
      return c;
    }
    return e;
  }

  ExprPtr or_expr() {
    ExprPtr l = and_expr();
    while (is_name("or")) {
      const int line = next().line;
      l = binary("or", std::move(l), and_expr(), line);
    }
    return l;
  }

 private:
  static ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r, int line) {
    auto b = std::make_unique<BinaryExpr>();
    b->line = line;
    b->op = op;
    b->l = std::move(l);
    b->r = std::move(r);
    return b;
  }

  ExprPtr and_expr() {
    ExprPtr l = not_expr();
    while (is_name("and")) {
      const int line = next().line;
      l = binary("and", std::move(l), not_expr(), line);
    }
    return l;
  }

  ExprPtr not_expr() {
    NestGuard nest(nest_, peek().line, "expressions");
    if (is_name("not")) {
      auto u = std::make_unique<UnaryExpr>();
      u->line = next().line;
      u->op = "not";
      u->e = not_expr();
      return u;
    }
    return compare();
  }

  ExprPtr compare() {
    ExprPtr first = math1();
    std::vector<std::pair<std::string, ExprPtr>> rest;
    const int line = peek().line;
    for (;;) {
      std::string op;
      if (peek().type == Tk::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                    peek().text == "<=" || peek().text == ">" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      rest.emplace_back(op, math1());
    }
    if (rest.empty()) return first;
    auto c = std::make_unique<CompareExpr>();
    c->line = line;
    c->first = std::move(first);
    c->rest = std::move(rest);
    return c;
  }

  ExprPtr math1() {
    ExprPtr l = concat();
    while (is_op("+") || is_op("-")) {
      const Token op = next();
      l = binary(op.text, std::move(l), concat(), op.line);
    }
    return l;
  }

  ExprPtr concat() {
    ExprPtr l = math2();
    while (is_op("~")) {
      const int line = next().line;
      l = binary("~", std::move(l), math2(), line);
    }
    return l;
  }

  ExprPtr math2() {
    ExprPtr l = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token op = next();
      l = binary(op.text, std::move(l), power(), op.line);
    }
    return l;
  }

  ExprPtr power() {
    ExprPtr l = unary(true);
    while (is_op("**")) {
      const int line = next().line;
      l = binary("**", std::move(l), unary(true), line);
    }
    return l;
  }

  ExprPtr unary(bool with_filter) {
    NestGuard nest(nest_, peek().line, "expressions");
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      auto u = std::make_unique<UnaryExpr>();
      const Token op = next();
      u->line = op.line;
      u->op = op.text;
      u->e = unary(false);
      e = std::move(u);
    } else {
      e = postfix(primary());
    }
    if (with_filter) return filters(std::move(e));
    return e;
  }

  ExprPtr primary() {
    const Token t = next();
    switch (t.type) {
      case Tk::Name: {
        if (t.text == "true" || t.text == "True") return literal(Value::boolean(true), t.line);
        if (t.text == "false" || t.text == "False") return literal(Value::boolean(false), t.line);
        if (t.text == "none" || t.text == "None") return literal(Value::none(), t.line);
        auto n = std::make_unique<NameExpr>();
        n->line = t.line;
        n->name = t.text;
        return n;
      }
      case Tk::Str: {
        std::string s = t.text;
        while (peek().type == Tk::Str) s += next().text;
        return literal(Value::string(std::move(s)), t.line);
      }
      case Tk::Int:
        try {
          return literal(Value::integer(std::stoll(t.text)), t.line);
        } catch (const std::exception&) {
          error_at(t.line, fmt::format("integer literal {} is out of range", t.text));
        }
      case Tk::Float: {
        errno = 0;
        char* end = nullptr;
        const double x = std::strtod(t.text.c_str(), &end);
        if (end != t.text.c_str() + t.text.size() || !std::isfinite(x)) {
          error_at(t.line, fmt::format("float literal {} is out of range", t.text));
        }
        return literal(Value::number(x), t.line);
      }
      case Tk::Op:
        if (t.text == "(") {
          if (is_op(")")) {
            next();
            auto l = std::make_unique<ListExpr>();
            l->line = t.line;
            return l;
          }
          ExprPtr e = expression();
          if (is_op(",")) {  // a tuple: a list that prints with parentheses
            auto l = std::make_unique<ListExpr>();
            l->line = t.line;
            l->items.push_back(std::move(e));
            while (is_op(",")) {
              next();
              if (is_op(")")) break;
              l->items.push_back(expression());
            }
            l->tuple = true;
            e = std::move(l);
          }
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          auto l = std::make_unique<ListExpr>();
          l->line = t.line;
          while (!is_op("]")) {
            l->items.push_back(expression());
            if (!is_op(",")) break;
            next();
          }
          expect_op("]");
          return l;
        }
        if (t.text == "{") {
          auto d = std::make_unique<DictExpr>();
          d->line = t.line;
          while (!is_op("}")) {
            ExprPtr k = expression();
            expect_op(":");
            d->items.emplace_back(std::move(k), expression());
            if (!is_op(",")) break;
            next();
          }
          expect_op("}");
          return d;
        }
        break;
      default: break;
    }
    error_at(t.line, fmt::format("unexpected {} in expression", describe(t)));
  }

  static ExprPtr literal(Value v, int line) {
    auto l = std::make_unique<Literal>();
    l->line = line;
    l->v = std::move(v);
    return l;
  }

  static std::string describe_expr(const Expr* e) {
    if (auto n = dynamic_cast<const NameExpr*>(e)) return n->name;
    if (auto a = dynamic_cast<const AttrExpr*>(e)) return describe_expr(a->obj.get()) + "." + a->name;
    return "expression";
  }

  ExprPtr postfix(ExprPtr e) {
    for (;;) {
      if (is_op(".")) {
        const int line = next().line;
        auto a = std::make_unique<AttrExpr>();
        a->line = line;
        a->obj = std::move(e);
        if (peek().type == Tk::Int) {
          auto it = std::make_unique<ItemExpr>();
          it->line = line;
          it->obj = std::move(a->obj);
          const Token idx = next();
          int64_t k = 0;
          const auto [end, ec] = std::from_chars(idx.text.data(), idx.text.data() + idx.text.size(), k);
          if (ec != std::errc() || end != idx.text.data() + idx.text.size()) {
            error_at(line, fmt::format("index {} is out of range", idx.text));
          }
          it->key = literal(Value::integer(k), line);
          e = std::move(it);
          continue;
        }
        a->name = expect_name();
        e = std::move(a);
      } else if (is_op("[")) {
        const int line = next().line;
        ExprPtr a, b, c;
        bool is_slice = false;
        if (!is_op(":")) a = expression();
        if (is_op(":")) {
          is_slice = true;
          next();
          if (!is_op("]") && !is_op(":")) b = expression();
          if (is_op(":")) {
            next();
            if (!is_op("]")) c = expression();
          }
        }
        expect_op("]");
        if (is_slice) {
          auto s = std::make_unique<SliceExpr>();
          s->line = line;
          s->obj = std::move(e);
          s->a = std::move(a);
          s->b = std::move(b);
          s->c = std::move(c);
          e = std::move(s);
        } else {
          auto it = std::make_unique<ItemExpr>();
          it->line = line;
          it->obj = std::move(e);
          it->key = std::move(a);
          e = std::move(it);
        }
      } else if (is_op("(")) {
        auto c = std::make_unique<CallExpr>();
        c->line = peek().line;
        c->what = describe_expr(e.get());
        c->fn = std::move(e);
        c->args = call_args();
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  CallArgs call_args() {
    CallArgs a;
    expect_op("(");
    while (!is_op(")")) {
      if (peek().type == Tk::Name && is_op("=", 1)) {
        std::string k = next().text;
        next();
        a.kw.emplace_back(std::move(k), expression());
      } else {
        if (!a.kw.empty()) error_at(peek().line, "positional argument after keyword argument");
        a.pos.push_back(expression());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
    return a;
  }

  ExprPtr filters(ExprPtr e) {
    for (;;) {
      if (is_op("|")) {
        const int line = next().line;
        auto f = std::make_unique<FilterExpr>();
        f->line = line;
        f->name = expect_name();
        if (is_op("(")) f->args = call_args();
        f->value = std::move(e);
        e = std::move(f);
      } else if (is_name("is")) {
        const int line = next().line;
        auto t = std::make_unique<TestExpr>();
        t->line = line;
        if (is_name("not")) {
          next();
          t->negated = true;
        }
        if (peek().type == Tk::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                      peek().text == "<=" || peek().text == ">" || peek().text == ">=")) {
          t->name = next().text;
        } else {
          t->name = expect_name();
        }
        if (is_op("(")) {
          t->args = call_args();
        } else {
          const Token& n = peek();
          const bool starts_arg =
              n.type == Tk::Str || n.type == Tk::Int || n.type == Tk::Float ||
              (n.type == Tk::Op && (n.text == "[" || n.text == "{")) ||
              (n.type == Tk::Name && n.text != "else" && n.text != "or" && n.text != "and" &&
               n.text != "if" && n.text != "not" && n.text != "in" && n.text != "is");
          if (starts_arg) t->args.pos.push_back(postfix(primary()));
        }
        t->value = std::move(e);
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& t_;
  size_t p_;
  int nest_ = 0;
};

class Parser {
 public:
  explicit Parser(std::vector<Piece> pieces) : pieces_(std::move(pieces)) {}

  Body parse_all() {
    std::string end;
    Body b = body({}, end);
    return b;
  }

 private:
  // Parses statements until a block tag whose keyword is in `ends`; stores that keyword in `end`
  // and leaves its parser positioned after the keyword (in `tail_`).
  Body body(const std::vector<std::string>& ends, std::string& end) {
    Body out;
    while (k_ < pieces_.size()) {
      Piece& pc = pieces_[k_++];
      if (pc.kind == PieceKind::Comment) continue;
      if (pc.kind == PieceKind::Text) {
        if (pc.text.empty()) continue;
        auto t = std::make_unique<TextStmt>();
        t->line = pc.line;
        t->text = std::move(pc.text);
        out.push_back(std::move(t));
        continue;
      }
      if (pc.kind == PieceKind::Var) {
        ExprParser p(pc.tokens);
        auto o = std::make_unique<OutputStmt>();
        o->line = pc.line;
        if (p.at_end()) error_at(pc.line, "empty expression '{{ }}'");
        o->e = p.expression();
        p.expect_end();
        out.push_back(std::move(o));
        continue;
      }
      // Block tag
      ExprParser p(pc.tokens);
      if (p.peek().type != Tk::Name) error_at(pc.line, "expected a statement keyword after '{%'");
      const std::string kw = p.next().text;
      if (std::find(ends.begin(), ends.end(), kw) != ends.end()) {
        end = kw;
        tail_ = std::make_unique<ExprParser>(pc.tokens, p.pos());
        return out;
      }
      out.push_back(statement(kw, p, pc.line));
    }
    if (!ends.empty()) {
      error_at(open_line_, fmt::format("unexpected end of template: missing '{{% {} %}}'", ends.back()));
    }
    return out;
  }

  Body sub_body(const std::vector<std::string>& ends, std::string& end, int open_line) {
    NestGuard nest(block_nest_, open_line, "blocks");
    const int saved = open_line_;
    open_line_ = open_line;
    Body b = body(ends, end);
    open_line_ = saved;
    return b;
  }

  StmtPtr statement(const std::string& kw, ExprParser& p, int line) {
    if (kw == "if") {
      auto s = std::make_unique<IfStmt>();
      s->line = line;
      ExprPtr cond = p.expression();
      p.expect_end();
      for (;;) {
        std::string end;
        Body b = sub_body({"elif", "else", "endif"}, end, line);
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "elif") {
          cond = tail_->expression();
          tail_->expect_end();
          continue;
        }
        tail_->expect_end();
        if (end == "else") {
          s->otherwise = sub_body({"endif"}, end, line);
          tail_->expect_end();
        }
        break;
      }
      return s;
    }
    if (kw == "for") {
      auto s = std::make_unique<ForStmt>();
      s->line = line;
      s->targets.push_back(p.expect_name());
      while (p.is_op(",")) {
        p.next();
        s->targets.push_back(p.expect_name());
      }
      if (!p.is_name("in")) error_at(line, "expected 'in' in for loop");
      p.next();
      s->iter = p.or_expr();
      if (p.is_name("if")) {
        p.next();
        s->cond = p.expression();
      }
      if (p.is_name("recursive")) error_at(line, "recursive for loops are not supported");
      p.expect_end();
      std::string end;
      s->body = sub_body({"else", "endfor"}, end, line);
      tail_->expect_end();
      if (end == "else") {
        s->otherwise = sub_body({"endfor"}, end, line);
        tail_->expect_end();
      }
      return s;
    }
    if (kw == "set") {
      auto s = std::make_unique<SetStmt>();
      s->line = line;
      s->targets.push_back(p.expect_name());
      if (p.is_op(".")) {
        p.next();
        s->ns_attr = p.expect_name();
      } else {
        while (p.is_op(",")) {
          p.next();
          s->targets.push_back(p.expect_name());
        }
      }
      if (p.is_op("=")) {
        p.next();
        s->value = p.expression();
        p.expect_end();
      } else {
        p.expect_end();
        std::string end;
        s->body = sub_body({"endset"}, end, line);
        tail_->expect_end();
      }
      return s;
    }
    if (kw == "macro") {
      auto s = std::make_unique<MacroStmt>();
      s->line = line;
      s->name = p.expect_name();
      p.expect_op("(");
      while (!p.is_op(")")) {
        std::string name = p.expect_name();
        ExprPtr dflt;
        if (p.is_op("=")) {
          p.next();
          dflt = p.expression();
        }
        s->params.emplace_back(std::move(name), std::move(dflt));
        if (!p.is_op(",")) break;
        p.next();
      }
      p.expect_op(")");
      p.expect_end();
      std::string end;
      s->body = std::make_shared<Body>(sub_body({"endmacro"}, end, line));
      return s;
    }
    if (kw == "break" || kw == "continue") {
      p.expect_end();
      auto s = std::make_unique<FlowStmt>();
      s->line = line;
      s->flow = kw == "break" ? Flow::Break : Flow::Continue;
      return s;
    }
    if (kw == "generation") {
      p.expect_end();
      auto s = std::make_unique<BlockStmt>();
      s->line = line;
      std::string end;
      s->body = sub_body({"endgeneration"}, end, line);
      tail_->expect_end();
      return s;
    }
    error_at(line, fmt::format("unsupported or misplaced tag '{{% {} %}}'", kw));
  }

  std::vector<Piece> pieces_;
  size_t k_ = 0;
  std::unique_ptr<ExprParser> tail_;
  int open_line_ = 0;
  int block_nest_ = 0;
};

std::string strftime_now(const std::string& f) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[256];
  const size_t n = std::strftime(buf, sizeof buf, f.c_str(), &tm);
  return std::string(buf, n);
}

void add_globals(Context& ctx) {
  ctx.set("raise_exception", Value::function([](const Args& a) -> Value {
            throw JinjaError{-1, a.pos.empty() ? std::string("raise_exception()") : a.pos[0].str()};
          }));
  ctx.set("namespace", Value::function([](const Args& a) {
            Value ns = Value::object();
            ns.obj->is_namespace = true;
            for (const auto& [k, v] : a.kw) ns.obj->set(k, v);
            return ns;
          }));
  ctx.set("dict", Value::function([](const Args& a) {
            Value d = Value::object();
            for (const auto& [k, v] : a.kw) d.obj->set(k, v);
            return d;
          }));
  ctx.set("range", Value::function([](const Args& a) {
            int64_t start = 0, stop = 0, step = 1;
            const auto as_int = [](const Value& v) {
              if (v.kind != Value::Kind::Int) error_at(0, "range(): arguments must be integers");
              return v.i;
            };
            if (a.pos.size() == 1) {
              stop = as_int(a.pos[0]);
            } else if (a.pos.size() >= 2) {
              start = as_int(a.pos[0]);
              stop = as_int(a.pos[1]);
              if (a.pos.size() > 2) step = as_int(a.pos[2]);
            }
            if (step == 0) error_at(0, "range(): step must not be zero");
            std::vector<Value> out;
            for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
              out.push_back(Value::integer(k));
              if (out.size() > 1000000) error_at(0, "range(): more than 1000000 items");
            }
            return Value::array(std::move(out));
          }));
  ctx.set("strftime_now", Value::function([](const Args& a) {
            return Value::string(strftime_now(a.pos.empty() ? std::string("%d %b %Y") : a.pos[0].str()));
          }));
}

}  // namespace

Template::Template(std::string_view source, std::string name) : name_(std::move(name)) {
  constexpr size_t kMaxSourceBytes = size_t{1} << 20;
  if (source.size() > kMaxSourceBytes) {
    fail("{}: the template is {} bytes, more than the {} allowed (chat templates are a few KB)", name_, source.size(),
         kMaxSourceBytes);
  }
  std::string_view src = source;
  if (src.size() >= 2 && src.substr(src.size() - 2) == "\r\n") {
    src.remove_suffix(2);
  } else if (!src.empty() && src.back() == '\n') {
    src.remove_suffix(1);
  }
  try {
    auto pieces = Lexer(src).run();
    apply_whitespace_control(pieces);
    root_ = std::make_shared<Node>();
    root_->body = Parser(std::move(pieces)).parse_all();
  } catch (const JinjaError& e) {
    fail("{} line {}: {}", name_, e.line, e.msg);
  }
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const nlohmann::ordered_json& context) const {
  Context ctx;
  add_globals(ctx);
  if (!context.is_object()) fail("{}: the render context must be a JSON object", name_);
  for (const auto& [k, v] : context.items()) ctx.set(k, Value::from_json(v));
  std::string out;
  Budget budget;
  Budget* const outer = g_budget;
  g_budget = &budget;
  struct Restore {
    Budget* b;
    ~Restore() { g_budget = b; }
  } restore{outer};
  try {
    exec_body(root_->body, ctx, out);
  } catch (const JinjaError& e) {
    if (e.line < 0) fail("{}: raise_exception: {}", name_, e.msg);
    if (e.line == 0) fail("{}: {}", name_, e.msg);
    fail("{} line {}: {}", name_, e.line, e.msg);
  }
  return out;
}

}  // namespace ranklm::jinja
