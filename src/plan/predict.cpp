#include "plan/predict.h"

#include <algorithm>
#include <cmath>

#include "plan/network.h"
#include "util/error.h"

namespace ranklm::plan {

namespace {

constexpr double kExchangeMaxBytes = 32 * 1024;  // comm/ring.h: the one-round all-reduce's limit

// Seconds for one message step over a link.
double step_s(const HostLink& l, double bytes) {
  return l.latency_us * 1e-6 + (l.bandwidth_gbps > 0 ? bytes / (l.bandwidth_gbps * 1e9) : 0.0);
}

// The slowest link inside a TP group (collectives go at the pace of their slowest hop).
HostLink group_link(const Inventory& inv, const std::vector<int>& ranks, const PredictOptions& o) {
  HostLink worst{0, 1e30};
  for (size_t i = 0; i < ranks.size(); ++i) {
    for (size_t j = i + 1; j < ranks.size(); ++j) {
      const HostLink l = rank_link(inv, ranks[i], ranks[j], o);
      worst.latency_us = std::max(worst.latency_us, l.latency_us);
      worst.bandwidth_gbps = std::min(worst.bandwidth_gbps, l.bandwidth_gbps);
    }
  }
  return worst;
}

// TP collectives of one layer for a step of n_tok tokens. MoE layers (n_used > 0): the
// attention's (none in an EP group), then the experts' outputs: gathered in exact mode (every
// token's n_used rows of n_embd), all-reduced in sum mode.
double tp_layer_s(const Plan& p, const TpShape& shape, int t, const HostLink& l, double n_tok, double n_used) {
  if (t <= 1) return 0;
  const double f = 4.0 * n_tok;  // bytes per value per step (f32)
  const double embd = static_cast<double>(shape.n_embd);
  const double bytes = f * embd;
  auto allreduce = [&] {
    return bytes <= kExchangeMaxBytes ? step_s(l, bytes * (t - 1)) : 2.0 * (t - 1) * step_s(l, bytes / t);
  };
  double s = 0;
  if (p.tp_mode == TpMode::kExact) {
    std::vector<double> widths;
    if (!p.ep) widths = {static_cast<double>(shape.n_head * shape.head_dim), embd};
    if (n_used > 0) {
      widths.push_back(n_used * embd);
    } else {
      widths.push_back(static_cast<double>(shape.n_ff));
      widths.push_back(embd);
    }
    for (const double width : widths) s += (t - 1) * step_s(l, f * width / t);
    return s;
  }
  return (p.ep ? 1 : 2) * allreduce();
}

// A rank's read speed in a step. all_busy (a batch: every stage works at once): what it measured
// with every rank reading (speed_gbps). Otherwise (one sequence: one stage at a time) its solo
// speed, shared with the members of its stage on the same machine: at most the machine's
// bandwidth (the sum of its ranks' speeds when all read) over them.
double read_speed(const Inventory& inv, const Stage& st, int r, bool all_busy) {
  const RankInfo& ri = inv.ranks[static_cast<size_t>(r)];
  if (all_busy || ri.solo_speed_gbps <= 0) return ri.speed_gbps;
  double machine_total = 0;
  for (const RankInfo& x : inv.ranks) {
    if (x.machine_key() == ri.machine_key()) machine_total += x.speed_gbps;
  }
  int busy = 0;
  for (int q : st.ranks) busy += inv.ranks[static_cast<size_t>(q)].machine_key() == ri.machine_key() ? 1 : 0;
  return std::min(ri.solo_speed_gbps, machine_total / std::max(1, busy));
}

// One stage's time for a step of n_tok tokens: weights, multiply-adds, TP collectives.
struct StageCost {
  double compute_s = 0, tp_s = 0;
};
StageCost stage_cost(const Plan& p, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv, int s,
                     double n_tok, bool all_busy, const PredictOptions& o) {
  const Stage& st = p.stages[static_cast<size_t>(s)];
  const int t = st.tp();
  // Per step: the weights a member reads and its multiply-adds per token. An MoE layer reads the
  // share of its experts the step's tokens pick, and a token goes through n_expert_used of them.
  double bytes = 0, macs = 0;
  const double split = p.ep ? 1.0 : t;  // what divides attention and dense FFNs
  const double picked = sizes.n_expert > 0 ? static_cast<double>(sizes.n_expert_used) / static_cast<double>(sizes.n_expert) : 0;
  for (int64_t l = st.layer_begin; l < st.layer_end; ++l) {
    const size_t i = static_cast<size_t>(l);
    const double experts = sizes.layer_expert_bytes.empty() ? 0.0 : static_cast<double>(sizes.layer_expert_bytes[i]);
    bytes += (static_cast<double>(sizes.layer_bytes[i]) - experts) / split + experts * sizes.expert_read_share(n_tok) / t;
    if (i < sizes.layer_macs.size()) macs += static_cast<double>(sizes.layer_macs[i]) / split;
    if (!sizes.layer_expert_macs.empty()) macs += static_cast<double>(sizes.layer_expert_macs[i]) * picked / t;
  }
  if (s == p.output_stage) bytes += static_cast<double>(sizes.output_bytes) / t, macs += static_cast<double>(sizes.output_macs) / t;
  StageCost c;
  for (int r : st.ranks) {  // the group goes at its slowest member's pace
    const RankInfo& ri = inv.ranks[static_cast<size_t>(r)];
    double speed = read_speed(inv, st, r, all_busy), gmacs = ri.compute_gmacs, decode = sizes.decode_gmacs(ri);
    // A rank the plan gives more cores than it was measured with (one rank with every core of
    // its host): it reads and computes as all the host's measured ranks did together.
    if (static_cast<size_t>(r) < p.placement.size() && p.placement[static_cast<size_t>(r)].cores > ri.cores) {
      speed = gmacs = decode = 0;
      for (const RankInfo& x : inv.ranks) {
        if (x.host == ri.host) speed += x.speed_gbps, gmacs += x.compute_gmacs, decode += sizes.decode_gmacs(x);
      }
    }
    const double mem = bytes / (std::max(speed, 1e-3) * 1e9);
    // Arithmetic: the batched rate for n_tok tokens, but never less than one token's pass at
    // the one-token rate (a step of a few tokens runs the one- and two-token kernels).
    double cmp = gmacs > 0 ? n_tok * macs / (gmacs * 1e9) : 0.0;
    if (decode > 0) cmp = std::max(cmp, macs / (decode * 1e9));
    c.compute_s = std::max(c.compute_s, std::max(mem, cmp));
  }
  c.tp_s = static_cast<double>(st.layer_end - st.layer_begin) *
           tp_layer_s(p, shape, t, group_link(inv, st.ranks, o), n_tok, static_cast<double>(sizes.n_expert_used));
  return c;
}

// Stage boundaries and the way back to rank 0 for a step of n_tok tokens.
double hops_s(const Plan& p, const TpShape& shape, const Inventory& inv, double n_tok, const PredictOptions& o) {
  const double hidden = n_tok * static_cast<double>(shape.n_embd) * (o.q8_hops ? 34.0 / 32.0 : 4.0);
  double s = 0;
  for (size_t i = 0; i + 1 < p.stages.size(); ++i) {
    s += step_s(rank_link(inv, p.stages[i].ranks[0], p.stages[i + 1].ranks[0], o), hidden);
  }
  const int head = p.stages.back().ranks[0];
  if (head != 0) s += step_s(rank_link(inv, head, 0, o), n_tok * 4.0);  // sampled tokens
  return s;
}

}  // namespace

HostLink rank_link(const Inventory& inv, int a, int b, const PredictOptions& o) {
  const std::string& ha = inv.ranks[static_cast<size_t>(a)].host;
  const std::string& hb = inv.ranks[static_cast<size_t>(b)].host;
  if (const HostLink* l = inv.link(ha, hb)) return *l;
  if (ha == hb) return {o.local_latency_us, o.local_bandwidth_gbps};
  fail("no measured link between hosts {} and {}: gather the inventory under mpirun (ranklm plan --save-inventory)", ha, hb);
}

Prediction predict(const Plan& p, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
                   const PredictOptions& o) {
  if (static_cast<int>(inv.ranks.size()) < p.world_size) {
    fail("the inventory lists {} ranks but the plan has {}", inv.ranks.size(), p.world_size);
  }
  Prediction r;
  const int n_stages = static_cast<int>(p.stages.size());
  // One sequence reads at the speed the batch figure assumes for one micro-batch in flight, so
  // with one sequence the two columns agree (tokens/s = 1000 / ms per token).
  for (int s = 0; s < n_stages; ++s) {
    const StageCost c = stage_cost(p, sizes, shape, inv, s, 1, n_stages == 1, o);
    r.compute_ms += c.compute_s * 1e3;
    r.tp_ms += c.tp_s * 1e3;
  }
  r.pp_ms = hops_s(p, shape, inv, 1, o) * 1e3;
  r.decode_ms = r.compute_ms + r.tp_ms + r.pp_ms;
  // The batch: one micro-batch per stage in flight.
  const int n_micro = std::min(n_stages, std::max(1, o.n_seq));
  const double b = std::ceil(static_cast<double>(std::max(1, o.n_seq)) / n_micro);
  double round_trip = hops_s(p, shape, inv, b, o), slowest = 0;
  for (int s = 0; s < n_stages; ++s) {
    const StageCost c = stage_cost(p, sizes, shape, inv, s, b, n_micro > 1 || n_stages == 1, o);
    round_trip += c.compute_s + c.tp_s;
    if (c.compute_s + c.tp_s > slowest) slowest = c.compute_s + c.tp_s, r.slowest_stage = s;
  }
  const double period = std::max(round_trip, n_micro * slowest);
  r.batch_tokens_s = period > 0 ? n_micro * b / period : 0;
  return r;
}

}  // namespace ranklm::plan

