// Placement from synthetic inventories (several hosts, unequal memory and speed) and from hwloc
// XML topologies of machines this test does not run on: TP groups stay inside hosts, layers
// follow speed within memory, impossible plans are refused with the sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "cli/probe.h"
#include "plan/placement.h"
#include "plan/plan.h"
#include "plan/predict.h"
#include "sys/inventory.h"
#include "test_util.h"
#include "util/error.h"

using namespace ranklm;
using namespace ranklm::plan;

namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

ModelIdentity tinyllama() { return test::tinyllama_identity(); }

ModelSizes sizes(uint64_t layer_mb = 27) {
  ModelSizes s;
  s.layer_bytes.assign(22, layer_mb << 20);
  s.embd_bytes = uint64_t{70} << 20;
  s.output_bytes = uint64_t{105} << 20;
  s.kv_bytes_per_token_layer = 2 * 4 * 64 * 2;
  return s;
}

TpShape shape() { return test::tinyllama_tp_shape(); }

// hosts: (name, ranks, memory per rank, speed per rank)
struct Host {
  const char* name;
  int ranks;
  uint64_t memory;
  double speed;
};
Inventory inventory(const std::vector<Host>& hosts) {
  Inventory inv;
  for (const Host& h : hosts) {
    for (int i = 0; i < h.ranks; ++i) {
      RankInfo r;
      r.rank = static_cast<int>(inv.ranks.size());
      r.host = h.name;
      r.cores = 4;
      r.memory_bytes = h.memory;
      r.speed_gbps = h.speed;
      inv.ranks.push_back(r);
    }
  }
  return inv;
}

int64_t layers_of(const Plan& p, size_t s) { return p.stages[s].layer_end - p.stages[s].layer_begin; }

}  // namespace

