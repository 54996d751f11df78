// Writing a small file whole: under a temporary name (with the process id, so processes writing
// the same file at once do not collide), then renamed, so a reader never sees half of it.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "util/error.h"

namespace ranklm {

inline void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".partial." + std::to_string(::getpid());
  {
    std::ofstream os(tmp, std::ios::trunc);
    if (!os) fail("{}: cannot write ({}); check the directory exists and is writable", tmp, std::strerror(errno));
    os << text;
    if (!os.flush()) fail("{}: write failed (check free disk space)", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace ranklm