namespace ranklm::plan {

namespace {

int site_crossings(const Plan& p) {
  int n = 0;
  for (const Hop& h : p.hops) n += h.crosses_sites ? 1 : 0;
  return n;
}

// Where a plan's TP groups run: inside hosts, across hosts of a site, or across sites.
std::string tp_reach(const Plan& p) {
  std::string reach = "inside hosts";
  for (const Stage& st : p.stages) {
    for (int r : st.ranks) {
      const RankPlacement& a = p.placement[static_cast<size_t>(st.ranks[0])];
      const RankPlacement& b = p.placement[static_cast<size_t>(r)];
      if (a.site != b.site) return "across sites";
      if (a.host != b.host) reach = "across hosts";
    }
  }
  return reach;
}

}  // namespace

std::vector<Candidate> candidates(const Plan& chosen, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
                                  const PlaceOptions& po, const PredictOptions& o) {
  std::vector<Candidate> out;
  std::vector<std::string> seen;
  auto add = [&](std::string name, Plan p) {
    const std::string key = plan_hash(p) + tp_mode_name(p.tp_mode) + (p.ep ? "ep" : "");
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) return;
    seen.push_back(key);
    Candidate c{std::move(name), p, predict(p, sizes, shape, inv, o), out.empty()};
    out.push_back(std::move(c));
  };
  add("chosen", chosen);
  const int n = static_cast<int>(inv.ranks.size());
  PlaceOptions any = po;
  any.tp_latency_us = 1e12;  // alternatives may put TP groups anywhere
  any.one_rank_per_host = false;
  any.ep_forced = true;
  for (int t = 1; t <= n; ++t) {
    if (n % t != 0) continue;
    any.tp = t;
    // MoE models: groups with attention split by heads, and EP groups (attention whole).
    for (const bool ep : {false, true}) {
      if (ep && (shape.n_expert == 0 || t < 2)) continue;
      any.ep = ep;
      try {
        Plan p = place(chosen.model, sizes, shape, inv, any);
        p.tp_mode = chosen.tp_mode;
        const std::string reach = t > 1 ? ", groups " + tp_reach(p) : "";
        add(fmt::format("{} {} x PP {}{}", ep ? "EP" : "TP", t, static_cast<int>(p.stages.size()), reach), p);
      } catch (const Error&) {
        // A TP size this model or these ranks do not allow.
      }
    }
  }
  any.ep = false;
  // The stages in the hostfile's rank order (what a placement blind to the network gives).
  PlaceOptions same = po;
  same.site_latency_us = 1e15;  // one site: hosts in the order of their first rank
  const int per_host = ranks_per_host(inv);
  same.tp = std::min(chosen.stages.front().tp(), per_host);  // groups inside hosts
  while (same.tp > 1 && per_host % same.tp != 0) --same.tp;
  same.tp_latency_us = 1e12;
  same.one_rank_per_host = false;
  try {
    Plan p = place(chosen.model, sizes, shape, inv, same);
    p.tp_mode = chosen.tp_mode;
    p.hops.clear();
    for (size_t s = 0; s + 1 < p.stages.size(); ++s) {  // its boundaries over the real links
      const int a = p.stages[s].ranks[0], b = p.stages[s + 1].ranks[0];
      const HostLink l = rank_link(inv, a, b, o);
      // Sites by host: the chosen plan may have fewer ranks than the job (one rank per host).
      auto site_of = [&](int r) {
        for (const RankPlacement& rp : chosen.placement) {
          if (rp.host == inv.ranks[static_cast<size_t>(r)].host) return rp.site;
        }
        return 0;
      };
      const int sa = site_of(a), sb = site_of(b);
      p.hops.push_back({inv.ranks[static_cast<size_t>(a)].host, inv.ranks[static_cast<size_t>(b)].host, l.latency_us,
                        l.bandwidth_gbps, sa != sb});
      p.placement[static_cast<size_t>(a)].site = sa;
      p.placement[static_cast<size_t>(b)].site = sb;
    }
    add("stages in rank order", p);
  } catch (const Error&) {
  }
  if (chosen.stages.front().tp() > 1 || out.size() > 1) {
    for (size_t i = 0, k = out.size(); i < k; ++i) {
      if (out[i].plan.stages.front().tp() < 2) continue;
      Plan p = out[i].plan;
      p.tp_mode = p.tp_mode == TpMode::kExact ? TpMode::kSum : TpMode::kExact;
      add(out[i].name + ", " + tp_mode_name(p.tp_mode) + " mode", p);
    }
  }
  return out;
}

