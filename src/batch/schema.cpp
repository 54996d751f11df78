#include "batch/schema.h"

#include <fmt/format.h>

#include <set>
#include <string_view>

#include "batch/prompts.h"

namespace ranklm::batch {

namespace {

using json = nlohmann::ordered_json;

const std::set<std::string_view> kAnnotations = {"title", "description", "default", "examples", "$schema", "$id",
                                                 "$comment", "deprecated", "readOnly", "writeOnly"};
const std::set<std::string_view> kCounts = {"minProperties", "maxProperties", "minItems", "maxItems", "minLength",
                                            "maxLength"};
const std::set<std::string_view> kBounds = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
const std::set<std::string_view> kTypes = {"object", "array", "string", "number", "integer", "boolean", "null"};
const std::set<std::string_view> kFormats = {"date", "time", "date-time", "duration", "email", "hostname", "ipv4", "ipv6",
                                             "uri", "uri-reference", "uri-template", "uuid", "json-pointer",
                                             "relative-json-pointer"};

struct SchemaError {
  std::string message;
};

class Walker {
 public:
  void node(const json& s, const std::string& at, int depth) {
    if (depth > kMaxSchemaDepth) {
      throw SchemaError{fmt::format("the schema nests subschemas deeper than {} levels (at {})", kMaxSchemaDepth, at)};
    }
    if (++nodes_ > kMaxSchemaNodes) throw SchemaError{fmt::format("the schema has more than {} subschemas", kMaxSchemaNodes)};
    if (s.is_boolean()) return;
    if (!s.is_object()) throw SchemaError{fmt::format("{} must be a schema (an object or a boolean)", at)};
    for (const auto& [key, v] : s.items()) keyword(key, v, at, depth);
  }

 private:
  void keyword(const std::string& key, const json& v, const std::string& at, int depth) {
    const std::string here = at + "/" + key;
    auto expect = [&](bool ok, const char* what) {
      if (!ok) throw SchemaError{fmt::format("{} must be {}", here, what)};
    };
    if (kAnnotations.count(key)) return;
    if (kCounts.count(key)) return expect(v.is_number_unsigned(), "a non-negative integer");
    if (kBounds.count(key)) return expect(v.is_number(), "a number");
    if (key == "type") {
      const bool one = v.is_string() && kTypes.count(v.get<std::string>());
      bool list = v.is_array() && !v.empty();
      for (const json& t : list ? v : json::array()) list = list && t.is_string() && kTypes.count(t.get<std::string>());
      return expect(one || list, "a JSON type (object, array, string, number, integer, boolean, null) or a list of them");
    }
    if (key == "properties" || key == "$defs" || key == "definitions") {
      expect(v.is_object(), "an object of schemas");
      for (const auto& [name, sub] : v.items()) node(sub, here + "/" + name, depth + 1);
      return;
    }
    if (key == "required") {
      bool ok = v.is_array();
      for (const json& n : ok ? v : json::array()) ok = ok && n.is_string();
      return expect(ok, "an array of property names");
    }
    if (key == "additionalProperties" || key == "items") return node(v, here, depth + 1);
    if (key == "prefixItems" || key == "anyOf" || key == "oneOf" || key == "allOf") {
      expect(v.is_array() && !v.empty(), "a non-empty array of schemas");
      for (size_t i = 0; i < v.size(); ++i) node(v[i], fmt::format("{}/{}", here, i), depth + 1);
      return;
    }
    if (key == "enum") return expect(v.is_array() && !v.empty(), "a non-empty array");
    if (key == "const") return;
    if (key == "$ref") {
      const bool ok = v.is_string() && (v == "#" || v.get<std::string>().rfind("#/$defs/", 0) == 0 ||
                                        v.get<std::string>().rfind("#/definitions/", 0) == 0);
      return expect(ok, "a reference inside the schema (\"#\", \"#/$defs/NAME\" or \"#/definitions/NAME\")");
    }
    if (key == "pattern") return expect(v.is_string(), "a regular expression (a string)");
    if (key == "format") {
      return expect(v.is_string() && kFormats.count(v.get<std::string>()),
                    "one of the formats date, time, date-time, duration, email, hostname, ipv4, ipv6, uri, "
                    "uri-reference, uri-template, uuid, json-pointer, relative-json-pointer");
    }
    throw SchemaError{fmt::format("keyword '{}' (at {}) is not supported: output would not be held to it; supported are "
                                  "type, properties, required, additionalProperties, items, prefixItems, min/maxItems, "
                                  "min/maxProperties, enum, const, anyOf, oneOf, allOf, $ref, $defs, min/maxLength, "
                                  "pattern, format, minimum, maximum, exclusiveMinimum, exclusiveMaximum and annotations",
                                  key.size() > 64 ? key.substr(0, 64) + "..." : key, at)};
  }

  int nodes_ = 0;
};

}  // namespace

std::string check_json_schema(const json& schema) {
  try {
    Walker().node(schema, "#", 0);
    return "";
  } catch (const SchemaError& e) {
    return e.message;
  }
}

}  // namespace ranklm::batch
