#include "plan/plan.h"


#include <fmt/format.h>

#include <numeric>
#include <set>

#include "util/checksum.h"
#include "util/error.h"

namespace ranklm::plan {

using nlohmann::json;

std::string fnv1a64_hex(const void* data, size_t n) { return fmt::format("{:016x}", fnv1a64(data, n)); }

std::pair<int, int> Plan::where(int rank) const {
  for (size_t s = 0; s < stages.size(); ++s) {
    for (size_t i = 0; i < stages[s].ranks.size(); ++i) {
      if (stages[s].ranks[i] == rank) return {static_cast<int>(s), static_cast<int>(i)};
    }
  }
  fail("plan: rank {} is not in the plan (world size {})", rank, world_size);
}

void validate(const Plan& p, const std::string& what) {
  const ModelIdentity& m = p.model;
  if (p.version != kPlanVersion) {
    fail("{}: 'version': {} is not supported (this build reads version {}); remake the plan with "
         "ranklm plan", what, p.version, kPlanVersion);
  }
  if (m.n_layer <= 0 || m.n_head <= 0 || m.n_head_kv <= 0 || m.n_head % m.n_head_kv != 0) {
    fail("{}: 'model': layer and head counts ({} layers, {} heads, {} KV heads) are not a valid "
         "model", what, m.n_layer, m.n_head, m.n_head_kv);
  }
  if (p.stages.empty()) fail("{}: 'stages': empty", what);
  if (p.world_size <= 0) fail("{}: 'world_size': {} must be >= 1", what, p.world_size);
  if (static_cast<int64_t>(p.stages.size()) > m.n_layer) {
    fail("{}: {} pipeline stages but the model has only {} layers; use at most {} stages", what,
         p.stages.size(), m.n_layer, m.n_layer);
  }
  int64_t next = 0;
  std::set<int> seen;
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const Stage& st = p.stages[s];
    if (st.layer_begin != next || st.layer_end <= st.layer_begin) {
      fail("{}: stage {}: layers [{}, {}) must start at {} and hold at least one layer (stages "
           "cover layers 0..{} in order)", what, s, st.layer_begin, st.layer_end, next, m.n_layer - 1);
    }
    next = st.layer_end;
    const int tp = st.tp();
    if (tp < 1) fail("{}: stage {}: no ranks", what, s);
    if (p.ep) {
      if (tp > m.n_expert) {
        fail("{}: stage {}: {} ranks of expert parallelism but the model has {} experts; use an EP size of at most {}",
             what, s, tp, m.n_expert, m.n_expert);
      }
    } else if (m.n_head % tp != 0) {
      fail("{}: stage {}: tensor-parallel size {} does not divide the {} attention heads; use a "
           "TP size that divides {}", what, s, tp, m.n_head, m.n_head);
    }
    if (!p.ep && m.n_head_kv % tp != 0 && tp % m.n_head_kv != 0) {
      fail("{}: stage {}: tensor-parallel size {} neither divides the {} KV heads nor is a "
           "multiple of them (to replicate them); use a TP size that does", what, s, tp, m.n_head_kv);
    }
    for (int r : st.ranks) {
      if (r < 0 || r >= p.world_size) {
        fail("{}: stage {}: rank {} is outside 0..{} (world size {})", what, s, r, p.world_size - 1,
             p.world_size);
      }
      if (!seen.insert(r).second) fail("{}: rank {} appears twice in the plan", what, r);
    }
  }
  if (next != m.n_layer) {
    fail("{}: stages cover layers 0..{} but the model has {} layers", what, next - 1, m.n_layer);
  }
  if (static_cast<int>(seen.size()) != p.world_size) {
    fail("{}: the stages hold {} ranks but 'world_size' is {}", what, seen.size(), p.world_size);
  }
  const int last = static_cast<int>(p.stages.size()) - 1;
  if (p.embedding_stage != 0) fail("{}: 'embedding_stage': {} (must be 0, the first stage)", what, p.embedding_stage);
  if (p.output_stage != last) fail("{}: 'output_stage': {} (must be {}, the last stage)", what, p.output_stage, last);
}

