// Plans: even and given splits, every rank placed once, JSON round trip, hashes, and the
// refusals of impossible plans (each naming the reason).
#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>

#include "io/gguf.h"
#include "plan/identity.h"
#include "plan/plan.h"
#include "util/error.h"

using namespace ranklm;
using namespace ranklm::plan;

namespace {

ModelIdentity tinyllama() {
  ModelIdentity m;
  m.name = "TinyLlama";
  m.arch = "llama";
  m.n_layer = 22;
  m.n_head = 32;
  m.n_head_kv = 4;
  m.n_embd = 2048;
  m.n_ff = 5632;
  m.n_vocab = 32000;
  m.gguf_hash = "0123456789abcdef";
  return m;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Plan, EveryRankOfSeveralLayoutsIsPlacedOnce) {
  struct Case { int ranks, pp, tp; };
  for (const Case c : {Case{1, 0, 0}, Case{2, 2, 1}, Case{2, 1, 2}, Case{4, 2, 2}, Case{3, 3, 0},
                       Case{8, 0, 4}, Case{6, 3, 2}, Case{5, 5, 1}, Case{16, 2, 8}}) {
    const Plan p = make_plan(tinyllama(), c.ranks, c.pp, c.tp, {});
    ASSERT_EQ(p.world_size, c.ranks);
    std::set<int> seen;
    int64_t layers = 0;
    for (size_t s = 0; s < p.stages.size(); ++s) {
      const Stage& st = p.stages[s];
      layers += st.layer_end - st.layer_begin;
      for (int i = 0; i < st.tp(); ++i) {
        const int r = st.ranks[i];
        EXPECT_TRUE(seen.insert(r).second) << "rank " << r << " twice";
        EXPECT_EQ(p.where(r), std::make_pair(static_cast<int>(s), i));
      }
      // A stage's TP group is consecutive ranks (one host under mpirun's by-slot mapping).
      for (int i = 1; i < st.tp(); ++i) EXPECT_EQ(st.ranks[i], st.ranks[0] + i);
    }
    EXPECT_EQ(static_cast<int>(seen.size()), c.ranks);
    EXPECT_EQ(layers, 22);
    EXPECT_EQ(p.embedding_stage, 0);
    EXPECT_EQ(p.output_stage, static_cast<int>(p.stages.size()) - 1);
  }
}

TEST(Plan, EvenSplitPutsTheRemainderFirstAndGivenSplitsAreKept) {
  const Plan even = make_plan(tinyllama(), 4, 4, 1, {});
  ASSERT_EQ(even.stages.size(), 4u);
  EXPECT_EQ(even.stages[0].layer_end - even.stages[0].layer_begin, 6);
  EXPECT_EQ(even.stages[1].layer_end - even.stages[1].layer_begin, 6);
  EXPECT_EQ(even.stages[2].layer_end - even.stages[2].layer_begin, 5);
  EXPECT_EQ(even.stages[3].layer_end - even.stages[3].layer_begin, 5);
  const Plan given = make_plan(tinyllama(), 3, 0, 0, {10, 2, 10});
  ASSERT_EQ(given.stages.size(), 3u);
  EXPECT_EQ(given.stages[1].layer_begin, 10);
  EXPECT_EQ(given.stages[1].layer_end, 12);
  EXPECT_EQ(given.stages[2].layer_end, 22);
}

TEST(Plan, ImpossiblePlansAreRefusedWithTheReason) {
  const ModelIdentity m = tinyllama();
  EXPECT_NE(error_of([&] { make_plan(m, 3, 1, 3, {}); }).find("does not divide the 32 attention heads"), std::string::npos);
  EXPECT_NE(error_of([&] { make_plan(m, 23, 23, 1, {}); }).find("only 22 layers"), std::string::npos);
  EXPECT_NE(error_of([&] { make_plan(m, 4, 3, 0, {}); }).find("does not divide --ranks 4"), std::string::npos);
  EXPECT_NE(error_of([&] { make_plan(m, 2, 0, 0, {10, 11}); }).find("add up to 21"), std::string::npos);
  EXPECT_NE(error_of([&] { make_plan(m, 2, 2, 1, {22, 0}); }).find("at least one layer"), std::string::npos);
  ModelIdentity odd = m;
  odd.n_head = 12;
  odd.n_head_kv = 4;  // TP 6 divides the heads but neither divides nor is a multiple of 4 KV heads
  EXPECT_NE(error_of([&] { make_plan(odd, 6, 1, 6, {}); }).find("KV heads"), std::string::npos);
  EXPECT_EQ(error_of([&] { make_plan(m, 8, 1, 8, {}); }), "");  // 8 > 4 KV heads: replicated
}

TEST(Plan, JsonRoundTripAndHash) {
  const Plan p = make_plan(tinyllama(), 6, 3, 2, {7, 8, 7});
  const Plan q = from_json(to_json(p), "plan.json");
  EXPECT_EQ(to_json(q), to_json(p));
  EXPECT_EQ(plan_hash(q), plan_hash(p));
  EXPECT_EQ(plan_hash(p).size(), 16u);
  const Plan other = make_plan(tinyllama(), 6, 3, 2, {8, 7, 7});
  EXPECT_NE(plan_hash(other), plan_hash(p));
  // Bad files name the field.
  auto j = to_json(p);
  j["version"] = 99;
  EXPECT_NE(error_of([&] { from_json(j, "x.json"); }).find("'version': 99"), std::string::npos);
  j = to_json(p);
  j["stages"][1]["layers"] = {7, 14};
  EXPECT_NE(error_of([&] { from_json(j, "x.json"); }).find("stage 2"), std::string::npos);
  j = to_json(p);
  j["stages"][0]["ranks"] = {0, 3};
  EXPECT_NE(error_of([&] { from_json(j, "x.json"); }).find("rank 3 appears twice"), std::string::npos);
  j = to_json(p);
  j["model"].erase("n_head");
  EXPECT_NE(error_of([&] { from_json(j, "x.json"); }).find("missing field 'n_head'"), std::string::npos);
}

TEST(Plan, IdentityOfAFixtureModel) {
  auto f = gguf::File::open(std::string(RANKLM_FIXTURES_DIR) + "/models/tiny-llama-q4_0.gguf");
  const ModelIdentity a = model_identity(*f);
  EXPECT_EQ(a.arch, "llama");
  EXPECT_GT(a.n_layer, 0);
  EXPECT_EQ(a.gguf_hash.size(), 16u);
  auto g = gguf::File::open(std::string(RANKLM_FIXTURES_DIR) + "/models/tiny-llama-q8_0.gguf");
  EXPECT_NE(model_identity(*g).gguf_hash, a.gguf_hash);  // a different tensor table
  EXPECT_EQ(model_identity(*f).gguf_hash, a.gguf_hash);
  EXPECT_FALSE(plan_table(make_plan(a, 1, 0, 0, {})).empty());
}
