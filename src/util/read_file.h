// A whole file's bytes (prompt files, results files, chat templates).
#pragma once

#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace ranklm {

// nullopt when the file cannot be opened or read.
inline std::optional<std::string> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return std::move(ss).str();
}

}  // namespace ranklm