Plan make_plan(const ModelIdentity& m, int n_ranks, int pp, int tp, const std::vector<int64_t>& layers, bool ep) {
  if (n_ranks < 1) fail("--ranks: {} must be >= 1", n_ranks);
  if (pp < 0 || tp < 0) fail("--pp / --tp: must be >= 1");
  if (pp == 0 && !layers.empty()) pp = static_cast<int>(layers.size());
  if (pp == 0 && tp == 0) {
    pp = n_ranks;
    tp = 1;
  } else if (pp == 0) {
    if (n_ranks % tp != 0) fail("--tp {}: does not divide --ranks {}", tp, n_ranks);
    pp = n_ranks / tp;
  } else if (tp == 0) {
    if (n_ranks % pp != 0) fail("--pp {}: does not divide --ranks {}", pp, n_ranks);
    tp = n_ranks / pp;
  }
  if (pp * tp != n_ranks) fail("--pp {} x --tp {} = {} ranks, but --ranks is {}", pp, tp, pp * tp, n_ranks);
  if (pp > m.n_layer) {
    fail("{} pipeline stages but the model has only {} layers; use at most {} stages", pp, m.n_layer, m.n_layer);
  }
  std::vector<int64_t> counts = layers;
  if (counts.empty()) {
    for (int s = 0; s < pp; ++s) counts.push_back(m.n_layer / pp + (s < m.n_layer % pp ? 1 : 0));
  } else {
    if (static_cast<int>(counts.size()) != pp) {
      fail("--layers: {} stage sizes given for {} pipeline stages", counts.size(), pp);
    }
    const int64_t sum = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    for (int64_t c : counts) if (c < 1) fail("--layers: every stage needs at least one layer (got {})", c);
    if (sum != m.n_layer) fail("--layers: stage sizes add up to {}, but the model has {} layers", sum, m.n_layer);
  }
  Plan p;
  p.world_size = n_ranks;
  p.model = m;
  int64_t layer = 0;
  int rank = 0;
  for (int s = 0; s < pp; ++s) {
    Stage st;
    st.layer_begin = layer;
    st.layer_end = layer + counts[s];
    layer = st.layer_end;
    for (int i = 0; i < tp; ++i) st.ranks.push_back(rank++);
    p.stages.push_back(st);
  }
  p.embedding_stage = 0;
  p.output_stage = pp - 1;
  p.ep = ep;
  if (ep && m.n_expert == 0) fail("--ep: the model has no experts (it is dense); use --tp");
  validate(p, "requested plan");
  return p;
}

json to_json(const Plan& p) {
  json stages = json::array();
  for (const Stage& s : p.stages) {
    stages.push_back({{"layers", {s.layer_begin, s.layer_end}}, {"tp", s.tp()}, {"ranks", s.ranks}});
  }
  const ModelIdentity& m = p.model;
  json j = {{"version", p.version},
            {"world_size", p.world_size},
            {"embedding_stage", p.embedding_stage},
            {"output_stage", p.output_stage},
            {"stages", stages},
            {"model",
             {{"name", m.name}, {"architecture", m.arch}, {"n_layer", m.n_layer}, {"n_head", m.n_head},
              {"n_head_kv", m.n_head_kv}, {"n_embd", m.n_embd}, {"n_ff", m.n_ff}, {"n_vocab", m.n_vocab},
              {"gguf_hash", m.gguf_hash}}}};
  if (m.n_expert > 0) {
    j["model"]["n_expert"] = m.n_expert;
    j["model"]["n_expert_used"] = m.n_expert_used;
  }
  if (p.tp_mode != TpMode::kSum) j["tp_mode"] = tp_mode_name(p.tp_mode);
  if (p.ep) j["ep"] = true;
  if (!p.placement.empty()) {
    json pl = json::array();
    for (size_t r = 0; r < p.placement.size(); ++r) {
      const RankPlacement& x = p.placement[r];
      pl.push_back({{"rank", r}, {"host", x.host}, {"cores", x.cores}, {"memory_bytes", x.memory_bytes},
                    {"estimated_bytes", x.estimated_bytes}, {"site", x.site}});
    }
    j["placement"] = pl;
  }
  return j;
}

namespace {

const json& field(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("{}: missing field '{}'", where, key);
  return j.at(key);
}

template <typename T>
T int_field(const json& j, const char* key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_number_integer()) fail("{}: field '{}' must be an integer (got {})", where, key, v.dump());
  return v.get<T>();
}

std::string str_field(const json& j, const char* key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_string()) fail("{}: field '{}' must be a string (got {})", where, key, v.dump());
  return v.get<std::string>();
}

}  // namespace

