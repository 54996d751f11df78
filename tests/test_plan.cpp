// Plans: even and given splits, every rank placed once, JSON round trip, hashes, and the
// refusals of impossible plans (each naming the reason).
#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>

#include "io/gguf.h"
#include "plan/identity.h"
#include "model/arch.h"
#include "plan/plan.h"
#include "test_util.h"
#include "util/error.h"

using namespace ranklm;
using namespace ranklm::plan;

namespace {

ModelIdentity tinyllama() { return test::tinyllama_identity(); }

std::string error_of(const std::function<void()>& f) { return test::error_message_of<Error>(f); }

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

// tp_mode: absent means "sum" (plans from before the field), so their JSON and hash do not
// change; "exact" is written, read back, and changes the hash (the shards differ).
TEST(Plan, TpModeIsOptionalInJsonAndPartOfTheHash) {
  Plan p = make_plan(tinyllama(), 4, 2, 2, {});
  EXPECT_EQ(p.tp_mode, TpMode::kSum);
  EXPECT_FALSE(to_json(p).contains("tp_mode"));
  const std::string sum_hash = plan_hash(p);
  p.tp_mode = TpMode::kExact;
  EXPECT_EQ(to_json(p)["tp_mode"], "exact");
  EXPECT_EQ(from_json(to_json(p), "plan.json").tp_mode, TpMode::kExact);
  EXPECT_NE(plan_hash(p), sum_hash);
  auto j = to_json(p);
  j["tp_mode"] = "fast";
  EXPECT_NE(error_of([&] { from_json(j, "x.json"); }).find("'tp_mode': 'fast' is not a TP mode (exact or sum)"),
            std::string::npos);
  j["tp_mode"] = 3;
  EXPECT_NE(error_of([&] { from_json(j, "x.json"); }).find("'tp_mode' must be a string"), std::string::npos);
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

// --- tensor-parallel slicing ---

namespace {
TpShape tinyllama_shape() { return test::tinyllama_tp_shape(); }
}  // namespace

TEST(TpSlice, AlignedSplitIsEvenOnBlockBoundariesAndRefusesTooFewBlocks) {
  const auto r = aligned_split(768, 2, 256, "ffn");  // 3 blocks over 2 ranks: uneven
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], (Range{0, 512}));
  EXPECT_EQ(r[1], (Range{512, 768}));
  for (const int parts : {1, 3, 7, 11}) {
    const auto s = aligned_split(5632, parts, 32, "ffn");
    int64_t at = 0;
    for (const Range& x : s) {
      EXPECT_EQ(x.begin, at);
      EXPECT_EQ(x.begin % 32, 0);
      EXPECT_LE(x.size() - s.back().size(), 32);
      at = x.end;
    }
    EXPECT_EQ(at, 5632);
  }
  EXPECT_NE(error_of([] { aligned_split(512, 3, 256, "ffn"); }).find("too few"), std::string::npos);
  EXPECT_NE(error_of([] { aligned_split(500, 2, 32, "ffn"); }).find("not a multiple"), std::string::npos);
}

TEST(TpSlice, PartsCoverHeadsAndFfnAndReplicateSharedKvHeads) {
  TpShape s = tinyllama_shape();
  s.ffn_down_block = 256;
  for (const int tp : {1, 2, 4, 8, 16}) {
    std::vector<int> q_cover(32, 0), kv_cover(4, 0);
    int64_t ffn_at = 0;
    for (int i = 0; i < tp; ++i) {
      const TpPart p = tp_part(s, tp, i);
      for (int64_t h = p.q_heads.begin; h < p.q_heads.end; ++h) {
        ++q_cover[h];
        // Every query head's KV head is on the same rank.
        EXPECT_GE(h / 8, p.kv_heads.begin);
        EXPECT_LT(h / 8, p.kv_heads.end);
      }
      for (int64_t h = p.kv_heads.begin; h < p.kv_heads.end; ++h) ++kv_cover[h];
      EXPECT_EQ(p.ffn.begin, ffn_at);
      ffn_at = p.ffn.end;
      // Slices of each tensor kind.
      EXPECT_EQ(tensor_slice("blk.3.attn_q.weight", 2, s, p), (Slice{1, p.q_heads.begin * 64, p.q_heads.end * 64}));
      EXPECT_EQ(tensor_slice("blk.3.attn_k.weight", 2, s, p), (Slice{1, p.kv_heads.begin * 64, p.kv_heads.end * 64}));
      EXPECT_EQ(tensor_slice("blk.3.attn_v.bias", 1, s, p), (Slice{0, p.kv_heads.begin * 64, p.kv_heads.end * 64}));
      EXPECT_EQ(tensor_slice("blk.3.attn_output.weight", 2, s, p), (Slice{0, p.q_heads.begin * 64, p.q_heads.end * 64}));
      EXPECT_EQ(tensor_slice("blk.3.ffn_up.weight", 2, s, p), (Slice{1, p.ffn.begin, p.ffn.end}));
      EXPECT_EQ(tensor_slice("blk.3.ffn_down.weight", 2, s, p), (Slice{0, p.ffn.begin, p.ffn.end}));
      EXPECT_EQ(tensor_slice("blk.3.attn_norm.weight", 1, s, p), Slice{});
      EXPECT_EQ(tensor_slice("token_embd.weight", 2, s, p), Slice{});
      EXPECT_EQ(tensor_slice("output.weight", 2, s, p), Slice{});
    }
    EXPECT_EQ(ffn_at, 5632);
    for (int c : q_cover) EXPECT_EQ(c, 1) << "tp " << tp;
    for (int c : kv_cover) EXPECT_EQ(c, tp <= 4 ? 1 : tp / 4) << "tp " << tp;
  }
}

