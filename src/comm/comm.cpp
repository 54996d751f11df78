#include "comm/comm.h"

#include <cstdlib>
#include <thread>

namespace ranklm::comm {

const char* tag_name(Tag t) {
  switch (t) {
    case Tag::kHidden: return "hidden states";
    case Tag::kRing: return "allreduce segment";
    case Tag::kTokens: return "sampled tokens";
    case Tag::kLogits: return "logits";
    case Tag::kControl: return "step command";
    case Tag::kStats: return "time report";
    case Tag::kProbe: return "placement probe";
  }
  return "message";
}

bool Request::test() {
  if (!impl_) return true;
  if (!impl_->test()) return false;
  impl_.reset();
  return true;
}

Comm::Comm() : timeout_(60000) {
  if (const char* s = std::getenv("RANKLM_COMM_TIMEOUT"); s && *s) {
    char* end = nullptr;
    const double secs = std::strtod(s, &end);
    if (*end != '\0' || !(secs > 0)) fail("RANKLM_COMM_TIMEOUT: '{}' is not a number of seconds > 0", s);
    timeout_ = std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
  }
}

void Comm::wait(Request& r, const char* what) {
  if (r.test()) return;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto deadline = t0 + timeout_;
  uint32_t spins = 0;
  while (!r.test()) {
    idle();
    // Spin first (a TP collective's step is microseconds), for 1 ms at most, then back off
    // (20 us naps, 200 us after 2 ms) so a rank waiting for a slow stage does not take a core
    // from the rank computing on a shared host.
    ++spins;
    if ((spins & 15) == 0) {
      const auto waited = clock::now() - t0;
      if (waited > std::chrono::microseconds(1000)) {
        std::this_thread::sleep_for(std::chrono::microseconds(waited > std::chrono::milliseconds(2) ? 200 : 20));
      }
    }
    if ((spins & 255) == 0 && clock::now() > deadline) {
      const int p = r.peer();
      // The host's other ranks too: when a host is cut off or dead, all of them are gone.
      std::string on_host;
      for (int q = 0; q < size(); ++q) {
        if (host(q) == host(p)) on_host += (on_host.empty() ? "" : ", ") + std::to_string(q);
      }
      const std::string where = fmt::format("host {}, which runs rank{} {}", host(p), on_host.find(',') == std::string::npos ? "" : "s", on_host);
      const std::string what_happened =
          r.is_recv() ? fmt::format("no {} came from rank {} ({})", tag_name(r.tag()), p, where)
                      : fmt::format("{} sent to rank {} ({}) were not taken", tag_name(r.tag()), p, where);
      throw CommError(fmt::format("{} within {:.0f} s while waiting for {}; rank {} may have died or hung, or its "
                                  "host is unreachable (raise RANKLM_COMM_TIMEOUT if a step can take longer)",
                                  what_happened, timeout_.count() / 1000.0, what, p));
    }
  }
  wait_s_ += std::chrono::duration<double>(clock::now() - t0).count();
}

void Comm::send(const void* buf, size_t bytes, int dest, Tag tag, const char* what) {
  Request r = isend(buf, bytes, dest, tag);
  wait(r, what);
}

void Comm::recv(void* buf, size_t bytes, int src, Tag tag, const char* what) {
  Request r = irecv(buf, bytes, src, tag);
  wait(r, what);
}

void Comm::send_string(const std::string& s, int dest, Tag tag, const char* what) {
  const uint64_t n = s.size();
  send(&n, sizeof n, dest, tag, what);
  if (n > 0) send(s.data(), s.size(), dest, tag, what);
}

std::string Comm::recv_string(int src, Tag tag, const char* what) {
  uint64_t n = 0;
  recv(&n, sizeof n, src, tag, what);
  if (n > (uint64_t{1} << 31)) fail("rank {}: a {} of {} bytes from rank {} is too large (a bug)", rank(), tag_name(tag), n, src);
  std::string s(static_cast<size_t>(n), '\0');
  if (n > 0) recv(s.data(), s.size(), src, tag, what);
  return s;
}

}  // namespace ranklm::comm
