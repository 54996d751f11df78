// Values of the Jinja subset: Python-like semantics (reference semantics for lists and dicts,
// insertion-ordered dicts, str()/repr()/json.dumps formatting).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ranklm::jinja {

struct Value;

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  const Value* get(size_t i, std::string_view name) const;  // positional i or keyword `name`
};

using Func = std::function<Value(const Args&)>;

struct ObjectData {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace(): attributes may be assigned with `set ns.x = ...`
  Value* find(std::string_view key);
  void set(const std::string& key, Value v);
};

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object, Func };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<std::vector<Value>> arr;
  std::shared_ptr<ObjectData> obj;
  std::shared_ptr<Func> fn;
  bool tuple = false;  // an Array made as a Python tuple (repr uses parentheses)

  static Value none() { Value v; v.kind = Kind::None; return v; }
  static Value boolean(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = Kind::Int; v.i = x; return v; }
  static Value number(double x) { Value v; v.kind = Kind::Float; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = Kind::String; v.s = std::move(x); return v; }
  static Value array(std::vector<Value> x = {});
  static Value make_tuple(std::vector<Value> x) { Value v = array(std::move(x)); v.tuple = true; return v; }
  static Value object();
  static Value function(Func f);
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float; }
  bool is_string() const { return kind == Kind::String; }
  bool is_array() const { return kind == Kind::Array; }
  bool is_object() const { return kind == Kind::Object; }
  bool is_func() const { return kind == Kind::Func; }
  double as_double() const { return kind == Kind::Int ? static_cast<double>(i) : f; }

  bool truthy() const;
  std::string str() const;   // Python str()
  std::string repr() const;  // Python repr()
  // json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: compact ", " / ": " form)
  std::string to_json(int indent = -1) const;
  const char* type_name() const;
};

bool values_equal(const Value& a, const Value& b);
std::string python_float(double d);

}  // namespace ranklm::jinja