// Exact mode: every split tensor is cut by rows. attn_output and ffn_down rows (the embedding
// width) are split evenly and cover it once; the FFN needs no block alignment, so a K-quant FFN
// of 768 (3 blocks of 256) goes 4 ways, which sum mode refuses.
TEST(TpSlice, ExactModeCutsAttnOutputAndFfnDownByRows) {
  TpShape s = tinyllama_shape();
  s.attn_output_block = s.ffn_down_block = 256;
  for (const int tp : {2, 3, 4, 8, 16}) {
    if (32 % tp != 0) {
      EXPECT_NE(error_of([&] { tp_part(s, tp, 0, TpMode::kExact); }).find("does not divide the 32"), std::string::npos);
      continue;
    }
    int64_t rows_at = 0, ffn_at = 0;
    for (int i = 0; i < tp; ++i) {
      const TpPart p = tp_part(s, tp, i, TpMode::kExact);
      EXPECT_TRUE(p.exact);
      EXPECT_FALSE(p.attn_output_replicated);
      EXPECT_EQ(p.out_rows.begin, rows_at);
      EXPECT_EQ(p.ffn.begin, ffn_at);
      EXPECT_NEAR(static_cast<double>(p.out_rows.size()), 2048.0 / tp, 1.0);
      rows_at = p.out_rows.end;
      ffn_at = p.ffn.end;
      EXPECT_EQ(tensor_slice("blk.3.attn_output.weight", 2, s, p), (Slice{1, p.out_rows.begin, p.out_rows.end}));
      EXPECT_EQ(tensor_slice("blk.3.ffn_down.weight", 2, s, p), (Slice{1, p.out_rows.begin, p.out_rows.end}));
      EXPECT_EQ(tensor_slice("blk.3.ffn_gate.weight", 2, s, p), (Slice{1, p.ffn.begin, p.ffn.end}));
      EXPECT_EQ(tensor_slice("blk.3.attn_q.weight", 2, s, p), (Slice{1, p.q_heads.begin * 64, p.q_heads.end * 64}));
    }
    EXPECT_EQ(rows_at, 2048);
    EXPECT_EQ(ffn_at, 5632);
  }
  s.n_ff = 768;
  EXPECT_NE(error_of([&] { tp_part(s, 4, 0, TpMode::kSum); }).find("too few"), std::string::npos);
  EXPECT_EQ(tp_part(s, 4, 3, TpMode::kExact).ffn, (Range{576, 768}));
}

TEST(TpSlice, ReplicatesOrRefusesWhenAColumnSplitWouldCutBlocks) {
  TpShape s = tinyllama_shape();
  s.attn_output_block = 256;  // a Q4_K attention output: 4 heads x 64 per rank are whole blocks
  EXPECT_FALSE(tp_part(s, 8, 3).attn_output_replicated);
  // 2 heads x 64 = 128 columns cut a 256 block: no column split, so the tensor is replicated.
  const TpPart p16 = tp_part(s, 16, 5);
  EXPECT_TRUE(p16.attn_output_replicated);
  EXPECT_EQ(tensor_slice("blk.0.attn_output.weight", 2, s, p16), Slice{});
  EXPECT_EQ(tensor_slice("blk.0.attn_q.weight", 2, s, p16), (Slice{1, 10 * 64, 12 * 64}));
  s.attn_output_block = 32;
  s.ffn_down_block = 256;  // 5632 / 256 = 22 blocks
  EXPECT_NE(error_of([&] { tp_part(s, 32, 0); }).find("too few"), std::string::npos);
}

