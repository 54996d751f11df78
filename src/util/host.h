// This machine's host name, for messages and lock files ("unknown-host" when it cannot be read).
#pragma once

#include <unistd.h>

#include <string>

namespace ranklm {

inline std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

}  // namespace ranklm
