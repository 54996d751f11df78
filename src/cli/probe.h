// The job's inventory, gathered under mpirun for `ranklm plan`: every rank probes its machine
// (hwloc) and measures its read bandwidth with its threads (the median of 5 rounds all ranks run
// together, each after a barrier); the first rank of each host times ping-pong latency and
// bandwidth to every other host's first rank, and to the second rank of its own host (medians of
// round trips timed one by one, one pair at a time); every rank also times its read bandwidth
// alone on its machine (its machine's ranks take turns) and its batched compute rate. Rank 0
// gets the result. Medians and the placement's speed classes make the same cluster give the same
// plan, run after run.
#pragma once

#include <string>

#include "comm/comm.h"
#include "plan/placement.h"

namespace ranklm::cli {

// Collective: every rank calls it. Returns the inventory on rank 0 (empty elsewhere).
// xml: describe this hwloc XML topology instead of the machine (tests).
plan::Inventory gather_inventory(comm::Comm& c, int threads, const std::string& xml);

// Ranks of one machine with the same cores and NUMA nodes get the median of their measured
// speeds (their differences are noise); returns a warning when those differed by over 25%, or
// "" (gather_inventory prints it).
std::string steady_identical_ranks(plan::Inventory& inv);

}  // namespace ranklm::cli
