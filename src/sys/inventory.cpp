#include "sys/inventory.h"

#include <hwloc.h>

#include <fstream>
#include <memory>

#include "util/error.h"

namespace ranklm::sys {

namespace {

struct Topology {
  hwloc_topology_t t = nullptr;
  ~Topology() {
    if (t) hwloc_topology_destroy(t);
  }
};

}  // namespace

sys::RankInfo probe_topology(const std::string& xml_path) {
  Topology topo;
  if (hwloc_topology_init(&topo.t) != 0) fail("hwloc: cannot initialise a topology");
  hwloc_topology_set_io_types_filter(topo.t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  if (!xml_path.empty() && hwloc_topology_set_xml(topo.t, xml_path.c_str()) != 0) {
    fail("{}: not an hwloc XML topology (make one with: lstopo --of xml FILE)", xml_path);
  }
  if (hwloc_topology_load(topo.t) != 0) fail("hwloc: cannot read the {} topology", xml_path.empty() ? "machine's" : xml_path);
  sys::RankInfo info;
  // The cores this process may run on (what mpirun or Slurm bound it to); all of them for an
  // XML description of another machine.
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  if (!xml_path.empty() || hwloc_get_cpubind(topo.t, set, HWLOC_CPUBIND_PROCESS) != 0 || hwloc_bitmap_iszero(set)) {
    hwloc_bitmap_copy(set, hwloc_topology_get_topology_cpuset(topo.t));
  }
  info.cores = std::max(1, hwloc_get_nbobjs_inside_cpuset_by_type(topo.t, set, HWLOC_OBJ_CORE));
  // NUMA nodes under those cores, and their memory.
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  hwloc_cpuset_to_nodeset(topo.t, set, nodes);
  info.numa_nodes = 0;
  info.memory_bytes = 0;
  for (hwloc_obj_t n = hwloc_get_next_obj_by_type(topo.t, HWLOC_OBJ_NUMANODE, nullptr); n;
       n = hwloc_get_next_obj_by_type(topo.t, HWLOC_OBJ_NUMANODE, n)) {
    if (!hwloc_bitmap_isset(nodes, static_cast<unsigned>(n->os_index))) continue;
    ++info.numa_nodes;
    info.memory_bytes += n->attr->numanode.local_memory;
  }
  if (info.memory_bytes == 0) info.memory_bytes = hwloc_get_root_obj(topo.t)->total_memory;
  info.numa_nodes = std::max(1, info.numa_nodes);
  hwloc_bitmap_free(nodes);
  hwloc_bitmap_free(set);
  // GPUs and co-processors (CUDA, OpenCL, ...), as OS devices.
  for (hwloc_obj_t d = hwloc_get_next_osdev(topo.t, nullptr); d; d = hwloc_get_next_osdev(topo.t, d)) {
    if (d->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC ||
        (d->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU && d->subtype && std::string(d->subtype) != "Display")) {
      ++info.gpus;
    }
  }
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::getline(boot, info.machine);
  return info;
}

std::string bind_memory_to_local_numa() {
  Topology topo;
  if (hwloc_topology_init(&topo.t) != 0 || hwloc_topology_load(topo.t) != 0) return "memory not bound: no topology";
  if (hwloc_get_nbobjs_by_type(topo.t, HWLOC_OBJ_NUMANODE) <= 1) return "memory not bound: one NUMA node";
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  std::string note;
  if (hwloc_get_cpubind(topo.t, set, HWLOC_CPUBIND_PROCESS) != 0 ||
      hwloc_bitmap_isequal(set, hwloc_topology_get_topology_cpuset(topo.t))) {
    note = "memory not bound: the process may run on every core";
  } else if (hwloc_set_membind(topo.t, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_PROCESS) != 0) {
    note = "memory not bound: hwloc_set_membind failed";
  } else {
    hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
    hwloc_cpuset_to_nodeset(topo.t, set, nodes);
    char* s = nullptr;
    hwloc_bitmap_list_asprintf(&s, nodes);
    note = std::string("memory bound to NUMA node(s) ") + (s ? s : "?");
    free(s);
    hwloc_bitmap_free(nodes);
  }
  hwloc_bitmap_free(set);
  return note;
}

}  // namespace ranklm::sys
