#include "comm/layout.h"

namespace ranklm::comm {

Layout Layout::of(const plan::Plan& p, int rank) {
  Layout l;
  l.world_size = p.world_size;
  l.rank = rank;
  const auto [stage, tpi] = p.where(rank);
  l.stage = stage;
  l.n_stages = static_cast<int>(p.stages.size());
  l.tp_index = tpi;
  const plan::Stage& st = p.stages[static_cast<size_t>(stage)];
  l.tp.ranks = st.ranks;
  l.tp.index = tpi;
  l.layer_begin = st.layer_begin;
  l.layer_end = st.layer_end;
  if (stage > 0) {
    const plan::Stage& prev = p.stages[static_cast<size_t>(stage - 1)];
    l.hidden_from = prev.ranks[static_cast<size_t>(tpi % prev.tp())];
  }
  if (stage + 1 < l.n_stages) {
    const plan::Stage& next = p.stages[static_cast<size_t>(stage + 1)];
    for (int j = 0; j < next.tp(); ++j) {
      if (j % st.tp() == tpi) l.hidden_to.push_back(next.ranks[static_cast<size_t>(j)]);
    }
  }
  l.first_stage = p.stages.front().ranks;
  l.last_stage = p.stages.back().ranks;
  l.head_rank = p.stages.back().ranks.front();
  return l;
}

}  // namespace ranklm::comm
