// Placement: a plan from what the ranks of a job actually are. Every rank reports its host,
// cores, NUMA nodes, memory, GPUs and a measured speed (read bandwidth with its threads: decode
// streams weights); host leaders time ping-pong latency and bandwidth between hosts. From that
// inventory (gathered under mpirun by `ranklm plan`, or read from a file), place():
//
//   1. groups hosts into sites by the measured latencies and orders them so the pipeline starts
//      on rank 0's host and crosses each slow link as few times as possible (network.h);
//   2. forms tensor-parallel groups inside a host (TP = the ranks per host, or the largest size
//      under it the model's heads allow; larger only over hosts of a site whose link latency is
//      below tp_latency_us), whatever the rank order, and makes each group a pipeline stage in
//      that order; without a TP size given, groups across the hosts of a site when the
//      prediction (predict.h) says the job runs at least 10% faster so;
//   3. splits the layers so the slowest stage is as fast as possible: layers go one at a time to
//      the stage whose step time (bytes it streams / its speed) stays lowest, counting the
//      output head on the last stage, and never beyond what fits in the memory of the stage's
//      smallest rank (weights, KV cache for n_ctx, a margin). A model that does not fit is
//      refused with the sizes, before any weight is read.
//
// A pure function of the inventory: tests run it on synthetic hosts and hwloc XML topologies.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "plan/plan.h"
#include "plan/tp_slice.h"
#include "sys/inventory.h"

namespace ranklm::plan {

using sys::RankInfo;  // what a rank reports of its place (sys/inventory.h)

struct HostLink {
  double latency_us = 0;
  double bandwidth_gbps = 0;
};

struct Inventory {
  std::vector<RankInfo> ranks;                                   // index = rank
  std::map<std::pair<std::string, std::string>, HostLink> links;  // (host a, host b), a < b
  const HostLink* link(const std::string& a, const std::string& b) const;
};

nlohmann::json inventory_to_json(const Inventory& inv);
Inventory inventory_from_json(const nlohmann::json& j, const std::string& source);

// What placement needs to know of the model's bytes.
struct ModelSizes {
  std::vector<uint64_t> layer_bytes;  // weights of each layer
  std::vector<uint64_t> layer_macs;   // multiply-adds of each layer per token (its matrices' elements)
  uint64_t embd_bytes = 0, output_bytes = 0, output_macs = 0;
  uint64_t kv_bytes_per_token_layer = 0;  // K and V, fp16, all KV heads
  std::vector<int64_t> layer_window;      // sliding window of each layer (0: every position)
  // Mixture of experts: each layer's stacked expert tensors (part of layer_bytes, not of
  // layer_macs) and their multiply-adds for one token through every expert; a token passes
  // through n_expert_used of the n_expert.
  std::vector<uint64_t> layer_expert_bytes, layer_expert_macs;
  int64_t n_expert = 0, n_expert_used = 0;
  // One token's multiply-adds by weight type (GGUF's names), as shares summing to 1: with the
  // inventory's decode_gmacs, the arithmetic time of a one-token step.
  std::map<std::string, double> decode_mac_share;
  // A rank's one-token rate for this model (1e9 multiply-adds/s): the shares' harmonic mix of
  // its decode_gmacs (a type it did not measure counts at its batched rate); 0: not measured.
  double decode_gmacs(const RankInfo& r) const;
  // The share of a layer's experts a step of n_tok tokens reads (every token's picks spread
  // evenly: 1 - (1 - used/n_expert)^n_tok), 0 for a dense model.
  double expert_read_share(double n_tok) const;
  // KV bytes of layer l for one sequence of n_ctx positions (kv_positions_held: a windowed
  // layer holds its window and one step of up to 512 tokens, the others every position).
  uint64_t kv_layer_bytes(int64_t l, int64_t n_ctx) const;
};
ModelSizes model_sizes(const gguf::File& f);

struct PlaceOptions {
  int tp = 0;                 // 0: as many ranks as a host has (or the largest size the heads allow)
  int64_t n_ctx = 4096;       // KV cache positions to reserve per rank (times n_seq)
  int n_seq = 1;              // sequences in flight (KV slots)
  double memory_fraction = 0.85;  // of a rank's memory the plan may use
  double tp_latency_us = 0;   // hosts closer than this may share a TP group (0: never)
  double site_latency_us = 0;  // links at or above this separate sites (0: found from the latencies)
  TpMode tp_mode = TpMode::kExact;  // the plan's TP mode (what the predictions assume)
  // MoE models: groups of `tp` ranks split the experts only (--ep N gives tp = N and true);
  // otherwise attention by heads and the experts by expert. Without --ep or --tp, the planner
  // predicts both and takes the faster.
  bool ep = false;
  bool ep_forced = false;
  // On one host, without a TP size given: one rank with every core of the job when the model
  // fits its memory (a batch job runs fastest so: no pipeline bubbles, no transfers or
  // collectives; docs/PERFORMANCE.md). false: always use every rank of the job.
  bool one_rank_per_host = true;
};

// The plan, with per-rank placement (host, cores, memory, estimated use, KV blocks) and why
// it has this layout filled in. Its world size may be smaller than the inventory's (one rank
// with all of a host's cores).
Plan place(const ModelIdentity& m, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
           const PlaceOptions& o);

// Bytes rank `rank` of plan p holds: its layers' share of the weights, the embedding and head
// where it has them, its KV cache.
uint64_t rank_bytes(const Plan& p, const ModelSizes& sizes, int rank, const PlaceOptions& o);

}  // namespace ranklm::plan