Plan from_json(const json& j, const std::string& source) {
  Plan p;
  p.version = int_field<int>(j, "version", source);
  if (p.version != kPlanVersion) {
    fail("{}: 'version': {} is not supported (this build reads version {}); remake the plan with "
         "ranklm plan", source, p.version, kPlanVersion);
  }
  p.world_size = int_field<int>(j, "world_size", source);
  p.embedding_stage = int_field<int>(j, "embedding_stage", source);
  p.output_stage = int_field<int>(j, "output_stage", source);
  const json& m = field(j, "model", source);
  const std::string mw = source + ": model";
  p.model.name = str_field(m, "name", mw);
  p.model.arch = str_field(m, "architecture", mw);
  p.model.n_layer = int_field<int64_t>(m, "n_layer", mw);
  p.model.n_head = int_field<int64_t>(m, "n_head", mw);
  p.model.n_head_kv = int_field<int64_t>(m, "n_head_kv", mw);
  p.model.n_embd = int_field<int64_t>(m, "n_embd", mw);
  p.model.n_ff = int_field<int64_t>(m, "n_ff", mw);
  p.model.n_vocab = int_field<int64_t>(m, "n_vocab", mw);
  p.model.gguf_hash = str_field(m, "gguf_hash", mw);
  if (m.contains("n_expert")) {
    p.model.n_expert = int_field<int64_t>(m, "n_expert", mw);
    p.model.n_expert_used = int_field<int64_t>(m, "n_expert_used", mw);
  }
  const json& st = field(j, "stages", source);
  if (!st.is_array()) fail("{}: field 'stages' must be an array", source);
  for (size_t s = 0; s < st.size(); ++s) {
    const std::string w = fmt::format("{}: stages[{}]", source, s);
    Stage stage;
    const json& l = field(st[s], "layers", w);
    if (!l.is_array() || l.size() != 2 || !l[0].is_number_integer() || !l[1].is_number_integer()) {
      fail("{}: field 'layers' must be [begin, end] (got {})", w, l.dump());
    }
    stage.layer_begin = l[0].get<int64_t>();
    stage.layer_end = l[1].get<int64_t>();
    const json& r = field(st[s], "ranks", w);
    if (!r.is_array()) fail("{}: field 'ranks' must be an array of ranks", w);
    for (const json& x : r) {
      if (!x.is_number_integer()) fail("{}: field 'ranks': {} is not a rank number", w, x.dump());
      stage.ranks.push_back(x.get<int>());
    }
    const int tp = int_field<int>(st[s], "tp", w);
    if (tp != stage.tp()) fail("{}: 'tp' is {} but {} ranks are listed", w, tp, stage.tp());
    p.stages.push_back(stage);
  }
  if (j.contains("tp_mode")) {
    const std::string m = str_field(j, "tp_mode", source);
    if (m == "exact") {
      p.tp_mode = TpMode::kExact;
    } else if (m != "sum") {
      fail("{}: field 'tp_mode': '{}' is not a TP mode (exact or sum)", source, m);
    }
  }
  if (j.contains("ep")) {
    const json& e = j.at("ep");
    if (!e.is_boolean()) fail("{}: field 'ep' must be true or false (got {})", source, e.dump());
    p.ep = e.get<bool>();
    if (p.ep && p.model.n_expert == 0) fail("{}: field 'ep': the model has no experts (model.n_expert)", source);
  }
  if (j.contains("placement")) {
    const json& pl = j.at("placement");
    if (!pl.is_array() || static_cast<int>(pl.size()) != p.world_size) {
      fail("{}: field 'placement' must list every rank ({} entries)", source, p.world_size);
    }
    for (size_t r = 0; r < pl.size(); ++r) {
      const std::string w = fmt::format("{}: placement[{}]", source, r);
      RankPlacement x;
      x.host = str_field(pl[r], "host", w);
      x.cores = int_field<int>(pl[r], "cores", w);
      x.memory_bytes = int_field<uint64_t>(pl[r], "memory_bytes", w);
      x.estimated_bytes = int_field<uint64_t>(pl[r], "estimated_bytes", w);
      if (pl[r].contains("site")) x.site = int_field<int>(pl[r], "site", w);
      p.placement.push_back(x);
    }
  }
  validate(p, source);
  return p;
}


std::string plan_hash(const Plan& p) {
  const std::string s = to_json(p).dump();  // keys sorted: canonical
  return fnv1a64_hex(s.data(), s.size());
}

