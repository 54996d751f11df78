// Where a rank sits in a plan, as the runtime needs it: its stage and TP group, and who it
// exchanges hidden states with. A value type computed from the plan alone.
//
// Hidden states leave a stage from every TP member (all hold the same values after the
// allreduce): member j of the next stage (TP size t1) receives from member j % t0 of the
// previous one (TP size t0), so the sends are spread over the group.
#pragma once

#include <vector>

#include "comm/ring.h"
#include "plan/plan.h"

namespace ranklm::comm {

struct Layout {
  int world_size = 1;
  int rank = 0;
  int stage = 0, n_stages = 1;
  int tp_index = 0;
  Group tp;                      // this stage's TP group (world ranks)
  int64_t layer_begin = 0, layer_end = 0;
  int hidden_from = -1;          // the rank sending this rank its input (-1 on the first stage)
  std::vector<int> hidden_to;    // the ranks this rank sends its output to (empty on the last stage)
  std::vector<int> first_stage;  // ranks of the first stage (they embed; sampled tokens go there)
  std::vector<int> last_stage;   // ranks of the last stage (each computes a share of the logits)
  int head_rank = 0;             // last stage, TP index 0: samples and sends logits to rank 0
  bool is_first() const { return stage == 0; }
  bool is_last() const { return stage == n_stages - 1; }

  static Layout of(const plan::Plan& p, int rank);
};

}  // namespace ranklm::comm
