#include "chat/jinja_value.h"

#include <fmt/format.h>

#include <cmath>

namespace ranklm::jinja {

const Value* Args::get(size_t idx, std::string_view name) const {
  if (idx < pos.size()) return &pos[idx];
  for (const auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return nullptr;
}

Value* ObjectData::find(std::string_view key) {
  for (auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void ObjectData::set(const std::string& key, Value v) {
  if (Value* slot = find(key)) {
    *slot = std::move(v);
  } else {
    items.emplace_back(key, std::move(v));
  }
}

Value Value::array(std::vector<Value> x) {
  Value v;
  v.kind = Kind::Array;
  v.arr = std::make_shared<std::vector<Value>>(std::move(x));
  return v;
}

Value Value::object() {
  Value v;
  v.kind = Kind::Object;
  v.obj = std::make_shared<ObjectData>();
  return v;
}

Value Value::function(Func f) {
  Value v;
  v.kind = Kind::Func;
  v.fn = std::make_shared<Func>(std::move(f));
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return integer(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return number(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> out;
      out.reserve(j.size());
      for (const auto& e : j) out.push_back(from_json(e));
      return array(std::move(out));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value o = object();
      for (const auto& [k, e] : j.items()) o.obj->items.emplace_back(k, from_json(e));
      return o;
    }
    default: return Value();
  }
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0.0;
    case Kind::String: return !s.empty();
    case Kind::Array: return !arr->empty();
    case Kind::Object: return !obj->items.empty();
    case Kind::Func: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind) {
    case Kind::Undefined: return "undefined";
    case Kind::None: return "none";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Array: return "list";
    case Kind::Object: return "dict";
    case Kind::Func: return "function";
  }
  return "?";
}

std::string python_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

namespace {

std::string py_repr_string(const std::string& s) {
  const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = use_double ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == static_cast<unsigned char>(q)) {
          out += '\\';
          out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += q;
  return out;
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void json_dump(std::string& out, const Value& v, int indent, int level) {
  const auto newline = [&](int lvl) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * lvl, ' ');
  };
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.b ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.i); return;
    case Value::Kind::Float:
      out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f > 0 ? "Infinity" : "-Infinity")
                                                         : python_float(v.f);
      return;
    case Value::Kind::String: json_string(out, v.s); return;
    case Value::Kind::Func: out += "null"; return;
    case Value::Kind::Array: {
      if (v.arr->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const auto& e : *v.arr) {
        if (!first) out += indent >= 0 ? "," : ", ";
        first = false;
        if (indent >= 0) newline(level + 1);
        json_dump(out, e, indent, level + 1);
      }
      if (indent >= 0) newline(level);
      out += ']';
      return;
    }
    case Value::Kind::Object: {
      if (v.obj->items.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (const auto& [k, e] : v.obj->items) {
        if (!first) out += indent >= 0 ? "," : ", ";
        first = false;
        if (indent >= 0) newline(level + 1);
        json_string(out, k);
        out += ": ";
        json_dump(out, e, indent, level + 1);
      }
      if (indent >= 0) newline(level);
      out += '}';
      return;
    }
  }
}

}  // namespace

std::string Value::str() const {
  switch (kind) {
    case Kind::Undefined: return "";
    case Kind::String: return s;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return b ? "True" : "False";
    case Kind::Int: return std::to_string(i);
    case Kind::Float: return python_float(f);
    case Kind::String: return py_repr_string(s);
    case Kind::Func: return "<function>";
    case Kind::Array: {
      std::string out = tuple ? "(" : "[";
      for (size_t k = 0; k < arr->size(); ++k) {
        if (k) out += ", ";
        out += (*arr)[k].repr();
      }
      if (tuple && arr->size() == 1) out += ",";
      return out + (tuple ? ")" : "]");
    }
    case Kind::Object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, e] : obj->items) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_string(k) + ": " + e.repr();
      }
      return out + "}";
    }
  }
  return "";
}

std::string Value::to_json(int indent) const {
  std::string out;
  json_dump(out, *this, indent, 0);
  return out;
}

bool values_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::Kind::Int && b.kind == Value::Kind::Int) return a.i == b.i;
    return a.as_double() == b.as_double();
  }
  if (a.kind == Value::Kind::Bool && b.is_number()) return (a.b ? 1.0 : 0.0) == b.as_double();
  if (b.kind == Value::Kind::Bool && a.is_number()) return (b.b ? 1.0 : 0.0) == a.as_double();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::Bool: return a.b == b.b;
    case Value::Kind::String: return a.s == b.s;
    case Value::Kind::Array: {
      if (a.arr->size() != b.arr->size()) return false;
      for (size_t k = 0; k < a.arr->size(); ++k) {
        if (!values_equal((*a.arr)[k], (*b.arr)[k])) return false;
      }
      return true;
    }
    case Value::Kind::Object: {
      if (a.obj->items.size() != b.obj->items.size()) return false;
      for (const auto& [k, e] : a.obj->items) {
        const Value* o = b.obj->find(k);
        if (!o || !values_equal(e, *o)) return false;
      }
      return true;
    }
    case Value::Kind::Func: return a.fn == b.fn;
    default: return false;
  }
}

}  // namespace ranklm::jinja
