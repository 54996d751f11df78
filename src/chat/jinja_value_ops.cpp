// Operations on template values: Python's len, iteration, comparison, membership, the string
// helpers behind methods and filters, attribute and item access, slices, arithmetic (checked),
// and the table of str, dict and list methods.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "chat/jinja_detail.h"
#include "tokenizer/unicode.h"

namespace ranklm::jinja::detail {

using unicode::codepoint_to_utf8;
using unicode::next_codepoint;

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

// ---------- methods of str, dict and list ----------

namespace {

Value str_strip(const Value& self, const Args& a, int) { return Value::string(py_strip(self.s, a.get(0, "chars"), true, true)); }
Value str_lstrip(const Value& self, const Args& a, int) { return Value::string(py_strip(self.s, a.get(0, "chars"), true, false)); }
Value str_rstrip(const Value& self, const Args& a, int) { return Value::string(py_strip(self.s, a.get(0, "chars"), false, true)); }
Value str_upper(const Value& self, const Args&, int) { return Value::string(ascii_upper(self.s)); }
Value str_lower(const Value& self, const Args&, int) { return Value::string(ascii_lower(self.s)); }
Value str_title(const Value& self, const Args&, int) { return Value::string(py_title(self.s)); }
Value str_capitalize(const Value& self, const Args&, int) { return Value::string(py_capitalize(self.s)); }

Value str_starts_ends(const Value& self, const Args& a, int line, bool start) {
  const Value* p = a.get(0, "prefix");
  if (!p) error_at(line, "startswith/endswith: missing argument");
  return Value::boolean(starts_or_ends(self.s, *p, start, line));
}
Value str_startswith(const Value& self, const Args& a, int line) { return str_starts_ends(self, a, line, true); }
Value str_endswith(const Value& self, const Args& a, int line) { return str_starts_ends(self, a, line, false); }

Value str_split(const Value& self, const Args& a, int line) {
  return py_split(self.s, a.get(0, "sep"), arg_int(a.get(1, "maxsplit"), -1, line, "split"));
}

Value str_replace(const Value& self, const Args& a, int line) {
  return Value::string(py_replace(self.s, arg_str(a.get(0, "old"), line, "replace"), arg_str(a.get(1, "new"), line, "replace"),
                                  arg_int(a.get(2, "count"), -1, line, "replace")));
}

Value str_find(const Value& self, const Args& a, int line) {
  const size_t f = self.s.find(arg_str(a.get(0, "sub"), line, "find"));
  return Value::integer(f == std::string::npos ? -1 : static_cast<int64_t>(f));
}

Value str_count(const Value& self, const Args& a, int line) {
  const std::string sub = arg_str(a.get(0, "sub"), line, "count");
  int64_t n = 0;
  if (!sub.empty()) {
    for (size_t p = self.s.find(sub); p != std::string::npos; p = self.s.find(sub, p + sub.size())) ++n;
  }
  return Value::integer(n);
}

Value str_join(const Value& self, const Args& a, int line) {
  const Value* v = a.get(0, "iterable");
  if (!v) error_at(line, "join: missing argument");
  std::string out;
  bool first = true;
  for (const auto& e : iterate(*v, line)) {
    if (!first) out += self.s;
    first = false;
    out += e.str();
    check_string_size(out.size(), line);
  }
  return Value::string(out);
}

Value dict_items(const Value& self, const Args&, int) {
  std::vector<Value> out;
  for (const auto& [k, v] : self.obj->items) out.push_back(Value::make_tuple({Value::string(k), v}));
  return Value::array(std::move(out));
}

Value dict_keys(const Value& self, const Args&, int) {
  std::vector<Value> out;
  for (const auto& [k, v] : self.obj->items) out.push_back(Value::string(k));
  return Value::array(std::move(out));
}

Value dict_values(const Value& self, const Args&, int) {
  std::vector<Value> out;
  for (const auto& [k, v] : self.obj->items) out.push_back(v);
  return Value::array(std::move(out));
}

Value dict_get(const Value& self, const Args& a, int line) {
  const std::string key = arg_str(a.get(0, "key"), line, "get");
  if (const Value* v = self.obj->find(key)) return *v;
  const Value* d = a.get(1, "default");
  return d ? *d : Value::none();
}

Value list_append(const Value& self, const Args& a, int line) {
  if (a.pos.size() != 1) error_at(line, "append() takes exactly one argument");
  check_items(self.arr->size() + 1, line);
  self.arr->push_back(a.pos[0]);
  return Value::none();
}

Value list_pop(const Value& self, const Args& a, int line) {
  auto& arr = *self.arr;
  if (arr.empty()) error_at(line, "pop from empty list");
  int64_t idx = arg_int(a.get(0, "index"), -1, line, "pop");
  if (idx < 0) idx += static_cast<int64_t>(arr.size());
  if (idx < 0 || idx >= static_cast<int64_t>(arr.size())) error_at(line, "pop index out of range");
  Value v = arr[static_cast<size_t>(idx)];
  arr.erase(arr.begin() + idx);
  return v;
}

const std::unordered_map<std::string_view, Method>& method_table() {
  static const std::unordered_map<std::string_view, Method> t = {
      {"strip", {str_strip}},           {"lstrip", {str_lstrip}},   {"rstrip", {str_rstrip}},
      {"upper", {str_upper}},           {"lower", {str_lower}},     {"title", {str_title}},
      {"capitalize", {str_capitalize}}, {"startswith", {str_startswith}}, {"endswith", {str_endswith}},
      {"split", {str_split}},           {"replace", {str_replace}}, {"find", {str_find}},
      {"count", {str_count}},           {"join", {str_join}},
      {"items", {nullptr, dict_items}}, {"keys", {nullptr, dict_keys}}, {"values", {nullptr, dict_values}},
      {"get", {nullptr, dict_get}},
      {"append", {nullptr, nullptr, list_append}}, {"pop", {nullptr, nullptr, list_pop}},
  };
  return t;
}

}  // namespace

const Method* find_method(std::string_view name) {
  const auto& t = method_table();
  const auto it = t.find(name);
  return it == t.end() ? nullptr : &it->second;
}

Value bind_method(const Value& self, const Method& m, int line) {
  const MethodFn fn = self.is_string() ? m.str : self.is_object() ? m.dict : self.is_array() ? m.list : nullptr;
  if (!fn) return Value();
  return Value::function([self, fn, line](const Args& a) { return fn(self, a, line); });
}

Value get_attr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) error_at(line, fmt::format("cannot read '{}' of an undefined value", name));
  if (obj.is_object()) {
    if (const Value* v = obj.obj->find(name)) return *v;
  }
  const Method* m = find_method(name);
  return m ? bind_method(obj, *m, line) : Value();
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

}  // namespace ranklm::jinja::detail