TEST(Placement, TpInsideHostsAndStagesAcrossThem) {
  const Plan p = place(tinyllama(), sizes(), shape(), inventory({{"a", 2, 16 * kGiB, 10}, {"b", 2, 16 * kGiB, 10}}), {});
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_EQ(p.stages[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.stages[1].ranks, (std::vector<int>{2, 3}));
  // Equal hosts: the last stage also streams the output head (105 MB, about 4 layers), so it
  // gets fewer layers.
  EXPECT_GT(layers_of(p, 0), layers_of(p, 1));
  EXPECT_EQ(layers_of(p, 0) + layers_of(p, 1), 22);
  EXPECT_LE(layers_of(p, 0) - layers_of(p, 1), 5);
  ASSERT_EQ(p.placement.size(), 4u);
  EXPECT_EQ(p.placement[3].host, "b");
  EXPECT_GT(p.placement[3].estimated_bytes, uint64_t{105} << 20);
  // The placement survives the JSON round trip and changes the plan hash.
  const Plan q = from_json(to_json(p), "test");
  EXPECT_EQ(q.placement.size(), 4u);
  EXPECT_EQ(q.placement[2].host, "b");
  EXPECT_EQ(plan_hash(q), plan_hash(p));
}

TEST(Placement, LayersFollowSpeed) {
  // Host a streams twice as fast: about twice the layers (the head sits on b, the last stage).
  const Plan p = place(tinyllama(), sizes(), shape(), inventory({{"a", 1, 16 * kGiB, 20}, {"b", 1, 16 * kGiB, 10}}), {});
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_GE(layers_of(p, 0), 2 * layers_of(p, 1));
  // Three unequal hosts: every stage's step time within one layer of the others.
  const std::vector<Host> hosts = {{"a", 1, 16 * kGiB, 12}, {"b", 1, 16 * kGiB, 30}, {"c", 1, 16 * kGiB, 18}};
  const Plan r = place(tinyllama(), sizes(), shape(), inventory(hosts), {});
  ASSERT_EQ(r.stages.size(), 3u);
  std::vector<double> t;
  for (size_t s = 0; s < 3; ++s) t.push_back((layers_of(r, s) * 27.0 + (s == 2 ? 105 : 0)) / hosts[s].speed);
  const double slowest = *std::max_element(t.begin(), t.end());
  for (size_t s = 0; s < 3; ++s) EXPECT_GT(t[s] + 27.0 / hosts[s].speed + 1e-9, slowest * 0.75) << "stage " << s;
}

TEST(Placement, MemoryCapsAStageAndTheRestGoesElsewhere) {
  // b is fast but small: 0.25 GiB x 0.85 holds the head (105 MB) and a few 27 MB layers.
  const Plan p = place(tinyllama(), sizes(), shape(), inventory({{"a", 1, 16 * kGiB, 10}, {"b", 1, kGiB / 4, 40}}), {});
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_LE(p.placement[1].estimated_bytes, static_cast<uint64_t>(0.85 * (kGiB / 4)));
  EXPECT_GE(layers_of(p, 0), 17);
}

TEST(Placement, AModelThatDoesNotFitIsRefusedWithTheSizes) {
  const std::string msg = test::error_message_of<Error>([] {
    place(tinyllama(), sizes(), shape(), inventory({{"a", 1, kGiB / 8, 10}, {"b", 1, kGiB / 8, 10}}), {});
  });
  EXPECT_NE(msg.find("does not fit"), std::string::npos) << msg;
  EXPECT_NE(msg.find("GiB"), std::string::npos) << msg;
}

TEST(Placement, TpAcrossHostsOnlyOverFastLinks) {
  Inventory inv = inventory({{"a", 2, 16 * kGiB, 10}, {"b", 2, 16 * kGiB, 10}});
  PlaceOptions o;
  o.tp = 4;
  std::string msg = test::error_message_of<Error>([&] { place(tinyllama(), sizes(), shape(), inv, o); });
  EXPECT_NE(msg.find("would put ranks of a and b in one group"), std::string::npos) << msg;
  inv.links[{"a", "b"}] = {3.0, 12.0};
  o.tp_latency_us = 5.0;
  const Plan p = place(tinyllama(), sizes(), shape(), inv, o);
  ASSERT_EQ(p.stages.size(), 1u);
  EXPECT_EQ(p.stages[0].tp(), 4);
  o.tp_latency_us = 2.0;  // the link is slower than that
  msg = test::error_message_of<Error>([&] { place(tinyllama(), sizes(), shape(), inv, o); });
  EXPECT_NE(msg.find("3.0 us apart"), std::string::npos) << msg;
}

TEST(Placement, TpShrinksToWhatTheHeadsAllowAndRanksMayInterleave) {
  // 3 ranks per host: 32 heads do not split 3 ways, so TP 1 and six stages.
  const Plan p = place(tinyllama(), sizes(), shape(), inventory({{"a", 3, 16 * kGiB, 10}, {"b", 3, 16 * kGiB, 10}}), {});
  EXPECT_EQ(p.stages.size(), 6u);
  EXPECT_EQ(p.stages[0].tp(), 1);
  // Round-robin mapping (ranks 0, 2 on host a; 1, 3 on host b): groups still by host.
  Inventory inv = inventory({{"a", 1, 16 * kGiB, 10}, {"b", 1, 16 * kGiB, 10}, {"a", 1, 16 * kGiB, 10}, {"b", 1, 16 * kGiB, 10}});
  for (int r = 0; r < 4; ++r) inv.ranks[static_cast<size_t>(r)].rank = r;
  const Plan q = place(tinyllama(), sizes(), shape(), inv, {});
  ASSERT_EQ(q.stages.size(), 2u);
  EXPECT_EQ(q.stages[0].ranks, (std::vector<int>{0, 2}));
  EXPECT_EQ(q.stages[1].ranks, (std::vector<int>{1, 3}));
}

TEST(Placement, HwlocXmlTopologies) {
  const std::string dir = std::string(RANKLM_TEST_DATA_DIR) + "/topologies/";
  const RankInfo big = sys::probe_topology(dir + "two-socket-32c-128g.xml");
  EXPECT_EQ(big.cores, 32);
  EXPECT_EQ(big.numa_nodes, 2);
  EXPECT_EQ(big.memory_bytes, 128 * kGiB);
  const RankInfo mid = sys::probe_topology(dir + "one-socket-8c-16g.xml");
  EXPECT_EQ(mid.cores, 8);
  EXPECT_EQ(mid.numa_nodes, 1);
  EXPECT_EQ(mid.memory_bytes, 16 * kGiB);
  const RankInfo small = sys::probe_topology(dir + "small-4c-8g.xml");
  EXPECT_EQ(small.memory_bytes, 8 * kGiB);
  // A job with one rank on each of those machines, the bigger ones faster: layers by speed.
  Inventory inv;
  for (const auto& [name, info, speed] : {std::tuple{"big", big, 40.0}, std::tuple{"mid", mid, 20.0}, std::tuple{"small", small, 10.0}}) {
    RankInfo r = info;
    r.rank = static_cast<int>(inv.ranks.size());
    r.host = name;
    r.speed_gbps = speed;
    inv.ranks.push_back(r);
  }
  const Plan p = place(tinyllama(), sizes(), shape(), inv, {});
  ASSERT_EQ(p.stages.size(), 3u);
  EXPECT_GT(layers_of(p, 0), layers_of(p, 1));
  EXPECT_GT(layers_of(p, 1), layers_of(p, 2));
  EXPECT_EQ(p.placement[0].memory_bytes, 128 * kGiB);
  const std::string table = plan_table(p);
  EXPECT_NE(table.find("big"), std::string::npos) << table;
  EXPECT_NE(table.find("128.00 GiB"), std::string::npos) << table;
  const std::string msg = test::error_message_of<Error>([&] { sys::probe_topology(dir + "missing.xml"); });
  EXPECT_NE(msg.find("missing.xml"), std::string::npos) << msg;
}

TEST(Placement, InventoryJsonRoundTripAndErrors) {
  Inventory inv = inventory({{"a", 2, 16 * kGiB, 10}, {"b", 1, 8 * kGiB, 5}});
  inv.links[{"a", "b"}] = {25.0, 1.2};
  const Inventory back = inventory_from_json(inventory_to_json(inv), "test");
  ASSERT_EQ(back.ranks.size(), 3u);
  EXPECT_EQ(back.ranks[2].host, "b");
  EXPECT_EQ(back.ranks[2].memory_bytes, 8 * kGiB);
  ASSERT_NE(back.link("b", "a"), nullptr);
  EXPECT_DOUBLE_EQ(back.link("b", "a")->latency_us, 25.0);
  nlohmann::json j = inventory_to_json(inv);
  j["ranks"][1].erase("memory_bytes");
  std::string msg = test::error_message_of<Error>([&] { inventory_from_json(j, "inv.json"); });
  EXPECT_NE(msg.find("inv.json: ranks[1]: missing field 'memory_bytes'"), std::string::npos) << msg;
  j = inventory_to_json(inv);
  j["ranks"][0]["speed_gbps"] = "fast";
  msg = test::error_message_of<Error>([&] { inventory_from_json(j, "inv.json"); });
  EXPECT_NE(msg.find("'speed_gbps' must be a number"), std::string::npos) << msg;
}

// On one host a batch job runs fastest as one rank with all the cores (measured in
// docs/PERFORMANCE.md): the plan says so and why, counts the KV blocks that rank's memory
// holds, and spreads over every rank only when asked or when the model does not fit one rank.
TEST(Placement, OneHostGetsOneRankWithEveryCoreWhenTheModelFits) {
  const Inventory inv = inventory({{"a", 2, 16 * kGiB, 10}});
  const Plan p = place(tinyllama(), sizes(), shape(), inv, {});
  ASSERT_EQ(p.world_size, 1);
  ASSERT_EQ(p.stages.size(), 1u);
  EXPECT_EQ(layers_of(p, 0), 22);
  EXPECT_EQ(p.placement[0].cores, 8);
  EXPECT_NE(p.why.find("one rank with all 8 cores of host a"), std::string::npos) << p.why;
  EXPECT_NE(plan_table(p).find("layout: one rank"), std::string::npos);
  // KV blocks: (85% of 16 GiB - weights) / (22 layers x 16 positions x 1 KiB per position and layer).
  const uint64_t weights = 22 * (uint64_t{27} << 20) + (uint64_t{175} << 20);
  const uint64_t block = 22 * 16 * 1024;
  EXPECT_EQ(p.placement[0].kv_blocks, static_cast<int64_t>((static_cast<uint64_t>(16 * kGiB * 0.85) - weights) / block));

  PlaceOptions spread;
  spread.one_rank_per_host = false;
  const Plan q = place(tinyllama(), sizes(), shape(), inv, spread);
  EXPECT_EQ(q.world_size, 2);
  EXPECT_NE(q.why.find("every rank of the job, as asked"), std::string::npos) << q.why;
  PlaceOptions tp2;
  tp2.tp = 2;
  EXPECT_EQ(place(tinyllama(), sizes(), shape(), inv, tp2).world_size, 2);

  // 22 x 27 MB of layers plus 175 MB do not fit 85% of 0.7 GiB, but half of them do.
  const Plan big = place(tinyllama(), sizes(), shape(), inventory({{"a", 2, kGiB * 7 / 10, 10}}), {});
  EXPECT_EQ(big.world_size, 2);
  EXPECT_NE(big.why.find("does not fit one rank's memory"), std::string::npos) << big.why;
  for (const RankPlacement& x : big.placement) EXPECT_GT(x.kv_blocks, 0);
}

namespace {

// Hosts of two sites a (h0, h1) and b (h2, h3): about 100 us inside a site, 10 ms between.
void two_site_links(Inventory& inv) {
  const std::vector<std::string> hs = {"h0", "h1", "h2", "h3"};
  for (size_t a = 0; a < hs.size(); ++a) {
    for (size_t b = a + 1; b < hs.size(); ++b) {
      const bool same = (a < 2) == (b < 2);
      // Unequal within each kind, as measured links are.
      inv.links[{hs[a], hs[b]}] = {same ? 90.0 + 10.0 * static_cast<double>(a + b) : 10000.0 + 500.0 * static_cast<double>(a),
                                   same ? 1.0 : 0.02};
    }
  }
}

int crossings(const Plan& p) {
  int n = 0;
  for (const Hop& h : p.hops) n += h.crosses_sites ? 1 : 0;
  return n;
}

std::string host_of(const Plan& p, int rank) { return p.placement[static_cast<size_t>(rank)].host; }

}  // namespace

TEST(PlacementNetwork, AnyHostfileOrderCrossesTheSlowLinkOnce) {
  std::vector<const char*> order = {"h0", "h1", "h2", "h3"};
  int tried = 0;
  do {
    std::vector<Host> hosts;
    for (const char* h : order) hosts.push_back({h, 1, 16 * kGiB, 10});
    Inventory inv = inventory(hosts);
    two_site_links(inv);
    PlaceOptions pp;
    pp.tp = 1;  // one stage per host
    const Plan p = place(tinyllama(), sizes(), shape(), inv, pp);
    ASSERT_EQ(p.stages.size(), 4u);
    EXPECT_EQ(p.n_sites, 2);
    // Without a TP size the prediction prefers TP 2 across each site's LAN (600 MB of weights
    // at 10 GB/s against 100 us links): still one crossing, each group inside a site.
    const Plan w = place(tinyllama(), sizes(), shape(), inv, {});
    ASSERT_EQ(w.stages.size(), 2u);
    EXPECT_EQ(crossings(w), 1);
    for (const Stage& st : w.stages) EXPECT_EQ(w.placement[static_cast<size_t>(st.ranks[0])].site, w.placement[static_cast<size_t>(st.ranks[1])].site);
    EXPECT_NE(w.why.find("TP 2 across the hosts of a site"), std::string::npos) << w.why;
    EXPECT_EQ(crossings(p), 1) << plan_table(p);
    EXPECT_EQ(p.stages[0].ranks[0], 0);  // rank 0 reads prompts and embeds: it leads
    // Both hosts of rank 0's site come first.
    const std::string h0 = host_of(p, p.stages[0].ranks[0]), h1 = host_of(p, p.stages[1].ranks[0]);
    EXPECT_EQ(p.placement[static_cast<size_t>(p.stages[0].ranks[0])].site, p.placement[static_cast<size_t>(p.stages[1].ranks[0])].site)
        << h0 << " " << h1;
    ++tried;
  } while (std::next_permutation(order.begin(), order.end(), [](const char* a, const char* b) { return std::string(a) < b; }));
  EXPECT_EQ(tried, 24);
}

TEST(PlacementNetwork, TpGroupsFormInsideSitesWhateverTheRankOrder) {
  // The hostfile lists h0 h2 h1 h3, one rank each: TP 2 must pair h0 with h1 and h2 with h3.
  Inventory inv = inventory({{"h0", 1, 16 * kGiB, 10}, {"h2", 1, 16 * kGiB, 10}, {"h1", 1, 16 * kGiB, 10}, {"h3", 1, 16 * kGiB, 10}});
  two_site_links(inv);
  PlaceOptions o;
  o.tp = 2;
  const std::string msg = test::error_message_of<Error>([&] { place(tinyllama(), sizes(), shape(), inv, o); });
  EXPECT_NE(msg.find("would put ranks of h0 and h1 in one group"), std::string::npos) << msg;
  o.tp_latency_us = 5000;
  const Plan p = place(tinyllama(), sizes(), shape(), inv, o);
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_EQ(p.stages[0].ranks, (std::vector<int>{0, 2}));  // h0, h1
  EXPECT_EQ(p.stages[1].ranks, (std::vector<int>{1, 3}));  // h2, h3
  EXPECT_EQ(crossings(p), 1);
  // The plan runs: every rank once, rank 0 first.
  validate(p, "test");
  const Plan q = from_json(to_json(p), "test");
  EXPECT_EQ(q.stages[1].ranks, p.stages[1].ranks);
  EXPECT_EQ(q.placement[1].site, 1);
}

TEST(PlacementNetwork, EightRanksTpInsideHostsStagesBySite) {
  // 4 hosts x 2 ranks, listed h2 h0 h3 h1 (rank 0 on h2): TP 2 on each host, the pipeline
  // starts in rank 0's site and crosses once.
  Inventory inv = inventory({{"h2", 2, 16 * kGiB, 10}, {"h0", 2, 16 * kGiB, 10}, {"h3", 2, 16 * kGiB, 10}, {"h1", 2, 16 * kGiB, 10}});
  two_site_links(inv);
  const Plan p = place(tinyllama(), sizes(), shape(), inv, {});
  ASSERT_EQ(p.stages.size(), 4u);
  for (const Stage& st : p.stages) {
    ASSERT_EQ(st.tp(), 2);
    EXPECT_EQ(host_of(p, st.ranks[0]), host_of(p, st.ranks[1]));
  }
  EXPECT_EQ(p.stages[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(host_of(p, p.stages[1].ranks[0]), "h3");
  EXPECT_EQ(crossings(p), 1);
  const std::string table = plan_table(p);
  EXPECT_NE(table.find("sites: 2"), std::string::npos) << table;
  EXPECT_NE(table.find("crosses between sites 1 time"), std::string::npos) << table;
  EXPECT_NE(table.find("=> h0 (between sites, 10.0 ms"), std::string::npos) << table;
}

TEST(PlacementNetwork, ThreeSitesInAChainAreVisitedInOrder) {
  // Sites a - b - c in a line (c is 20 ms from a); the hostfile lists c's host second.
  Inventory inv = inventory({{"a0", 1, 16 * kGiB, 10}, {"c0", 1, 16 * kGiB, 10}, {"b0", 1, 16 * kGiB, 10}});
  inv.links[{"a0", "b0"}] = {10000, 0.02};
  inv.links[{"b0", "c0"}] = {11000, 0.02};
  inv.links[{"a0", "c0"}] = {21000, 0.02};
  const Plan p = place(tinyllama(), sizes(), shape(), inv, {});
  ASSERT_EQ(p.stages.size(), 3u);
  EXPECT_EQ(host_of(p, p.stages[1].ranks[0]), "b0");
  EXPECT_EQ(host_of(p, p.stages[2].ranks[0]), "c0");
  EXPECT_EQ(p.n_sites, 3);  // no jump among 10-21 ms: a millisecond or more separates sites
  // A threshold given by hand merges them.
  PlaceOptions o;
  o.site_latency_us = 50000;
  EXPECT_EQ(place(tinyllama(), sizes(), shape(), inv, o).n_sites, 1);
}

TEST(PlacementNetwork, NoisySpeedsOfAlikeHostsGiveTheSamePlan) {
  // The same 4 hosts measured twice with speeds that differ by up to 15%: one plan.
  std::string first;
  for (const std::vector<double>& sp : {std::vector<double>{3.3, 3.4, 3.45, 3.35}, {3.0, 3.4, 3.2, 3.45}, {3.45, 3.0, 3.3, 3.1}}) {
    Inventory inv = inventory({{"h0", 1, 16 * kGiB, sp[0]}, {"h1", 1, 16 * kGiB, sp[1]}, {"h2", 1, 16 * kGiB, sp[2]}, {"h3", 1, 16 * kGiB, sp[3]}});
    two_site_links(inv);
    const std::string h = plan_hash(place(tinyllama(), sizes(), shape(), inv, {}));
    if (first.empty()) first = h;
    EXPECT_EQ(h, first);
  }
  // A host really twice as fast still gets more layers.
  Inventory inv = inventory({{"h0", 1, 16 * kGiB, 6.6}, {"h1", 1, 16 * kGiB, 3.3}, {"h2", 1, 16 * kGiB, 3.3}, {"h3", 1, 16 * kGiB, 3.3}});
  two_site_links(inv);
  const Plan p = place(tinyllama(), sizes(), shape(), inv, {});
  EXPECT_GT(layers_of(p, 0), layers_of(p, 1));
}

TEST(PlacementPredict, DecodeIsWeightsPlusHopsAlongThePipeline) {
  Inventory inv = inventory({{"a", 1, 16 * kGiB, 10}, {"b", 1, 16 * kGiB, 10}});
  inv.links[{"a", "b"}] = {10000, 0.1};  // 10 ms, 100 MB/s
  const Plan p = place(tinyllama(), sizes(), shape(), inv, {});
  ASSERT_EQ(p.stages.size(), 2u);
  const Prediction r = predict(p, sizes(), shape(), inv, {});
  // Every weight byte once at 10 GB/s, the head on the last stage.
  const double weights_ms = (22 * 27.0 * (1 << 20) + 105.0 * (1 << 20)) / 10e9 * 1e3;
  EXPECT_NEAR(r.compute_ms, weights_ms, 1e-9);
  // One hop with 2048 f32 hidden values, then the sampled token back to rank 0.
  const double hop_ms = 10 + 2048 * 4 / 0.1e9 * 1e3, back_ms = 10 + 4 / 0.1e9 * 1e3;
  EXPECT_NEAR(r.pp_ms, hop_ms + back_ms, 1e-9);
  EXPECT_EQ(r.tp_ms, 0);
  EXPECT_NEAR(r.decode_ms, r.compute_ms + r.pp_ms, 1e-9);
  // Q8_0 hidden states: 34 bytes per 32 values instead of 128.
  PredictOptions q8;
  q8.q8_hops = true;
  EXPECT_NEAR(predict(p, sizes(), shape(), inv, q8).pp_ms, 10 + 2048 * 34.0 / 32 / 0.1e9 * 1e3 + back_ms, 1e-9);
  // A batch of 16: two micro-batches of 8; the pipeline's round trip (20 ms of links) bounds it.
  EXPECT_GT(r.batch_tokens_s, 16 / (r.decode_ms * 1e-3) * 0.9);
}

TEST(PlacementPredict, TpCollectivesCountTheirStepsAndBytes) {
  Inventory inv = inventory({{"a", 2, 16 * kGiB, 10}});
  inv.links[{"a", "a"}] = {5, 8};  // the host's own link: 5 us, 8 GB/s
  PlaceOptions o;
  o.one_rank_per_host = false;
  Plan p = place(tinyllama(), sizes(), shape(), inv, o);
  ASSERT_EQ(p.stages.size(), 1u);
  ASSERT_EQ(p.stages[0].tp(), 2);
  auto step_ms = [](double bytes) { return (5e-6 + bytes / 8e9) * 1e3; };
  // Exact: per layer four all-gathers (heads 2048, rows 2048, FFN 5632, rows 2048 values), one
  // ring step each at TP 2 with half the values.
  p.tp_mode = TpMode::kExact;
  const double exact = 22 * (step_ms(2048 * 4 / 2.0) * 3 + step_ms(5632 * 4 / 2.0));
  EXPECT_NEAR(predict(p, sizes(), shape(), inv, {}).tp_ms, exact, 1e-9);
  // Sum: two all-reduces of 8 KB per layer, each one exchange round.
  p.tp_mode = TpMode::kSum;
  EXPECT_NEAR(predict(p, sizes(), shape(), inv, {}).tp_ms, 22 * 2 * step_ms(2048 * 4), 1e-9);
  // Half the weights per rank.
  EXPECT_NEAR(predict(p, sizes(), shape(), inv, {}).compute_ms, (22 * 27.0 + 105) * (1 << 20) / 2 / 10e9 * 1e3, 1e-9);
}

TEST(PlacementPredict, ExplainListsTheAlternativesWithTheirCosts) {
  // h0 h2 h1 h3: the chosen plan crosses between the sites once, the rank-order one three times.
  Inventory inv = inventory({{"h0", 1, 16 * kGiB, 10}, {"h2", 1, 16 * kGiB, 10}, {"h1", 1, 16 * kGiB, 10}, {"h3", 1, 16 * kGiB, 10}});
  two_site_links(inv);
  PlaceOptions pp;
  pp.tp = 1;
  const Plan p = place(tinyllama(), sizes(), shape(), inv, pp);
  PredictOptions o;
  o.n_seq = 16;
  const std::vector<Candidate> cs = candidates(p, sizes(), shape(), inv, pp, o);
  ASSERT_GE(cs.size(), 3u);
  EXPECT_TRUE(cs[0].chosen);
  EXPECT_EQ(plan_hash(cs[0].plan), plan_hash(p));
  const Candidate* blind = nullptr;
  for (const Candidate& c : cs) {
    if (c.name == "stages in rank order") blind = &c;
  }
  ASSERT_NE(blind, nullptr);
  EXPECT_EQ(crossings(blind->plan), 3);
  // Two more crossings of about 10 ms each.
  EXPECT_GT(blind->pred.decode_ms, cs[0].pred.decode_ms + 15);
  const std::string t = explain_table(cs, o);
  EXPECT_NE(t.find("* chosen (exact TP)"), std::string::npos) << t;
  EXPECT_NE(t.find("stages in rank order"), std::string::npos) << t;
  EXPECT_NE(t.find("TP 2 x PP 2, groups across hosts"), std::string::npos) << t;
}

TEST(PlacementPredict, RanksSharingAMachineShareItsBandwidth) {
  // Two "hosts" on one machine (a virtual cluster): 5 GB/s each when both read, 9 alone.
  Inventory inv = inventory({{"a", 1, 16 * kGiB, 5}, {"b", 1, 16 * kGiB, 5}});
  for (RankInfo& r : inv.ranks) r.machine = "m", r.solo_speed_gbps = 9;
  inv.links[{"a", "b"}] = {100, 1};
  PlaceOptions pp;
  pp.tp = 1;
  const Plan p = place(tinyllama(), sizes(), shape(), inv, pp);
  const double bytes = (22 * 27.0 + 105) * (1 << 20);
  // One sequence, PP: one stage at a time, each alone on the machine.
  EXPECT_NEAR(predict(p, sizes(), shape(), inv, {}).compute_ms, bytes / 9e9 * 1e3, 1e-9);
  // TP 2: both ranks read at once from the machine's 10 GB/s.
  PlaceOptions tp;
  tp.tp = 2;
  tp.tp_latency_us = 1000;
  const Plan q = place(tinyllama(), sizes(), shape(), inv, tp);
  EXPECT_NEAR(predict(q, sizes(), shape(), inv, {}).compute_ms, bytes / 2 / 5e9 * 1e3, 1e-9);
  // On two machines (each then measures 9 with the other reading too) TP 2 reads at 9 on each.
  inv.ranks[1].machine = "m2";
  for (RankInfo& r : inv.ranks) r.speed_gbps = 9;
  EXPECT_NEAR(predict(q, sizes(), shape(), inv, {}).compute_ms, bytes / 2 / 9e9 * 1e3, 1e-9);
}

TEST(PlacementPredict, TheExplainColumnsAgreeAndTheOneRankPlanUsesTheWholeHost) {
  // One host, two measured ranks (5 GB/s each when both read, 9 alone). With --layout auto the
  // plan is one rank with both ranks' cores: it reads as both did together (10 GB/s).
  Inventory inv = inventory({{"a", 2, 16 * kGiB, 5}});
  for (RankInfo& r : inv.ranks) r.machine = "m", r.solo_speed_gbps = 9, r.compute_gmacs = 20;
  PlaceOptions po;
  po.one_rank_per_host = true;
  const Plan one = place(tinyllama(), sizes(), shape(), inv, po);
  ASSERT_EQ(one.world_size, 1);
  ASSERT_EQ(one.placement[0].cores, 8);
  const double bytes = (22 * 27.0 + 105) * (1 << 20);
  PredictOptions o1;
  o1.n_seq = 1;
  EXPECT_NEAR(predict(one, sizes(), shape(), inv, o1).compute_ms, bytes / 10e9 * 1e3, 1e-9);
  // For one sequence every candidate's tokens/s is 1000 / its ms per token (the columns of
  // --explain once disagreed: 9.12 ms/token beside 95.2 tokens/s).
  for (const Candidate& c : candidates(one, sizes(), shape(), inv, po, o1)) {
    EXPECT_NEAR(c.pred.batch_tokens_s, 1000.0 / c.pred.decode_ms, 1e-6 * c.pred.batch_tokens_s) << c.name;
  }
  // The chosen one-rank plan is predicted fastest here, so no note says otherwise.
  const auto cs = candidates(one, sizes(), shape(), inv, po, o1);
  EXPECT_EQ(explain_table(cs, o1).find("note:"), std::string::npos) << explain_table(cs, o1);
  // A note, when there is one, names both figures.
  std::vector<Candidate> swapped = cs;
  ASSERT_GE(swapped.size(), 2u);
  swapped[1].pred.decode_ms = swapped[0].pred.decode_ms / 2;
  swapped[1].pred.batch_tokens_s = swapped[0].pred.batch_tokens_s / 2;
  const std::string t = explain_table(swapped, o1);
  EXPECT_NE(t.find("faster per token for one sequence, but the chosen plan gives"), std::string::npos) << t;
}

TEST(PlacementProbe, IdenticalRanksOfAMachineShareOneMeasurementAndNoiseIsReported) {
  // Two ranks of one host, same cores: one measured while a build ran (2 GB/s), one quiet (10).
  Inventory inv = inventory({{"a", 2, 16 * kGiB, 10}});
  inv.ranks[1].speed_gbps = 2;
  for (RankInfo& r : inv.ranks) r.solo_speed_gbps = r.speed_gbps, r.compute_gmacs = 20;
  PlaceOptions spread;
  spread.one_rank_per_host = false;
  spread.tp = 1;
  const Plan noisy = place(tinyllama(), sizes(), shape(), inv, spread);
  ASSERT_EQ(noisy.stages.size(), 2u);
  EXPECT_GE(layers_of(noisy, 0) - layers_of(noisy, 1), 10);  // the noise decides the split
  const std::string note = cli::steady_identical_ranks(inv);
  EXPECT_NE(note.find("2 ranks of host a measured read bandwidths (GB/s) from 2.0 to 10.0"), std::string::npos) << note;
  EXPECT_DOUBLE_EQ(inv.ranks[0].speed_gbps, 6.0);
  EXPECT_DOUBLE_EQ(inv.ranks[1].speed_gbps, 6.0);
  const Plan steady = place(tinyllama(), sizes(), shape(), inv, spread);
  // Equal ranks: the split differs only by the output head the last stage also reads.
  EXPECT_LE(std::abs(layers_of(steady, 0) - layers_of(steady, 1)), 5);
  // Different hardware (another machine, or other core counts) keeps its own figures.
  Inventory two = inventory({{"a", 1, 16 * kGiB, 10}, {"b", 1, 16 * kGiB, 2}});
  EXPECT_EQ(cli::steady_identical_ranks(two), "");
  EXPECT_DOUBLE_EQ(two.ranks[1].speed_gbps, 2.0);
}

// A mixture of experts on two ranks of one host: every rank holds its share of the experts;
// an EP group holds attention (and every KV head) whole on each member, a TP group half; the
// KV blocks a rank's memory holds follow; without --ep or --tp the planner predicts both
// splits and says which it took.
TEST(Placement, MoeGroupsCountExpertsAndKvByTheirSplit) {
  ModelIdentity m = tinyllama();
  m.n_expert = 8, m.n_expert_used = 2;
  ModelSizes s = sizes();  // 27 MB per layer, of which 20 MB of experts
  s.layer_expert_bytes.assign(22, uint64_t{20} << 20);
  s.layer_expert_macs.assign(22, uint64_t{80} << 20);
  s.n_expert = 8, s.n_expert_used = 2;
  TpShape sh = shape();
  sh.n_expert = 8;
  const Inventory inv = inventory({{"a", 2, 4 * kGiB, 10}});
  PlaceOptions o;
  o.one_rank_per_host = false;
  o.tp = 2;
  o.ep_forced = true;
  const Plan tp = place(m, s, sh, inv, o);
  o.ep = true;
  const Plan ep = place(m, s, sh, inv, o);
  ASSERT_FALSE(tp.ep);
  ASSERT_TRUE(ep.ep);
  const uint64_t layers = 22, mb = uint64_t{1} << 20;
  EXPECT_EQ(rank_bytes(tp, s, 1, {.n_seq = 0}), layers * (7 * mb / 2 + 10 * mb) + uint64_t{175} * mb);
  EXPECT_EQ(rank_bytes(ep, s, 1, {.n_seq = 0}), layers * (7 * mb + 10 * mb) + uint64_t{175} * mb);
  // KV per block: 22 layers x 16 positions x 1 KiB, halved by the TP group, whole under EP.
  const uint64_t room = static_cast<uint64_t>(4 * kGiB * 0.85), block = 22 * 16 * 1024;
  EXPECT_EQ(ep.placement[1].kv_blocks, static_cast<int64_t>((room - rank_bytes(ep, s, 1, {.n_seq = 0})) / block));
  EXPECT_EQ(tp.placement[1].kv_blocks, static_cast<int64_t>((room - rank_bytes(tp, s, 1, {.n_seq = 0})) / (block / 2)));
  PlaceOptions any;
  any.one_rank_per_host = false;
  const Plan chosen = place(m, s, sh, inv, any);
  EXPECT_NE(chosen.why.find("MoE layers: "), std::string::npos) << chosen.why;
  EXPECT_NE(chosen.why.find("predicted"), std::string::npos) << chosen.why;
}

// One-token steps: their arithmetic runs at the one-token rate of the model's weight types (the
// harmonic mix by multiply-adds; a type not measured counts at the batched rate), which on
// CPUs with a slow one-token K-quant kernel is what bounds decode, not the weights' reads.
TEST(PlacementPredict, OneTokenStepsPayTheOneTokenRateOfTheModelsTypes) {
  Inventory inv = inventory({{"a", 1, 16 * kGiB, 10}});
  inv.ranks[0].compute_gmacs = 100;
  ModelSizes s = sizes();
  s.layer_macs.assign(22, uint64_t{54} << 20);  // 2 multiply-adds per byte
  s.output_macs = uint64_t{210} << 20;
  s.decode_mac_share = {{"Q4_K", 0.75}, {"Q6_K", 0.25}};
  const Plan p = place(tinyllama(), s, shape(), inv, {});
  const double bytes = 22 * 27.0 * (1 << 20) + 105.0 * (1 << 20), macs = 2 * bytes;
  EXPECT_NEAR(predict(p, s, shape(), inv, {}).compute_ms, bytes / 10e9 * 1e3, 1e-9);  // not measured: the reads
  inv.ranks[0].decode_gmacs = {{"Q4_K", 2.0}, {"Q6_K", 1.0}, {"Q8_0", 50.0}};
  EXPECT_NEAR(s.decode_gmacs(inv.ranks[0]), 1 / (0.75 / 2 + 0.25 / 1), 1e-12);
  EXPECT_NEAR(predict(p, s, shape(), inv, {}).compute_ms, macs / 1.6e9 * 1e3, 1e-9);
  // Q6_K not measured: it counts at the batched rate.
  inv.ranks[0].decode_gmacs.erase("Q6_K");
  EXPECT_NEAR(s.decode_gmacs(inv.ranks[0]), 1 / (0.75 / 2 + 0.25 / 100), 1e-12);
  // Fast one-token kernels: the reads bound it again.
  inv.ranks[0].decode_gmacs = {{"Q4_K", 400.0}, {"Q6_K", 400.0}};
  EXPECT_NEAR(predict(p, s, shape(), inv, {}).compute_ms, bytes / 10e9 * 1e3, 1e-9);
  // The inventory keeps the rates; a rate that is not a number >= 0 is refused, naming it.
  const Inventory back = inventory_from_json(inventory_to_json(inv), "inv.json");
  EXPECT_EQ(back.ranks[0].decode_gmacs, inv.ranks[0].decode_gmacs);
  nlohmann::json j = inventory_to_json(inv);
  j["ranks"][0]["decode_gmacs"]["Q4_K"] = -1;
  std::string msg = test::error_message_of<Error>([&] { inventory_from_json(j, "inv.json"); });
  EXPECT_NE(msg.find("inv.json: ranks[0].decode_gmacs: field 'Q4_K' must be a number >= 0"), std::string::npos) << msg;
  j["ranks"][0]["decode_gmacs"] = 3;
  msg = test::error_message_of<Error>([&] { inventory_from_json(j, "inv.json"); });
  EXPECT_NE(msg.find("field 'decode_gmacs' must be an object"), std::string::npos) << msg;
}

// A Q4_K_M mixture of experts: one token's multiply-adds by type count the experts it picks and
// the head, and sum to 1.
TEST(PlacementPredict, ModelSizesShareOneTokensMultiplyAddsByType) {
  auto f = gguf::File::open(test::fixtures_dir() + "/moe/tiny-qwen3moe-q4_k_m.gguf");
  const ModelSizes s = model_sizes(*f);
  double sum = 0;
  for (const auto& [type, share] : s.decode_mac_share) {
    EXPECT_GT(share, 0.0) << type;
    sum += share;
  }
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_TRUE(s.decode_mac_share.count("Q4_K")) << "types: " << s.decode_mac_share.size();
  EXPECT_TRUE(s.decode_mac_share.count("Q6_K"));
  // The router is F32 and small next to the experts a token passes through.
  ASSERT_TRUE(s.decode_mac_share.count("F32"));
  EXPECT_LT(s.decode_mac_share.at("F32"), 0.2);
}
