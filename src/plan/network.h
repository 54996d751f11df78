// The network side of placement: which hosts form a site (a LAN: hosts close to each other),
// in which order the pipeline visits hosts so that it crosses each slow link as few times as
// possible, and which ranks form each tensor-parallel group. Pure functions of the inventory's
// ranks and measured links, whatever the rank order of the hostfile.
//
//   Sites:  hosts joined by links faster than a threshold (single linkage). The threshold is
//           given (--site-latency-us) or found: the largest jump (at least 4x) in the sorted
//           link latencies, and never below 200 us (hosts of one machine room differ little).
//           Hosts without a measured link between them count as one site.
//   Order:  the pipeline starts on rank 0's host (rank 0 reads prompts and embeds), visits
//           every host of a site before leaving it, and goes on to the nearest unvisited site.
//   Groups: TP groups of ranks of one host; larger groups span hosts of one site, each pair of
//           hosts in a group measured closer than tp_latency_us.
#pragma once

#include <string>
#include <vector>

#include "plan/placement.h"

namespace ranklm::plan {

struct Sites {
  std::vector<std::string> hosts;  // every host, in pipeline order
  std::vector<int> site;           // site of hosts[i]; sites numbered in pipeline order from 0
  int n_sites = 1;
  double threshold_us = 0;         // links at or above this latency join no two hosts (0: none measured)
  int site_of(const std::string& host) const;
};

// Sites and the pipeline's host order. site_latency_us > 0 fixes the threshold.
Sites find_sites(const Inventory& inv, double site_latency_us);

// TP groups of `tp` ranks in pipeline order (each group's ranks ascending, so rank 0 leads the
// first). Throws naming the hosts when a group would join hosts farther apart than
// tp_latency_us (or without a measured link), and naming the site when its ranks do not form
// whole groups.
// The largest number of ranks every host has a whole multiple of (the gcd of ranks per host).
int ranks_per_host(const Inventory& inv);

std::vector<std::vector<int>> form_tp_groups(const Inventory& inv, const Sites& sites, int tp, double tp_latency_us);

}  // namespace ranklm::plan
