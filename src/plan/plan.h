// The plan: how a model's layers and heads are spread over the ranks of a job. A value type
// with JSON (plan.json, versioned) and the checks that refuse impossible plans before any
// weight is read. Pipeline stages hold contiguous layer ranges (any split, uneven allowed);
// each stage is a tensor-parallel group of any ranks (placement puts a group on one host or
// site, whatever the rank numbers). The first stage embeds, the last applies the output head.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/tp_slice.h"

namespace ranklm::plan {

constexpr int kPlanVersion = 1;

// What the plan was made for: enough of the model to check a plan, and a hash of the GGUF
// header and tensor table that ties shards to the file they came from.
struct ModelIdentity {
  std::string name;
  std::string arch;
  int64_t n_layer = 0, n_head = 0, n_head_kv = 0, n_embd = 0, n_ff = 0, n_vocab = 0;
  int64_t n_expert = 0, n_expert_used = 0;  // MoE models (written only when > 0)
  std::string gguf_hash;  // 16 hex digits, FNV-1a 64 of the bytes before the data section
};

struct Stage {
  int64_t layer_begin = 0, layer_end = 0;  // [begin, end)
  std::vector<int> ranks;                  // ranks[tp index] = world rank; size = TP size
  int tp() const { return static_cast<int>(ranks.size()); }
};

// Where a rank runs, when the plan was made from the job's inventory (placement.h).
struct RankPlacement {
  std::string host;
  int cores = 0;
  uint64_t memory_bytes = 0;     // the rank's memory
  uint64_t estimated_bytes = 0;  // what this plan puts there (weights, KV cache)
  // KV blocks (16 positions of the rank's layers) the memory left beside its weights holds;
  // shown in the table, not stored in plan.json.
  int64_t kv_blocks = 0;
  int site = 0;  // the site (LAN) of its host, numbered in pipeline order (network.h)
};

// A pipeline stage boundary of a placed plan: the hosts it joins and their measured link
// (latency 0 on one host). Shown in the table; not stored in plan.json.
struct Hop {
  std::string from, to;
  double latency_us = 0, bandwidth_gbps = 0;
  bool crosses_sites = false;
};

struct Plan {
  int version = kPlanVersion;
  int world_size = 0;
  std::vector<Stage> stages;
  int embedding_stage = 0;
  int output_stage = 0;
  ModelIdentity model;
  // How TP members combine attn_output and ffn_down (tp_slice.h). Plans written before the
  // field existed have none and mean "sum"; it is written only when it is "exact".
  TpMode tp_mode = TpMode::kSum;
  // Expert parallelism: every group (stage with several ranks) splits only the experts of its
  // MoE layers; attention stays whole on each member. Written only when true. Without it, a
  // group splits attention by heads (TP) and the experts by expert.
  bool ep = false;
  std::vector<RankPlacement> placement;  // per rank; empty for plans made without an inventory
  // Why a placed plan has this layout, its stage boundaries (hops[s]: stage s to s + 1) and the
  // sites found (shown in the table; not stored in plan.json).
  std::string why;
  std::vector<Hop> hops;
  int n_sites = 0;
  double site_threshold_us = 0;

  // (stage, tp index) of a world rank; throws if the rank is not in the plan.
  std::pair<int, int> where(int rank) const;
};

// The rules every plan must follow (stages cover every layer once, in order; each rank in
// exactly one place; TP sizes compatible with the heads). Throws ranklm::Error with `what`
// (e.g. the file name) and the reason.
void validate(const Plan& p, const std::string& what);

// An even (or given) split. n_ranks = pp * tp; pp or tp 0 means "derive from the other"
// (both 0: one stage per rank). layers, when not empty, gives each stage's layer count.
// ep: the groups split the experts only (Plan::ep).
Plan make_plan(const ModelIdentity& m, int n_ranks, int pp, int tp, const std::vector<int64_t>& layers, bool ep = false);

nlohmann::json to_json(const Plan& p);
// Parses and validates; errors name `source` and the field.
Plan from_json(const nlohmann::json& j, const std::string& source);


// 16 hex digits identifying the plan (FNV-1a 64 of its canonical JSON).
std::string plan_hash(const Plan& p);

// The plan as a table for humans (ranklm plan prints it).
std::string plan_table(const Plan& p);

// FNV-1a 64 of bytes, as 16 hex digits (identity, not security).
std::string fnv1a64_hex(const void* data, size_t n);

}  // namespace ranklm::plan
