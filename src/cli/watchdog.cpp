#include "cli/watchdog.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "comm/mpi.h"
#include "util/host.h"

namespace ranklm::cli {

namespace {

std::atomic<const char*> g_phase{"MPI_Init"};
std::atomic<bool> g_started{false};
std::atomic<bool> g_stop{false};
std::atomic<bool> g_held{false};
std::atomic<int64_t> g_t0_ns{0};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
std::thread g_thread;

std::string env_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* s = std::getenv(v); s && *s) return s;
  }
  return "?";
}

}  // namespace

double Watchdog::start_timeout_s() {
  if (const char* s = std::getenv("RANKLM_START_TIMEOUT"); s && *s) {
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    if (end != s && *end == '\0' && v > 0 && v < 1e7) return v;
    std::fprintf(stderr, "ranklm: RANKLM_START_TIMEOUT='%s' is not a number of seconds in (0, 1e7); using 600\n", s);
  }
  return 600;
}

Watchdog::Watchdog(std::string cmd) {
  if (!comm::launched_by_mpi() || g_thread.joinable()) return;
  const pid_t parent = ::getppid();
  const double limit = start_timeout_s();
  g_t0_ns = now_ns();
  g_stop = false;
  g_thread = std::thread([cmd = std::move(cmd), parent, limit] {
    const std::string rank = env_rank(), host = host_name();
    while (!g_stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (::getppid() != parent) {
        std::fprintf(stderr, "ranklm %s: rank %s (host %s): the launcher (pid %d) is gone; ending this rank\n", cmd.c_str(),
                     rank.c_str(), host.c_str(), static_cast<int>(parent));
        std::fflush(stderr);
        ::_exit(kExitError);
      }
      const double s = static_cast<double>(now_ns() - g_t0_ns.load()) * 1e-9;
      if (!g_started.load() && !g_held.load() && s > limit) {
        std::fprintf(stderr,
                     "ranklm %s: rank %s (host %s): start-up did not finish within %.0f s (stuck at: %s); a rank is "
                     "stopped, did not start, or its file system hangs. Ending the job (RANKLM_START_TIMEOUT sets "
                     "the limit)\n",
                     cmd.c_str(), rank.c_str(), host.c_str(), limit, g_phase.load());
        std::fflush(stderr);
        ::_exit(kExitError);
      }
    }
  });
}

Watchdog::~Watchdog() {
  if (!g_thread.joinable()) return;
  g_stop = true;
  g_thread.join();
}

void Watchdog::phase(const char* what) { g_phase = what; }
void Watchdog::started() { g_started = true; }
void Watchdog::hold(bool on) {
  if (!on) g_t0_ns = now_ns();
  g_held = on;
}

}  // namespace ranklm::cli
