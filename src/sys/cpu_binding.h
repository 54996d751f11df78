// Binding a rank's compute threads to cores with hwloc, so each thread keeps its core (and its
// caches) for the whole run and the threads of a pool stream memory from different cores.
#pragma once

#include <string>

#include "kernels/threadpool.h"

namespace ranklm::sys {

// The start hook for a pool of n_threads: thread i is bound to core (offset + i) of the cores
// this process may run on (its cpuset, e.g. what mpirun --bind-to or Slurm gave it), wrapping
// when there are more threads than cores. When the process may run on the whole host, it binds
// only if a launcher names its local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID; offset =
// local rank * n_threads, so unbound ranks on one host do not pile onto the same cores) or the
// pool fills every core; otherwise threads stay unbound, so two lone processes on one host do
// not both crowd onto core 0.
//
// RANKLM_BIND=none never binds, RANKLM_BIND=cores always does. Failures to read the topology
// or to bind leave threads unbound; `note`, when given, receives a one-line description.
kern::ThreadPool::StartFn core_binder(int n_threads, std::string* note = nullptr);

}  // namespace ranklm::sys
