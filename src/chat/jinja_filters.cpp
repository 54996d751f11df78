// The filters and tests of templates, as tables looked up by name when a template is parsed
// (an unknown filter or test is refused when the template loads).
#include <algorithm>
#include <cmath>

#include "chat/jinja_detail.h"

namespace ranklm::jinja::detail {

namespace {

// ---------- tests ----------

const Value& test_arg(const Args& a, int line, const char* name) {
  const Value* arg = a.get(0, "other");
  if (!arg) error_at(line, fmt::format("test '{}' needs an argument", name));
  return *arg;
}

bool t_defined(const Value& v, const Args&, int) { return !v.is_undefined(); }
bool t_undefined(const Value& v, const Args&, int) { return v.is_undefined(); }
bool t_none(const Value& v, const Args&, int) { return v.is_none(); }
bool t_boolean(const Value& v, const Args&, int) { return v.kind == Value::Kind::Bool; }
bool t_true(const Value& v, const Args&, int) { return v.kind == Value::Kind::Bool && v.b; }
bool t_false(const Value& v, const Args&, int) { return v.kind == Value::Kind::Bool && !v.b; }
bool t_integer(const Value& v, const Args&, int) { return v.kind == Value::Kind::Int; }
bool t_float(const Value& v, const Args&, int) { return v.kind == Value::Kind::Float; }
bool t_number(const Value& v, const Args&, int) { return v.is_number(); }
bool t_string(const Value& v, const Args&, int) { return v.is_string(); }
bool t_mapping(const Value& v, const Args&, int) { return v.is_object(); }
bool t_iterable(const Value& v, const Args&, int) { return v.is_array() || v.is_object() || v.is_string(); }
bool t_callable(const Value& v, const Args&, int) { return v.is_func(); }
bool t_odd(const Value& v, const Args&, int) { return v.kind == Value::Kind::Int && v.i % 2 != 0; }
bool t_even(const Value& v, const Args&, int) { return v.kind == Value::Kind::Int && v.i % 2 == 0; }
bool t_divisibleby(const Value& v, const Args& a, int line) {
  const int64_t d = arg_int(&test_arg(a, line, "divisibleby"), 0, line, "divisibleby");
  if (d == 0) error_at(line, "divisibleby 0");
  return v.kind == Value::Kind::Int && v.i % d == 0;
}
bool t_eq(const Value& v, const Args& a, int line) { return values_equal(v, test_arg(a, line, "eq")); }
bool t_ne(const Value& v, const Args& a, int line) { return !values_equal(v, test_arg(a, line, "ne")); }
bool t_lt(const Value& v, const Args& a, int line) { return compare_values(v, test_arg(a, line, "lt"), line) < 0; }
bool t_le(const Value& v, const Args& a, int line) { return compare_values(v, test_arg(a, line, "le"), line) <= 0; }
bool t_gt(const Value& v, const Args& a, int line) { return compare_values(v, test_arg(a, line, "gt"), line) > 0; }
bool t_ge(const Value& v, const Args& a, int line) { return compare_values(v, test_arg(a, line, "ge"), line) >= 0; }
bool t_in(const Value& v, const Args& a, int line) { return contains(test_arg(a, line, "in"), v, line); }
bool t_sameas(const Value& v, const Args& a, int line) {
  const Value& o = test_arg(a, line, "sameas");
  if (v.kind != o.kind) return false;
  if (v.is_array()) return v.arr == o.arr;
  if (v.is_object()) return v.obj == o.obj;
  return values_equal(v, o);
}
bool t_lower(const Value& v, const Args&, int) { return v.is_string() && ascii_lower(v.s) == v.s; }
bool t_upper(const Value& v, const Args&, int) { return v.is_string() && ascii_upper(v.s) == v.s; }

const std::unordered_map<std::string_view, TestFn>& test_table() {
  static const std::unordered_map<std::string_view, TestFn> t = {
      {"defined", t_defined}, {"undefined", t_undefined}, {"none", t_none}, {"boolean", t_boolean},
      {"true", t_true}, {"false", t_false}, {"integer", t_integer}, {"float", t_float}, {"number", t_number},
      {"string", t_string}, {"mapping", t_mapping}, {"iterable", t_iterable}, {"sequence", t_iterable},
      {"callable", t_callable}, {"odd", t_odd}, {"even", t_even}, {"divisibleby", t_divisibleby},
      {"eq", t_eq}, {"equalto", t_eq}, {"==", t_eq}, {"ne", t_ne}, {"!=", t_ne},
      {"lt", t_lt}, {"lessthan", t_lt}, {"<", t_lt}, {"le", t_le}, {"<=", t_le},
      {"gt", t_gt}, {"greaterthan", t_gt}, {">", t_gt}, {"ge", t_ge}, {">=", t_ge},
      {"in", t_in}, {"sameas", t_sameas}, {"lower", t_lower}, {"upper", t_upper},
  };
  return t;
}

// ---------- filters ----------

Value f_safe(const Value& v, const Args&, int) { return v; }
Value f_string(const Value& v, const Args&, int) { return v.is_string() ? v : Value::string(v.str()); }
Value f_trim(const Value& v, const Args& a, int) {
  if (v.is_undefined()) return Value::string("");
  return Value::string(py_strip(v.str(), a.get(0, "chars"), true, true));
}
Value f_length(const Value& v, const Args&, int line) { return Value::integer(py_len(v, line)); }
Value f_upper(const Value& v, const Args&, int) { return Value::string(ascii_upper(v.str())); }
Value f_lower(const Value& v, const Args&, int) { return Value::string(ascii_lower(v.str())); }
Value f_title(const Value& v, const Args&, int) { return Value::string(py_title(v.str())); }
Value f_capitalize(const Value& v, const Args&, int) { return Value::string(py_capitalize(v.str())); }
Value f_default(const Value& v, const Args& a, int) {
  const Value* dflt = a.get(0, "default_value");
  const Value* boolean = a.get(1, "boolean");
  const bool use = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
  return use ? (dflt ? *dflt : Value::string("")) : v;
}
Value f_tojson(const Value& v, const Args& a, int line) {
  const Value* indent = a.get(0, "indent");
  return Value::string(v.to_json(indent && !indent->is_none() ? static_cast<int>(arg_int(indent, 0, line, "tojson")) : -1));
}
Value f_join(const Value& v, const Args& a, int line) {
  const Value* sep = a.get(0, "d");
  const Value* attr = a.get(1, "attribute");
  std::string out;
  bool first = true;
  for (const auto& e : iterate(v, line)) {
    if (!first) out += sep ? sep->str() : "";
    first = false;
    out += (attr ? get_attr(e, attr->str(), line) : e).str();
    check_string_size(out.size(), line);
  }
  return Value::string(out);
}
Value f_first(const Value& v, const Args&, int line) {
  auto items = iterate(v, line);
  return items.empty() ? Value() : items.front();
}
Value f_last(const Value& v, const Args&, int line) {
  auto items = iterate(v, line);
  return items.empty() ? Value() : items.back();
}
Value f_list(const Value& v, const Args&, int line) { return Value::array(iterate(v, line)); }
Value f_reverse(const Value& v, const Args&, int line) {
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
Value f_items(const Value& v, const Args&, int line) {
  if (v.is_undefined()) return Value::array();
  if (!v.is_object()) error_at(line, fmt::format("items: expected a dict, got '{}'", v.type_name()));
  std::vector<Value> out;
  for (const auto& [k, e] : v.obj->items) out.push_back(Value::make_tuple({Value::string(k), e}));
  return Value::array(std::move(out));
}
Value f_int(const Value& v, const Args& a, int line) {
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
Value f_float(const Value& v, const Args& a, int) {
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
Value f_abs(const Value& v, const Args&, int line) {
  if (v.kind == Value::Kind::Int) {
    if (v.i == INT64_MIN) error_at(line, "abs: integer overflow");
    return Value::integer(v.i < 0 ? -v.i : v.i);
  }
  if (v.kind == Value::Kind::Float) return Value::number(std::fabs(v.f));
  error_at(line, fmt::format("abs: expected a number, got '{}'", v.type_name()));
}
Value f_round(const Value& v, const Args& a, int line) {
  const int64_t prec = arg_int(a.get(0, "precision"), 0, line, "round");
  const std::string method = a.get(1, "method") ? a.get(1, "method")->str() : "common";
  const double scale = std::pow(10.0, static_cast<double>(prec));
  const double x = v.as_double() * scale;
  const double r = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::round(x);
  return Value::number(r / scale);
}
Value f_replace(const Value& v, const Args& a, int line) {
  return Value::string(py_replace(v.str(), arg_str(a.get(0, "old"), line, "replace"), arg_str(a.get(1, "new"), line, "replace"),
                                  arg_int(a.get(2, "count"), -1, line, "replace")));
}
Value f_indent(const Value& v, const Args& a, int line) {
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
    check_string_size(out.size(), line);
    if (e == std::string::npos) break;
    out += '\n';
    p = e + 1;
    is_first = false;
  }
  return Value::string(out);
}
Value f_escape(const Value& v, const Args&, int) {
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

// select / reject / selectattr / rejectattr.
Value select_items(const Value& v, const Args& a, int line, bool by_attr, bool keep, const char* name) {
  size_t k = 0;
  std::string attr;
  if (by_attr) attr = arg_str(a.get(k++, "attribute"), line, name);
  const Value* test_v = k < a.pos.size() ? &a.pos[k] : nullptr;
  const std::string test = test_v ? arg_str(test_v, line, name) : "";
  Args rest;
  for (size_t j = k + 1; j < a.pos.size(); ++j) rest.pos.push_back(a.pos[j]);
  std::vector<Value> out;
  for (const auto& item : iterate(v, line)) {
    const Value subject = by_attr ? (item.is_object() ? get_attr(item, attr, line) : Value()) : item;
    const bool ok = test.empty() ? subject.truthy() : apply_test(test, subject, rest, line);
    if (ok == keep) out.push_back(item);
  }
  return Value::array(std::move(out));
}
Value f_select(const Value& v, const Args& a, int line) { return select_items(v, a, line, false, true, "select"); }
Value f_reject(const Value& v, const Args& a, int line) { return select_items(v, a, line, false, false, "reject"); }
Value f_selectattr(const Value& v, const Args& a, int line) { return select_items(v, a, line, true, true, "selectattr"); }
Value f_rejectattr(const Value& v, const Args& a, int line) { return select_items(v, a, line, true, false, "rejectattr"); }

Value f_map(const Value& v, const Args& a, int line) {
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
Value f_unique(const Value& v, const Args&, int line) {
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
Value f_sort(const Value& v, const Args& a, int line) {
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
Value f_sum(const Value& v, const Args& a, int line) {
  const Value* attr = a.get(0, "attribute");
  Value acc = a.get(1, "start") ? *a.get(1, "start") : Value::integer(0);
  for (const auto& item : iterate(v, line)) acc = arith("+", acc, attr ? get_attr(item, attr->str(), line) : item, line);
  return acc;
}
Value min_max(const Value& v, int line, bool min) {
  auto items = iterate(v, line);
  if (items.empty()) return Value();
  Value best = items[0];
  for (const auto& item : items) {
    const int c = compare_values(item, best, line);
    if (min ? c < 0 : c > 0) best = item;
  }
  return best;
}
Value f_min(const Value& v, const Args&, int line) { return min_max(v, line, true); }
Value f_max(const Value& v, const Args&, int line) { return min_max(v, line, false); }
Value f_dictsort(const Value& v, const Args&, int line) {
  if (!v.is_object()) error_at(line, "dictsort: expected a dict");
  auto items = v.obj->items;
  std::stable_sort(items.begin(), items.end(), [](const auto& x, const auto& y) { return ascii_lower(x.first) < ascii_lower(y.first); });
  std::vector<Value> out;
  for (auto& [k, e] : items) out.push_back(Value::make_tuple({Value::string(k), e}));
  return Value::array(std::move(out));
}

const std::unordered_map<std::string_view, FilterFn>& filter_table() {
  static const std::unordered_map<std::string_view, FilterFn> t = {
      {"safe", f_safe}, {"string", f_string}, {"trim", f_trim}, {"length", f_length}, {"count", f_length},
      {"upper", f_upper}, {"lower", f_lower}, {"title", f_title}, {"capitalize", f_capitalize},
      {"default", f_default}, {"d", f_default}, {"tojson", f_tojson}, {"join", f_join}, {"first", f_first},
      {"last", f_last}, {"list", f_list}, {"reverse", f_reverse}, {"items", f_items}, {"int", f_int},
      {"float", f_float}, {"abs", f_abs}, {"round", f_round}, {"replace", f_replace}, {"indent", f_indent},
      {"escape", f_escape}, {"e", f_escape}, {"select", f_select}, {"reject", f_reject},
      {"selectattr", f_selectattr}, {"rejectattr", f_rejectattr}, {"map", f_map}, {"unique", f_unique},
      {"sort", f_sort}, {"sum", f_sum}, {"min", f_min}, {"max", f_max}, {"dictsort", f_dictsort},
  };
  return t;
}

}  // namespace

FilterFn find_filter(std::string_view name) {
  const auto& t = filter_table();
  const auto it = t.find(name);
  return it == t.end() ? nullptr : it->second;
}

TestFn find_test(std::string_view name) {
  const auto& t = test_table();
  const auto it = t.find(name);
  return it == t.end() ? nullptr : it->second;
}

Value apply_filter(const std::string& name, const Value& v, const Args& a, int line) {
  const FilterFn f = find_filter(name);
  if (!f) error_at(line, fmt::format("unknown filter '{}'", name));
  return f(v, a, line);
}

bool apply_test(const std::string& name, const Value& v, const Args& a, int line) {
  const TestFn t = find_test(name);
  if (!t) error_at(line, fmt::format("unknown test '{}'", name));
  return t(v, a, line);
}

}  // namespace ranklm::jinja::detail
