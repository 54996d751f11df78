#include "cli/probe.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <tuple>
#include <vector>

#include "kernels/stream.h"
#include "sys/cpu_binding.h"
#include "sys/inventory.h"

namespace ranklm::cli {

namespace {

using clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// Round trips between this rank and `peer`, each timed on its own: the initiator's median
// one-way latency (8-byte messages) and bandwidth (4 MiB messages). Medians, so one stall (a
// daemon waking, a retransmission) does not decide a plan.
plan::HostLink ping_pong(comm::Comm& c, int peer, bool initiator) {
  constexpr int kSmall = 40, kLarge = 5;
  std::vector<uint8_t> small(8, 1), large(size_t{4} << 20, 2);
  plan::HostLink l;
  auto rounds = [&](std::vector<uint8_t>& buf, int n) {
    std::vector<double> t;
    for (int i = 0; i < n; ++i) {
      const auto t0 = clock::now();
      if (initiator) {
        c.send(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a ping");
        c.recv(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a pong");
      } else {
        c.recv(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a ping");
        c.send(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a pong");
      }
      t.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    }
    return median(t);  // seconds per round trip
  };
  rounds(small, 5);  // warm-up (connection set-up)
  l.latency_us = rounds(small, kSmall) / 2 * 1e6;
  l.bandwidth_gbps = 2.0 * static_cast<double>(large.size()) / rounds(large, kLarge) / 1e9;
  return l;
}

// Every rank waits here until all have arrived (rank 0 gathers a byte and answers each).
void barrier(comm::Comm& c) {
  uint8_t b = 0;
  if (c.rank() == 0) {
    for (int r = 1; r < c.size(); ++r) c.recv(&b, 1, r, comm::Tag::kProbe, "a rank's arrival at the probe barrier");
    for (int r = 1; r < c.size(); ++r) c.send(&b, 1, r, comm::Tag::kProbe, "the probe barrier's release");
  } else {
    c.send(&b, 1, 0, comm::Tag::kProbe, "this rank's arrival at the probe barrier");
    c.recv(&b, 1, 0, comm::Tag::kProbe, "the probe barrier's release");
  }
}

// Read bandwidth with this rank's threads: the median of several rounds that every rank runs
// at the same time (ranks sharing a machine's memory see each other, as they will in the job).
// Rounds that range widely mean something else ran meanwhile: the rank says so.
double read_speed(comm::Comm& c, kern::ThreadPool& pool) {
  constexpr int kRounds = 5;
  std::vector<double> v;
  for (int i = 0; i < kRounds; ++i) {
    barrier(c);
    v.push_back(kern::measure_read_bandwidth(pool, size_t{256} << 20, 1) / 1e9);
  }
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  if (*lo > 0 && *hi / *lo > 1.5) {
    std::fprintf(stderr, "ranklm plan: warning: rank %d (host %s): its read-bandwidth rounds ranged %.1f..%.1f GB/s: "
                 "another program is probably using the machine; the plan uses the median, but rerun on a quiet "
                 "machine for a plan to keep\n", c.rank(), c.host(c.rank()).c_str(), *lo, *hi);
  }
  return median(v);
}

// Every rank's read bandwidth while no other rank of its machine reads: on each machine its
// ranks take turns (machines at once), 3 rounds each, the median; rank 0 gets them into inv.
void solo_speeds(comm::Comm& c, kern::ThreadPool& pool, plan::Inventory& inv) {
  std::map<std::string, int> on;
  int index = 0;
  for (const plan::RankInfo& r : inv.ranks) {
    if (r.rank == c.rank()) index = on[r.machine_key()];
    ++on[r.machine_key()];
  }
  int most = 0;
  for (const auto& [m, k] : on) most = std::max(most, k);
  std::vector<double> v;
  for (int turn = 0; turn < most; ++turn) {
    for (int rep = 0; rep < 3; ++rep) {
      barrier(c);
      if (turn == index) v.push_back(kern::measure_read_bandwidth(pool, size_t{256} << 20, 1) / 1e9);
    }
  }
  double solo = median(v);
  if (c.rank() != 0) {
    c.send(&solo, sizeof solo, 0, comm::Tag::kProbe, "this rank's solo read speed");
    return;
  }
  inv.ranks[0].solo_speed_gbps = solo;
  for (int r = 1; r < c.size(); ++r) {
    c.recv(&solo, sizeof solo, r, comm::Tag::kProbe, "a rank's solo read speed");
    inv.ranks[static_cast<size_t>(r)].solo_speed_gbps = solo;
  }
}

}  // namespace

std::string steady_identical_ranks(plan::Inventory& inv) {
  // Ranks of one machine with the same cores and NUMA nodes are the same hardware: differences
  // between their measurements are noise (another program, a frequency step), and a plan that
  // followed them would split layers 29/1 where 22/8 is right. They get the group's median, and
  // a spread over 25% is reported.
  std::map<std::tuple<std::string, int, int>, std::vector<size_t>> groups;
  for (size_t i = 0; i < inv.ranks.size(); ++i) {
    const plan::RankInfo& r = inv.ranks[i];
    groups[{r.machine_key(), r.cores, r.numa_nodes}].push_back(i);
  }
  std::string note;
  for (const auto& group : groups) {
    const std::vector<size_t>& idx = group.second;  // (a named reference: clang 14 cannot capture bindings)
    if (idx.size() < 2) continue;
    auto settle = [&](double plan::RankInfo::*field, const char* what) {
      std::vector<double> v;
      for (size_t i : idx) v.push_back(inv.ranks[i].*field);
      const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
      if (*lo > 0 && *hi / *lo > 1.25 && note.empty()) {
        note = fmt::format("the {} ranks of host {} measured {} from {:.1f} to {:.1f} on the same hardware: another "
                           "program was probably using the machine. The plan takes their median; rerun on a quiet "
                           "machine for a plan to keep", idx.size(), inv.ranks[idx[0]].host, what, *lo, *hi);
      }
      const double m = median(v);
      for (size_t i : idx) inv.ranks[i].*field = m;
    };
    settle(&plan::RankInfo::speed_gbps, "read bandwidths (GB/s)");
    settle(&plan::RankInfo::solo_speed_gbps, "solo read bandwidths (GB/s)");
    settle(&plan::RankInfo::compute_gmacs, "compute rates (G multiply-adds/s)");
    for (const auto& [type, rate] : inv.ranks[idx[0]].decode_gmacs) {  // each type's one-token rate: the median too
      std::vector<double> v;
      for (size_t i : idx) v.push_back(inv.ranks[i].decode_gmacs.count(type) ? inv.ranks[i].decode_gmacs.at(type) : rate);
      const double m = median(v);
      for (size_t i : idx) inv.ranks[i].decode_gmacs[type] = m;
    }
  }
  return note;
}

plan::Inventory gather_inventory(comm::Comm& c, int threads, const std::string& xml) {
  plan::RankInfo me = sys::probe_topology(xml);
  me.rank = c.rank();
  me.host = c.host(c.rank());
  kern::ThreadPool pool(threads, sys::core_binder(threads));  // the probe's measurements share it
  me.speed_gbps = read_speed(c, pool);
  barrier(c);
  me.compute_gmacs = kern::measure_compute_rate(pool) / 1e9;
  for (const kern::GgmlType t : {kern::GgmlType::Q4_0, kern::GgmlType::Q4_1, kern::GgmlType::Q8_0, kern::GgmlType::Q4_K,
                                 kern::GgmlType::Q5_K, kern::GgmlType::Q6_K}) {
    me.decode_gmacs[std::string(kern::type_name(t))] = kern::measure_decode_rate(pool, t) / 1e9;
  }
  // Every rank's report to rank 0, then the whole list back to everyone (for the host leaders).
  plan::Inventory inv;
  if (c.rank() == 0) {
    inv.ranks.push_back(me);
    for (int r = 1; r < c.size(); ++r) {
      plan::Inventory one = plan::inventory_from_json(nlohmann::json::parse(c.recv_string(r, comm::Tag::kProbe, "a rank's inventory")),
                                                      fmt::format("rank {}'s inventory", r));
      one.ranks[0].rank = r;
      inv.ranks.push_back(one.ranks[0]);
    }
    const std::string all = plan::inventory_to_json(inv).dump();
    for (int r = 1; r < c.size(); ++r) c.send_string(all, r, comm::Tag::kProbe, "delivery of the inventory");
  } else {
    plan::Inventory one;
    one.ranks.push_back(me);
    one.ranks[0].rank = 0;  // the list format numbers ranks from 0
    c.send_string(plan::inventory_to_json(one).dump(), 0, comm::Tag::kProbe, "delivery of this rank's inventory");
    inv = plan::inventory_from_json(nlohmann::json::parse(c.recv_string(0, comm::Tag::kProbe, "the inventory")), "the inventory");
  }
  solo_speeds(c, pool, inv);
  // Host leaders (first rank of each host) time every pair, in one global order.
  std::vector<int> leaders;
  std::vector<std::string> seen;
  for (const plan::RankInfo& r : inv.ranks) {
    if (std::find(seen.begin(), seen.end(), r.host) == seen.end()) {
      seen.push_back(r.host);
      leaders.push_back(r.rank);
    }
  }
  std::vector<std::pair<std::pair<std::string, std::string>, plan::HostLink>> mine;
  // One pair at a time (a barrier before each): pairs timed at once would share links and
  // slow each other down.
  for (size_t a = 0; a < leaders.size(); ++a) {
    for (size_t b = a + 1; b < leaders.size(); ++b) {
      barrier(c);
      if (c.rank() == leaders[a]) {
        mine.push_back({{inv.ranks[static_cast<size_t>(leaders[a])].host, inv.ranks[static_cast<size_t>(leaders[b])].host},
                        ping_pong(c, leaders[b], true)});
      } else if (c.rank() == leaders[b]) {
        ping_pong(c, leaders[a], false);
      }
    }
  }
  // A host's own link (its first two ranks), for TP groups inside it.
  for (const int leader : leaders) {
    const std::string& h = inv.ranks[static_cast<size_t>(leader)].host;
    int second = -1;
    for (const plan::RankInfo& r : inv.ranks) {
      if (r.host == h && r.rank != leader) {
        second = r.rank;
        break;
      }
    }
    if (second < 0) continue;
    barrier(c);
    if (c.rank() == leader) mine.push_back({{h, h}, ping_pong(c, second, true)});
    if (c.rank() == second) ping_pong(c, leader, false);
  }
  // Leaders report their links to rank 0.
  auto add = [&](const std::pair<std::string, std::string>& k, const plan::HostLink& l) {
    inv.links[k.first < k.second ? k : std::make_pair(k.second, k.first)] = l;
  };
  if (c.rank() == 0) {
    for (const auto& [k, l] : mine) add(k, l);
    for (size_t a = 1; a < leaders.size(); ++a) {
      const nlohmann::json j = nlohmann::json::parse(c.recv_string(leaders[a], comm::Tag::kProbe, "a host's link times"));
      for (const auto& x : j) add({x.at(0).get<std::string>(), x.at(1).get<std::string>()}, {x.at(2).get<double>(), x.at(3).get<double>()});
    }
    if (const std::string note = steady_identical_ranks(inv); !note.empty()) {
      std::fprintf(stderr, "ranklm plan: warning: %s\n", note.c_str());
    }
    return inv;
  }
  if (std::find(leaders.begin(), leaders.end(), c.rank()) != leaders.end()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& [k, l] : mine) j.push_back({k.first, k.second, l.latency_us, l.bandwidth_gbps});
    c.send_string(j.dump(), 0, comm::Tag::kProbe, "delivery of link times");
  }
  return {};
}

}  // namespace ranklm::cli
