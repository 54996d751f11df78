// Binding a rank's compute threads to cores with hwloc, so each thread keeps its core (and its
// caches) for the whole run and the threads of a pool stream memory from different cores.
#pragma once

#include <string>

#include "kernels/threadpool.h"

namespace ranklm {

// The start hook for a pool of n_threads: thread i is bound to core (offset + i) of the cores
// this process may run on (its cpuset, e.g. what mpirun --bind-to or Slurm gave it), wrapping
// when there are more threads than cores. When the process may run on the whole machine and a
// launcher names its local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID), offset is
// local rank * n_threads, so unbound ranks on one host do not pile onto the same cores.
//
// RANKLM_BIND=none turns binding off (returns an empty hook). Failures to read the topology or
// to bind leave threads unbound; `note`, when given, receives a one-line description.
kern::ThreadPool::StartFn core_binder(int n_threads, std::string* note = nullptr);

}  // namespace ranklm
