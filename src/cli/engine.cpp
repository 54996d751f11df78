#include "cli/engine.h"

#include <sched.h>

#include <cstdio>
#include <thread>

#include "cli/watchdog.h"
#include "util/error.h"

namespace ranklm::cli {

int default_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

std::unique_ptr<Engine> load_engine(comm::World& world, const ModelSource& src, int threads) {
  engine::StartupHooks hooks;
  hooks.phase = [](const char* what) { Watchdog::phase(what); };
  hooks.hold = [](bool on) { Watchdog::hold(on); };
  hooks.started = [] { Watchdog::started(); };
  hooks.start_timeout_s = Watchdog::start_timeout_s();
  return Engine::load(world.comm(), src, threads, std::move(hooks));
}

int with_world(const std::string& cmd, const std::function<int(comm::World&)>& body) {
  Watchdog watchdog(cmd);
  comm::World world;
  Watchdog::phase("start-up after MPI_Init");
  try {
    return body(world);
  } catch (const std::exception& e) {
    if (!world.is_mpi() || world.comm().size() == 1) throw;
    comm::Comm& c = world.comm();
    std::fprintf(stderr, "ranklm %s: error on rank %d (host %s): %s\n", cmd.c_str(), c.rank(), c.host(c.rank()).c_str(),
                 e.what());
    std::fflush(stderr);
    Watchdog::guard_launcher_exit(cmd);
    world.abort(1);
  }
}

comm::Payloads parse_payloads(const PayloadOptions& p) {
  auto one = [](const char* opt, const std::string& s) {
    if (s == "f32") return comm::Compression::kNone;
    if (s == "q8_0") return comm::Compression::kQ8_0;
    usage_fail("{}: '{}' is not a payload type (f32 or q8_0)", opt, s);
  };
  return {one("--allreduce", p.allreduce), one("--hops", p.hops)};
}

}  // namespace ranklm::cli
