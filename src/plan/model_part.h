// What one rank of a plan runs (docs/ARCHITECTURE.md, execution model): its stage's layers, its
// tensor-parallel share of their heads and FFN, the embedding on the first stage and its share
// of the vocabulary on the last.
#pragma once

#include <cstdint>
#include <vector>

#include "io/gguf.h"
#include "model/model.h"
#include "plan/plan.h"

namespace ranklm::plan {

// What rank `rank` of plan `p` runs. `model` is the whole model's header (for the slicing
// shape); n_vocab is split evenly over the last stage's TP group.
ModelPart model_part(const Plan& p, int rank, const gguf::File& model);

// The last stage's vocabulary split: member i computes rows [off[i], off[i+1]).
std::vector<int64_t> vocab_offsets(int64_t n_vocab, int tp);

}  // namespace ranklm::plan
