#include "cli/probe.h"

#include <chrono>
#include <vector>

#include "kernels/stream.h"
#include "sys/cpu_binding.h"
#include "sys/inventory.h"

namespace ranklm::cli {

namespace {

using clock = std::chrono::steady_clock;

// Round trips between this rank and `peer`: the initiator's measurement of one-way latency
// (8-byte messages) and bandwidth (4 MiB messages).
plan::HostLink ping_pong(comm::Comm& c, int peer, bool initiator) {
  constexpr int kSmall = 50, kLarge = 4;
  std::vector<uint8_t> small(8, 1), large(size_t{4} << 20, 2);
  plan::HostLink l;
  auto rounds = [&](std::vector<uint8_t>& buf, int n) {
    const auto t0 = clock::now();
    for (int i = 0; i < n; ++i) {
      if (initiator) {
        c.send(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a ping");
        c.recv(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a pong");
      } else {
        c.recv(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a ping");
        c.send(buf.data(), buf.size(), peer, comm::Tag::kProbe, "a pong");
      }
    }
    return std::chrono::duration<double>(clock::now() - t0).count() / n;  // seconds per round trip
  };
  rounds(small, 5);  // warm-up (connection set-up)
  l.latency_us = rounds(small, kSmall) / 2 * 1e6;
  l.bandwidth_gbps = 2.0 * static_cast<double>(large.size()) / rounds(large, kLarge) / 1e9;
  return l;
}

}  // namespace

plan::Inventory gather_inventory(comm::Comm& c, int threads, const std::string& xml) {
  plan::RankInfo me = sys::probe_topology(xml);
  me.rank = c.rank();
  me.host = c.host(c.rank());
  {
    kern::ThreadPool pool(threads, sys::core_binder(threads));
    me.speed_gbps = kern::measure_read_bandwidth(pool) / 1e9;
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
  // Host leaders (first rank of each host) time every pair, in one global order (no cycles).
  std::vector<int> leaders;
  std::vector<std::string> seen;
  for (const plan::RankInfo& r : inv.ranks) {
    if (std::find(seen.begin(), seen.end(), r.host) == seen.end()) {
      seen.push_back(r.host);
      leaders.push_back(r.rank);
    }
  }
  std::vector<std::pair<std::pair<std::string, std::string>, plan::HostLink>> mine;
  for (size_t a = 0; a < leaders.size(); ++a) {
    for (size_t b = a + 1; b < leaders.size(); ++b) {
      if (c.rank() == leaders[a]) {
        mine.push_back({{inv.ranks[static_cast<size_t>(leaders[a])].host, inv.ranks[static_cast<size_t>(leaders[b])].host},
                        ping_pong(c, leaders[b], true)});
      } else if (c.rank() == leaders[b]) {
        ping_pong(c, leaders[a], false);
      }
    }
  }
  // Leaders report their links to rank 0.
  auto add = [&](const std::pair<std::string, std::string>& k, const plan::HostLink& l) {
    inv.links[k.first < k.second ? k : std::make_pair(k.second, k.first)] = l;
  };
  if (c.rank() == 0) {
    for (const auto& [k, l] : mine) add(k, l);
    for (size_t a = 1; a < leaders.size(); ++a) {
      if (a + 1 == leaders.size()) break;  // the last leader initiates no pair
      const nlohmann::json j = nlohmann::json::parse(c.recv_string(leaders[a], comm::Tag::kProbe, "a host's link times"));
      for (const auto& x : j) add({x.at(0).get<std::string>(), x.at(1).get<std::string>()}, {x.at(2).get<double>(), x.at(3).get<double>()});
    }
    return inv;
  }
  if (std::find(leaders.begin(), leaders.end(), c.rank()) != leaders.end() && c.rank() != leaders.back()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& [k, l] : mine) j.push_back({k.first, k.second, l.latency_us, l.bandwidth_gbps});
    c.send_string(j.dump(), 0, comm::Tag::kProbe, "delivery of link times");
  }
  return {};
}

}  // namespace ranklm::cli