TEST(TpSlice, EveryFixtureModelSlicesAtTp2) {
  // The repack tool checks the same way before writing anything.
  for (const char* m : {"tiny-llama-q4_0", "tiny-llama-q4_k_m", "tiny-llama-f16"}) {
    auto f = gguf::File::open(std::string(RANKLM_FIXTURES_DIR) + "/models/" + m + ".gguf");
    const Plan p = make_plan(model_identity(*f), 2, 1, 2, {});
    EXPECT_EQ(error_of([&] { check_tp_slicing(*f, p); }), "") << m;
  }
}

TEST(Plan, LayerOfATensorNameIsParsedStrictly) {
  EXPECT_EQ(layer_of("blk.0.attn_q.weight"), 0);
  EXPECT_EQ(layer_of("blk.21.ffn_down.weight"), 21);
  EXPECT_EQ(layer_of("token_embd.weight"), std::nullopt);
  EXPECT_EQ(layer_of("blk.x.attn_q.weight"), std::nullopt);        // once an uncaught exception
  EXPECT_EQ(layer_of("blk.99999999999999999999.attn"), std::nullopt);  // and this one
  EXPECT_EQ(layer_of("blk.-1.attn"), std::nullopt);
  EXPECT_EQ(layer_of("blk..attn"), std::nullopt);
}

// Expert parallelism: only the stacked experts are cut (by expert, as even as possible); the
// router, attention and norms stay whole; the plan says so in JSON and its hash; a dense model
// or more EP ranks than experts is refused with the reason.
TEST(TpSlice, ExpertParallelCutsOnlyTheExperts) {
  TpShape s;
  s.n_embd = 256, s.n_head = 8, s.n_head_kv = 2, s.head_dim = 64, s.n_ff = 512, s.n_expert = 10;
  std::vector<Range> got;
  for (int i = 0; i < 4; ++i) {
    const TpPart p = tp_part(s, 4, i, TpMode::kExact, true);
    EXPECT_TRUE(p.ep);
    EXPECT_EQ(p.q_heads, (Range{0, 8}));
    EXPECT_EQ(tensor_slice("blk.3.attn_q.weight", 2, s, p), Slice{});
    EXPECT_EQ(tensor_slice("blk.3.ffn_gate_inp.weight", 2, s, p), Slice{});
    EXPECT_EQ(tensor_slice("blk.3.ffn_down_exps.weight", 3, s, p), (Slice{2, p.experts.begin, p.experts.end}));
    got.push_back(p.experts);
  }
  EXPECT_EQ(got, (std::vector<Range>{{0, 3}, {3, 6}, {6, 8}, {8, 10}}));
  // Attention split by heads, experts by expert (a TP group on an MoE model).
  const TpPart t = tp_part(s, 2, 1, TpMode::kExact);
  EXPECT_EQ(t.q_heads, (Range{4, 8}));
  EXPECT_EQ(tensor_slice("blk.0.ffn_up_exps.weight", 3, s, t), (Slice{2, 5, 10}));
  EXPECT_NE(error_of([&] { tp_part(s, 11, 0, TpMode::kExact, true); }).find("too few"), std::string::npos);
  s.n_expert = 0;
  EXPECT_NE(error_of([&] { tp_part(s, 2, 0, TpMode::kExact, true); }).find("no experts"), std::string::npos);
}

TEST(Plan, ExpertParallelRoundTripsAndIsRefusedForDenseModels) {
  ModelIdentity m = tinyllama();
  EXPECT_NE(error_of([&] { make_plan(m, 2, 1, 2, {}, true); }).find("no experts"), std::string::npos);
  m.n_expert = 8, m.n_expert_used = 2;
  const Plan p = make_plan(m, 4, 2, 2, {}, true);
  EXPECT_TRUE(p.ep);
  const nlohmann::json j = to_json(p);
  EXPECT_EQ(j["ep"], true);
  EXPECT_EQ(j["model"]["n_expert"], 8);
  const Plan q = from_json(j, "test");
  EXPECT_TRUE(q.ep);
  EXPECT_EQ(q.model.n_expert_used, 2);
  EXPECT_EQ(plan_hash(q), plan_hash(p));
  EXPECT_NE(plan_hash(make_plan(m, 4, 2, 2, {}, false)), plan_hash(p));
  EXPECT_NE(error_of([&] { make_plan(m, 16, 1, 16, {}, true); }).find("8 experts"), std::string::npos);
  nlohmann::json bad = j;
  bad["ep"] = "yes";
  EXPECT_NE(error_of([&] { from_json(bad, "plan.json"); }).find("'ep'"), std::string::npos);
}
