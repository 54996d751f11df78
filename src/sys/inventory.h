// What hwloc says about the machine a rank runs on: the cores it may use, the NUMA nodes
// under them and their memory, GPUs (and co-processors) as hwloc's I/O discovery sees them.
// With an XML topology (lstopo --of xml) it describes that machine instead, so placement can
// be tested on hosts one does not have.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace ranklm::sys {

// One rank's place: its host, the cores and memory it may use, GPUs, measured read speed.
struct RankInfo {
  int rank = 0;
  std::string host;
  int cores = 1;            // cores this rank may use
  int numa_nodes = 1;
  uint64_t memory_bytes = 0;  // memory of its NUMA node(s) (the host's when unbound)
  int gpus = 0;
  double speed_gbps = 0;    // measured read bandwidth with its threads
  double compute_gmacs = 0; // measured multiply-adds per second (batched Q4_0), 1e9; 0: not measured
  // Measured multiply-adds per second of one-token products (decode), 1e9, by weight type
  // ("Q4_K", GGUF's names): arithmetic only, the matrix in cache. Empty: not measured.
  std::map<std::string, double> decode_gmacs;
  // The physical machine (the kernel's boot id): hosts of a virtual cluster, or containers, may
  // share one, and then share its memory bandwidth. Empty: unknown (taken as the host).
  std::string machine;
  // Read bandwidth with the rank's threads while no other rank of its machine reads (what one
  // stage of a single sequence's pipeline gets); speed_gbps is with every rank reading at once.
  double solo_speed_gbps = 0;
  // The machine's key: its boot id, or the host where that is unknown.
  const std::string& machine_key() const { return machine.empty() ? host : machine; }
};

// rank and host are filled in by the caller; speed_gbps is measured separately; machine is the
// kernel's boot id. Throws
// ranklm::Error naming the file when an XML topology cannot be read.
RankInfo probe_topology(const std::string& xml_path = "");

// Binds this process's future memory allocations to the NUMA node(s) of the cores it runs on
// (first-touch pages then stay local). Returns a one-line description; does nothing on a
// single-node machine.
std::string bind_memory_to_local_numa();

}  // namespace ranklm::sys
