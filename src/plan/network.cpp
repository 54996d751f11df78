#include "plan/network.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include "util/error.h"

namespace ranklm::plan {

namespace {

constexpr double kMinSiteUs = 200;      // links faster than this never separate sites
constexpr double kDefaultSiteUs = 1000;  // without a clear jump: a millisecond is no LAN
constexpr double kMinJump = 4;           // a jump in sorted latencies that separates sites

// Hosts in order of their first rank.
std::vector<std::string> hosts_by_rank(const Inventory& inv) {
  std::vector<std::string> hosts;
  for (const RankInfo& r : inv.ranks) {
    if (std::find(hosts.begin(), hosts.end(), r.host) == hosts.end()) hosts.push_back(r.host);
  }
  return hosts;
}

double site_threshold(const Inventory& inv, const std::vector<std::string>& hosts) {
  std::vector<double> lat;
  for (size_t a = 0; a < hosts.size(); ++a) {
    for (size_t b = a + 1; b < hosts.size(); ++b) {
      if (const HostLink* l = inv.link(hosts[a], hosts[b])) lat.push_back(std::max(l->latency_us, 1.0));
    }
  }
  if (lat.empty()) return 0;
  std::sort(lat.begin(), lat.end());
  double thr = kDefaultSiteUs, best = kMinJump;
  for (size_t i = 0; i + 1 < lat.size(); ++i) {
    const double jump = lat[i + 1] / lat[i];
    if (jump >= best) best = jump, thr = std::sqrt(lat[i] * lat[i + 1]);
  }
  return std::max(thr, kMinSiteUs);
}

int find_root(std::vector<int>& parent, int i) {
  while (parent[static_cast<size_t>(i)] != i) i = parent[static_cast<size_t>(i)] = parent[static_cast<size_t>(parent[static_cast<size_t>(i)])];
  return i;
}

}  // namespace

int Sites::site_of(const std::string& host) const {
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (hosts[i] == host) return site[i];
  }
  fail("host {} is not in the inventory", host);
}

Sites find_sites(const Inventory& inv, double site_latency_us) {
  const std::vector<std::string> hosts = hosts_by_rank(inv);
  const int n = static_cast<int>(hosts.size());
  Sites s;
  s.threshold_us = site_latency_us > 0 ? site_latency_us : site_threshold(inv, hosts);
  // Single linkage: hosts joined by a link below the threshold share a site.
  std::vector<int> parent(static_cast<size_t>(n));
  std::iota(parent.begin(), parent.end(), 0);
  for (int a = 0; a < n; ++a) {
    for (int b = a + 1; b < n; ++b) {
      const HostLink* l = inv.link(hosts[static_cast<size_t>(a)], hosts[static_cast<size_t>(b)]);
      if (s.threshold_us == 0 || (l && l->latency_us < s.threshold_us)) {
        parent[static_cast<size_t>(find_root(parent, b))] = find_root(parent, a);
      }
    }
  }
  // Components in order of their first host; the distance between two is their closest link.
  std::vector<int> comp_of(static_cast<size_t>(n)), roots;
  for (int i = 0; i < n; ++i) {
    const int r = find_root(parent, i);
    auto it = std::find(roots.begin(), roots.end(), r);
    comp_of[static_cast<size_t>(i)] = static_cast<int>(it - roots.begin());
    if (it == roots.end()) roots.push_back(r);
  }
  const int nc = static_cast<int>(roots.size());
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> dist(static_cast<size_t>(nc), std::vector<double>(static_cast<size_t>(nc), inf));
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      const HostLink* l = a == b ? nullptr : inv.link(hosts[static_cast<size_t>(a)], hosts[static_cast<size_t>(b)]);
      double& d = dist[static_cast<size_t>(comp_of[static_cast<size_t>(a)])][static_cast<size_t>(comp_of[static_cast<size_t>(b)])];
      if (l) d = std::min(d, l->latency_us);
    }
  }
  // The pipeline starts in rank 0's site (component 0: rank 0's host comes first) and goes on
  // to the nearest site not yet visited (ties: the one whose first rank comes first).
  std::vector<int> order{0};
  std::vector<bool> done(static_cast<size_t>(nc), false);
  done[0] = true;
  while (static_cast<int>(order.size()) < nc) {
    int next = -1;
    for (int c = 0; c < nc; ++c) {
      if (done[static_cast<size_t>(c)]) continue;
      if (next < 0 || dist[static_cast<size_t>(order.back())][static_cast<size_t>(c)] <
                          dist[static_cast<size_t>(order.back())][static_cast<size_t>(next)]) {
        next = c;
      }
    }
    done[static_cast<size_t>(next)] = true;
    order.push_back(next);
  }
  s.n_sites = nc;
  for (int k = 0; k < nc; ++k) {
    for (int i = 0; i < n; ++i) {
      if (comp_of[static_cast<size_t>(i)] != order[static_cast<size_t>(k)]) continue;
      s.hosts.push_back(hosts[static_cast<size_t>(i)]);
      s.site.push_back(k);
    }
  }
  return s;
}

