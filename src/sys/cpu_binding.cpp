#include "sys/cpu_binding.h"

#include <hwloc.h>

#include <cstdlib>
#include <memory>

#include <fmt/format.h>

namespace ranklm::sys {

namespace {

struct Topology {
  hwloc_topology_t topo = nullptr;
  hwloc_bitmap_t allowed = nullptr;
  ~Topology() {
    if (allowed) hwloc_bitmap_free(allowed);
    if (topo) hwloc_topology_destroy(topo);
  }
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (*end == '\0' && x >= 0 && x < (1 << 20)) ? static_cast<int>(x) : fallback;
}

}  // namespace

kern::ThreadPool::StartFn core_binder(int n_threads, std::string* note) {
  auto say = [&](const std::string& s) {
    if (note) *note = s;
  };
  const char* mode = std::getenv("RANKLM_BIND");
  const std::string m = mode ? mode : "";
  if (m == "none") {
    say("threads not bound (RANKLM_BIND=none)");
    return {};
  }
  const bool forced = m == "cores";
  // The topology and the process's cpuset are read once, before any thread is bound: binding
  // the calling thread changes what a later query of the process binding returns on Linux.
  static const std::shared_ptr<Topology> loaded = [] {
    auto t = std::make_shared<Topology>();
    if (hwloc_topology_init(&t->topo) != 0 || hwloc_topology_load(t->topo) != 0) {
      t->topo = nullptr;
      return t;
    }
    t->allowed = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(t->topo, t->allowed, HWLOC_CPUBIND_PROCESS) != 0 || hwloc_bitmap_iszero(t->allowed)) {
      hwloc_bitmap_copy(t->allowed, hwloc_topology_get_allowed_cpuset(t->topo));
    }
    return t;
  }();
  const std::shared_ptr<Topology> t = loaded;
  if (!t->topo) {
    say("threads not bound: hwloc could not read the topology");
    return {};
  }
  const int n_cores = hwloc_get_nbobjs_inside_cpuset_by_type(t->topo, t->allowed, HWLOC_OBJ_CORE);
  if (n_cores <= 0) {
    say("threads not bound: no cores in this process's cpuset");
    return {};
  }
  // Bind when it cannot crowd out others: the launcher gave this process its own cpuset, or
  // named its local rank (offset by it), or the pool fills every core anyway. A lone process
  // with fewer threads than the machine's cores stays unbound unless RANKLM_BIND=cores.
  int offset = 0;
  if (hwloc_bitmap_isequal(t->allowed, hwloc_topology_get_allowed_cpuset(t->topo))) {
    const int local = env_int("OMPI_COMM_WORLD_LOCAL_RANK", env_int("SLURM_LOCALID", -1));
    if (local >= 0) {
      offset = local * n_threads;
    } else if (n_threads < n_cores && !forced) {
      say(fmt::format("threads not bound: {} threads on a {}-core host with no launcher binding "
                      "(RANKLM_BIND=cores binds them anyway)", n_threads, n_cores));
      return {};
    }
  }
  say(fmt::format("threads bound to cores {}..{} of {} in this process's cpuset{}", offset % n_cores,
                  (offset + n_threads - 1) % n_cores, n_cores,
                  n_threads > n_cores ? " (more threads than cores: some share)" : ""));
  return [t, offset, n_cores](int index) {
    hwloc_obj_t core = hwloc_get_obj_inside_cpuset_by_type(t->topo, t->allowed, HWLOC_OBJ_CORE,
                                                           static_cast<unsigned>((offset + index) % n_cores));
    if (!core) return;
    hwloc_bitmap_t set = hwloc_bitmap_dup(core->cpuset);
    hwloc_bitmap_and(set, set, t->allowed);
    hwloc_set_cpubind(t->topo, set, HWLOC_CPUBIND_THREAD);  // best effort: unbound on failure
    hwloc_bitmap_free(set);
  };
}

}  // namespace ranklm::sys
