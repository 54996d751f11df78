#include "cli/watchdog.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
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

// Field 22 of /proc/PID/stat (start time): with the pid, it names one process for good.
std::string start_time(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return "";
  size_t pos = close + 2;
  for (int field = 3; field < 22 && pos != std::string::npos; ++field) pos = s.find(' ', pos) + 1;
  return pos == std::string::npos || pos == 0 ? "" : s.substr(pos, s.find(' ', pos) - pos);
}

// Async-signal-safe pieces for the forked guard (the rank is multi-threaded).
bool same_process(pid_t pid, const char* stat_path, const char* start) {
  char buf[1024];
  const int fd = ::open(stat_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  for (int field = 2; p && field < 22; ++field) p = std::strchr(p + 1, ' ');
  const size_t len = std::strlen(start);
  return p && std::strncmp(p + 1, start, len) == 0 && p[1 + len] == ' ' && ::kill(pid, 0) == 0;
}

void sleep_s(double s) {
  timespec t{static_cast<time_t>(s), static_cast<long>((s - static_cast<double>(static_cast<time_t>(s))) * 1e9)};
  while (::nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

double abort_grace_s() {
  if (const char* s = std::getenv("RANKLM_ABORT_GRACE"); s && *s) {
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    if (end != s && *end == '\0' && v >= 0 && v < 1e6) return v;
  }
  return 30;
}

}  // namespace

void Watchdog::guard_launcher_exit(const std::string& cmd) {
  const pid_t parent = ::getppid();
  std::ifstream comm_file("/proc/" + std::to_string(parent) + "/comm");
  std::string launcher;
  std::getline(comm_file, launcher);
  if (launcher != "mpirun" && launcher != "mpiexec" && launcher != "orterun" && launcher != "prterun") return;
  const std::string start = start_time(parent);
  if (start.empty()) return;
  const double grace = abort_grace_s();
  // Everything the guard needs, prepared before fork (after it, only async-signal-safe calls).
  const std::string stat_path = "/proc/" + std::to_string(parent) + "/stat";
  const std::string err_path = "/proc/" + std::to_string(parent) + "/fd/2";
  const std::string msg = fmt::format(
      "ranklm {}: {} (pid {}) has not ended the job {:.0f} s after rank {} on host {} aborted it: it is waiting for a "
      "host it cannot reach (see the error above). Ending {} (RANKLM_ABORT_GRACE sets the wait; docs/CLUSTER.md)\n",
      cmd, launcher, static_cast<int>(parent), grace, env_rank(), host_name(), launcher);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child < 0) return;
  if (child > 0) {
    while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
    }
    return;
  }
  // The guard: its own session (the launcher's signals to the rank do not reach it), no file of
  // the rank held open (a results file's lock, mpirun's output pipes: mpirun waits for those).
  ::setsid();
  if (::fork() != 0) ::_exit(0);  // the grandchild is nobody's zombie
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, 0U, ~0U, 0) != 0)
#endif
  {
    for (int fd = 0; fd < 65536; ++fd) ::close(fd);
  }
  for (double waited = 0; waited < grace; waited += 0.5) {
    if (!same_process(parent, stat_path.c_str(), start.c_str())) ::_exit(0);
    sleep_s(0.5);
  }
  if (!same_process(parent, stat_path.c_str(), start.c_str())) ::_exit(0);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (err >= 0) {
    const ssize_t w = ::write(err, msg.data(), msg.size());
    (void)w;
    ::close(err);
  }
  ::kill(parent, SIGTERM);
  for (int i = 0; i < 10 && same_process(parent, stat_path.c_str(), start.c_str()); ++i) sleep_s(0.5);
  if (same_process(parent, stat_path.c_str(), start.c_str())) ::kill(parent, SIGKILL);
  ::_exit(0);
}

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
