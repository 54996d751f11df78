// The Jinja parser (pieces of tokens into the syntax tree of jinja_nodes.h), the globals of a
// render, and Template. The language and its bounds are described in jinja.h.
#include "chat/jinja.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <optional>

#include "chat/jinja_detail.h"
#include "chat/jinja_nodes.h"
#include "util/error.h"

namespace ranklm::jinja {

using namespace detail;

struct Node {
  Body body;
};

namespace {

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
        a->method = find_method(a->name);  // resolved now: str, dict and list methods of that name
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
        f->fn = find_filter(f->name);
        if (!f->fn) error_at(line, fmt::format("unknown filter '{}'", f->name));
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
        t->fn = find_test(t->name);
        if (!t->fn) error_at(line, fmt::format("unknown test '{}'", t->name));
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
    auto pieces = lex(src);
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