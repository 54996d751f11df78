// The syntax tree of a template: expression and statement nodes, each evaluating itself
// against a Context under the render's bounds. Built by the parser (jinja.cpp) only.
#pragma once

#include <algorithm>

#include "chat/jinja_detail.h"

namespace ranklm::jinja::detail {

inline Value Expr::eval(Context& ctx) const {
  DepthGuard g(line);
  Value v = eval_node(ctx);
  if (v.is_string()) check_string_size(v.s.size(), line);
  if (v.is_array()) check_items(v.arr->size(), line);
  return v;
}

inline Args CallArgs::eval(Context& ctx) const {
  Args a;
  for (const auto& e : pos) a.pos.push_back(e->eval(ctx));
  for (const auto& [k, e] : kw) a.kw.emplace_back(k, e->eval(ctx));
  return a;
}

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
  const Method* method = nullptr;  // the methods of this name, found when parsed
  Value eval_node(Context& ctx) const override {
    const Value o = obj->eval(ctx);
    if (o.is_undefined()) error_at(line, fmt::format("cannot read '{}' of an undefined value", name));
    if (o.is_object()) {
      if (const Value* v = o.obj->find(name)) return *v;
    }
    return method ? bind_method(o, *method, line) : Value();
  }
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
  FilterFn fn = nullptr;  // found when parsed
  CallArgs args;
  Value eval_node(Context& ctx) const override { return fn(value->eval(ctx), args.eval(ctx), line); }
};

struct TestExpr : Expr {
  ExprPtr value;
  std::string name;
  TestFn fn = nullptr;  // found when parsed
  CallArgs args;
  bool negated = false;
  Value eval_node(Context& ctx) const override {
    return Value::boolean(fn(value->eval(ctx), args.eval(ctx), line) != negated);
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

inline void assign_targets(Context& ctx, const std::vector<std::string>& targets, const Value& v, int line) {
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


}  // namespace ranklm::jinja::detail