namespace {

// Ranks in pipeline order, chunked into groups of tp.
std::vector<std::vector<int>> chunk(const std::vector<int>& ranks, int tp) {
  std::vector<std::vector<int>> groups;
  for (size_t i = 0; i + static_cast<size_t>(tp) <= ranks.size(); i += static_cast<size_t>(tp)) {
    std::vector<int> g(ranks.begin() + static_cast<std::ptrdiff_t>(i), ranks.begin() + static_cast<std::ptrdiff_t>(i) + tp);
    std::sort(g.begin(), g.end());
    groups.push_back(g);
  }
  return groups;
}

void check_group(const Inventory& inv, const std::vector<int>& g, int tp, int per_host, double tp_latency_us) {
  std::set<std::string> hs;
  for (int r : g) hs.insert(inv.ranks[static_cast<size_t>(r)].host);
  const std::vector<std::string> v(hs.begin(), hs.end());
  for (size_t a = 0; a < v.size(); ++a) {
    for (size_t b = a + 1; b < v.size(); ++b) {
      const HostLink* l = inv.link(v[a], v[b]);
      if (tp_latency_us <= 0 || !l || l->latency_us > tp_latency_us) {
        fail("TP {} would put ranks of {} and {} in one group{}; TP runs inside a host (use --tp {} or less, or "
             "--tp-latency-us above their measured latency to allow it)",
             tp, v[a], v[b], l ? fmt::format(" ({:.1f} us apart)", l->latency_us) : std::string(" (no measured link)"),
             per_host);
      }
    }
  }
}

}  // namespace

int ranks_per_host(const Inventory& inv) {
  std::map<std::string, int> on;
  for (const RankInfo& r : inv.ranks) ++on[r.host];
  int per_host = 0;
  for (const auto& [h, k] : on) per_host = std::gcd(per_host, k);
  return per_host;
}

std::vector<std::vector<int>> form_tp_groups(const Inventory& inv, const Sites& sites, int tp, double tp_latency_us) {
  const int n = static_cast<int>(inv.ranks.size());
  if (tp < 1 || n % tp != 0) fail("{} ranks cannot form TP groups of {}; start a multiple of {} ranks", n, tp, tp);
  std::map<std::string, std::vector<int>> on;
  for (const RankInfo& r : inv.ranks) on[r.host].push_back(r.rank);
  const int per_host = ranks_per_host(inv);
  std::vector<std::vector<int>> groups;
  if (per_host % tp == 0) {  // inside hosts
    for (const std::string& h : sites.hosts) {
      for (auto& g : chunk(on[h], tp)) groups.push_back(std::move(g));
    }
    return groups;
  }
  // Across hosts: inside each site when its ranks make whole groups, else along the pipeline.
  std::vector<std::vector<int>> per_site(static_cast<size_t>(sites.n_sites));
  std::vector<int> all;
  for (size_t i = 0; i < sites.hosts.size(); ++i) {
    const std::vector<int>& rs = on[sites.hosts[i]];
    per_site[static_cast<size_t>(sites.site[i])].insert(per_site[static_cast<size_t>(sites.site[i])].end(), rs.begin(), rs.end());
    all.insert(all.end(), rs.begin(), rs.end());
  }
  const bool whole = std::all_of(per_site.begin(), per_site.end(), [&](const std::vector<int>& v) { return v.size() % static_cast<size_t>(tp) == 0; });
  if (whole) {
    for (const auto& v : per_site) {
      for (auto& g : chunk(v, tp)) groups.push_back(std::move(g));
    }
  } else {
    groups = chunk(all, tp);
  }
  for (const auto& g : groups) check_group(inv, g, tp, per_host, tp_latency_us);
  return groups;
}

}  // namespace ranklm::plan
