// Identifiers unique per request (OpenAI's "chatcmpl-…", "batch_req_…"): 96 random bits from
// the kernel (getrandom), so two runs, two restarts of a server or two jobs never repeat one.
// Where getrandom fails, the time in nanoseconds, the process id and a counter stand in.
#pragma once

#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace ranklm {

inline std::string unique_id(std::string_view prefix) {
  uint32_t w[3] = {0, 0, 0};
  if (getrandom(w, sizeof w, 0) != static_cast<ssize_t>(sizeof w)) {
    static std::atomic<uint32_t> counter{0};
    const auto ns = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    w[0] = static_cast<uint32_t>(ns);
    w[1] = static_cast<uint32_t>(ns >> 32) ^ (static_cast<uint32_t>(getpid()) << 8);
    w[2] = counter.fetch_add(1, std::memory_order_relaxed);
  }
  return fmt::format("{}{:08x}{:08x}{:08x}", prefix, w[0], w[1], w[2]);
}

}  // namespace ranklm