namespace {

std::string link_text(double latency_us, double bandwidth_gbps) {
  std::string t = latency_us >= 1000 ? fmt::format("{:.1f} ms", latency_us / 1000) : fmt::format("{:.0f} us", latency_us);
  if (bandwidth_gbps > 0) t += fmt::format(", {:.3g} GB/s", bandwidth_gbps);
  return t;
}

// The stage boundaries of a placed plan: which hosts each joins and over what link.
std::string pipeline_line(const Plan& p) {
  if (p.hops.empty()) return "";
  std::string out = "pipeline: " + p.hops.front().from;
  int crossings = 0;
  for (const Hop& h : p.hops) {
    if (h.from == h.to) {
      out += " -> (same host)";
      continue;
    }
    crossings += h.crosses_sites ? 1 : 0;
    out += fmt::format(" {} {} ({}{})", h.crosses_sites ? "=>" : "->", h.to, h.crosses_sites ? "between sites, " : "",
                       link_text(h.latency_us, h.bandwidth_gbps));
  }
  out += "\n";
  if (p.n_sites > 1) {
    out += fmt::format("sites: {} (links of {} or more separate them); the pipeline crosses between sites {} time{}\n",
                       p.n_sites, link_text(p.site_threshold_us, 0), crossings, crossings == 1 ? "" : "s");
  }
  return out;
}

}  // namespace

std::string plan_table(const Plan& p) {
  const ModelIdentity& m = p.model;
  std::string out = fmt::format("plan for {} ({}, {} layers, {} heads / {} KV heads): {} ranks, {} "
                                "pipeline stage{}\n",
                                m.name.empty() ? "model" : m.name, m.arch, m.n_layer, m.n_head,
                                m.n_head_kv, p.world_size, p.stages.size(), p.stages.size() == 1 ? "" : "s");
  out += fmt::format("{:>5}  {:>9}  {:>6}  {:>3}  {:<24}  {}\n", "stage", "layers", "count", "tp", "ranks", "holds");
  if (!p.placement.empty()) {
    // Placed plans: one line per rank with its host and memory.
    out.clear();
    out += fmt::format("plan for {} ({}, {} layers, {} heads / {} KV heads): {} ranks, {} pipeline stage{}\n",
                       m.name.empty() ? "model" : m.name, m.arch, m.n_layer, m.n_head, m.n_head_kv, p.world_size,
                       p.stages.size(), p.stages.size() == 1 ? "" : "s");
    out += fmt::format("{:>5}  {:>4}  {:<20}  {:>4}  {:>5}  {:>9}  {:>6}  {:>3}  {:>6}  {:>10}  {:>10}  {:>9}  {}\n", "stage",
                       "rank", "host", "site", "cores", "layers", "count", "tp", "tp idx", "memory", "plan uses", "KV blocks", "holds");
    for (size_t s = 0; s < p.stages.size(); ++s) {
      const Stage& st = p.stages[s];
      std::string holds;
      if (static_cast<int>(s) == p.embedding_stage) holds += "embedding";
      if (static_cast<int>(s) == p.output_stage) holds += std::string(holds.empty() ? "" : ", ") + "output head";
      for (int i = 0; i < st.tp(); ++i) {
        const RankPlacement& x = p.placement[static_cast<size_t>(st.ranks[static_cast<size_t>(i)])];
        out += fmt::format("{:>5}  {:>4}  {:<20}  {:>4}  {:>5}  {:>9}  {:>6}  {:>3}  {:>6}  {:>10}  {:>10}  {:>9}  {}\n", s,
                           st.ranks[static_cast<size_t>(i)], x.host, x.site, x.cores,
                           fmt::format("{}-{}", st.layer_begin, st.layer_end - 1), st.layer_end - st.layer_begin, st.tp(),
                           i, fmt::format("{:.2f} GiB", x.memory_bytes / 1073741824.0),
                           fmt::format("{:.2f} GiB", x.estimated_bytes / 1073741824.0), x.kv_blocks, holds);
      }
    }
    out += pipeline_line(p);
    if (!p.why.empty()) out += "layout: " + p.why + "\n";
    return out;
  }
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const Stage& st = p.stages[s];
    std::string ranks;
    for (int r : st.ranks) {
      if (!ranks.empty()) ranks += ',';
      ranks += std::to_string(r);
    }
    std::string holds;
    if (static_cast<int>(s) == p.embedding_stage) holds += "embedding";
    if (static_cast<int>(s) == p.output_stage) holds += std::string(holds.empty() ? "" : ", ") + "output head";
    out += fmt::format("{:>5}  {:>9}  {:>6}  {:>3}  {:<24}  {}\n", s,
                       fmt::format("{}-{}", st.layer_begin, st.layer_end - 1), st.layer_end - st.layer_begin,
                       st.tp(), ranks, holds);
  }
  return out;
}

}  // namespace ranklm::plan