std::string explain_table(const std::vector<Candidate>& cs, const PredictOptions& o) {
  std::string t = fmt::format("predicted from the inventory (docs/CLUSTER.md, \"What the planner predicts\"):\n"
                              "  {:<44}  {:>6}  {:>8}  {:>9}  {:>27}  {:>12}\n",
                              "layout", "TP x PP", "crossings", "ms/token", "(weights + TP + PP ms)", fmt::format("tok/s ({} seq)", o.n_seq));
  for (const Candidate& c : cs) {
    const Prediction& p = c.pred;
    t += fmt::format("{} {:<44}  {:>3} x {:<2}  {:>8}  {:>9.2f}  {:>27}  {:>12.1f}\n", c.chosen ? "*" : " ",
                     c.chosen ? c.name + " (" + tp_mode_name(c.plan.tp_mode) + " TP)" : c.name,
                     c.plan.stages.front().tp(), c.plan.stages.size(), site_crossings(c.plan), p.decode_ms,
                     fmt::format("({:.2f} + {:.2f} + {:.2f})", p.compute_ms, p.tp_ms, p.pp_ms), p.batch_tokens_s);
  }
  // A faster alternative is named with both figures, so the note never contradicts the layout
  // line (which chose for batch throughput on one host, or by --tp and --layout).
  const Candidate& chosen = cs.front();
  for (const Candidate& c : cs) {
    if (c.chosen || !(c.pred.decode_ms < 0.9 * chosen.pred.decode_ms)) continue;
    const double faster = 100 * (chosen.pred.decode_ms / c.pred.decode_ms - 1);
    if (c.pred.batch_tokens_s > 1.1 * chosen.pred.batch_tokens_s) {
      t += fmt::format("note: '{}' is predicted {:.0f}% faster per token and {:.0f}% faster at {} sequences than the "
                       "chosen plan, which follows --layout / --tp; plan with those options changed to pick it\n",
                       c.name, faster, 100 * (c.pred.batch_tokens_s / chosen.pred.batch_tokens_s - 1), o.n_seq);
    } else {
      t += fmt::format("note: '{}' is predicted {:.0f}% faster per token for one sequence, but the chosen plan gives "
                       "{:.1f} tokens/s at {} sequences against its {:.1f} (a batch job's figure)\n",
                       c.name, faster, chosen.pred.batch_tokens_s, o.n_seq, c.pred.batch_tokens_s);
    }
    break;
  }
  return t;
}

}  // namespace ranklm::plan
