// JSON read from files a user gives (plan.json, inventories, manifests): read whole with a size
// bound, nesting checked before parsing (nothing then recurses over an attacker's depth), and
// errors that name the file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/read_file.h"

namespace ranklm {

// Whether a JSON text nests arrays and objects deeper than max_depth (strings are skipped).
inline bool json_deeper_than(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// Parses `text` (from `what`, for messages) as JSON of at most 64 levels.
inline nlohmann::json parse_json_bounded(std::string_view text, const std::string& what) {
  if (json_deeper_than(text, 64)) fail("{}: JSON nested deeper than 64 levels", what);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) fail("{}: not valid JSON", what);
  return j;
}

// A JSON file of at most 64 MiB.
inline nlohmann::json read_json_file(const std::string& path, const char* role) {
  return parse_json_bounded(read_whole_file(path, role, uint64_t{64} << 20), path);
}

}  // namespace ranklm
