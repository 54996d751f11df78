// What a placed plan should cost, from the inventory alone (ranklm plan --explain): a model of
// one decode step built from what the probe measured.
//
//   compute   each rank streams its weights once per step: its layers' bytes / TP, plus its share
//             of the output head on the last stage, at its measured read speed (for one
//             sequence, one stage works at a time: the rank's speed alone on its machine, shared
//             only with its own stage's ranks there; for a batch every stage works at once: the
//             speed measured with every rank reading); a step of B tokens costs at least B x its
//             multiply-adds at its measured compute rate.
//   TP        per layer, exact mode: four all-gathers (attention heads, attn_output rows, FFN
//             activations, ffn_down rows), each TP-1 ring steps; sum mode: two all-reduces, one
//             exchange round each up to 32 KB, else 2(TP-1) ring steps. A step costs the link's
//             latency plus its bytes over the link's bandwidth (the host's own link for a group
//             inside a host).
//   PP        each stage boundary: the link's latency plus the hidden states' bytes (f32, or Q8_0
//             blocks); the sampled tokens go back from the last stage to rank 0.
//
// Decode time per token (one sequence) is the sum along the pipeline. Batch throughput with
// n_seq sequences: the scheduler keeps one micro-batch per stage in flight, so a step's period
// is the larger of one micro-batch's round trip through the pipeline and the slowest stage's
// time for all micro-batches.
#pragma once

#include <string>
#include <vector>

#include "plan/placement.h"
#include "plan/plan.h"
#include "plan/tp_slice.h"

namespace ranklm::plan {

struct Prediction {
  double decode_ms = 0;          // one sequence, per token
  double compute_ms = 0;         // its parts: weights streamed along the pipeline,
  double tp_ms = 0;              // TP collectives,
  double pp_ms = 0;              // stage boundaries and the tokens' way back to rank 0
  double batch_tokens_s = 0;     // n_seq sequences decoding together
  int slowest_stage = 0;         // the stage that bounds the batch
};

struct PredictOptions {
  int n_seq = 16;                // sequences in flight for the batch figure
  bool q8_hops = false;          // hidden states as Q8_0 blocks on pipeline hops
  double local_latency_us = 2;   // ranks of one host, when the inventory has no own-host link
  double local_bandwidth_gbps = 10;
};

Prediction predict(const Plan& p, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
                   const PredictOptions& o);

// The link between the hosts of two ranks (their host's own link, or the local defaults).
HostLink rank_link(const Inventory& inv, int a, int b, const PredictOptions& o);

}  // namespace ranklm::plan

namespace ranklm::plan {

// ranklm plan --explain: the chosen plan and the alternatives placement could have made from the
// same inventory (other TP sizes, with groups across hosts or sites where that is what they
// take; the stages in the hostfile's rank order; the other TP mode), each with its prediction.
struct Candidate {
  std::string name;
  Plan plan;
  Prediction pred;
  bool chosen = false;
};
std::vector<Candidate> candidates(const Plan& chosen, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
                                  const PlaceOptions& po, const PredictOptions& o);
std::string explain_table(const std::vector<Candidate>& cs, const PredictOptions& o);

}  // namespace ranklm::plan
