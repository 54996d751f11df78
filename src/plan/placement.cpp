#include "plan/placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "kernels/types.h"
#include "model/arch.h"
#include "model/kv_cache.h"
#include "plan/identity.h"
#include "plan/network.h"
#include "plan/predict.h"
#include "util/error.h"

namespace ranklm::plan {

namespace {

double gib(uint64_t b) { return static_cast<double>(b) / 1073741824.0; }

// Whether every rank of a TP group of size t gets a valid slice of this model.
bool tp_ok(const TpShape& shape, int t, bool ep) {
  if (ep) return t >= 1 && t <= shape.n_expert;
  if (t < 1 || shape.n_head % t != 0) return false;
  if (shape.n_head_kv % t != 0 && t % shape.n_head_kv != 0) return false;
  try {
    for (int i = 0; i < t; ++i) tp_part(shape, t, i);
  } catch (const Error&) {
    return false;
  }
  return true;
}

// Stage speeds measured on alike machines differ by noise; a layer split that follows that noise
// changes from run to run (and every new plan needs a new repack). Speeds within 20% of the
// slowest of their class count as that class's median.
void snap_speeds(std::vector<double>& speed) {
  std::vector<size_t> idx(speed.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return speed[a] < speed[b]; });
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j < idx.size() && speed[idx[j]] <= speed[idx[i]] * 1.2) ++j;
    const double median = speed[idx[i + (j - i) / 2]];
    for (size_t k = i; k < j; ++k) speed[idx[k]] = median;
    i = j;
  }
}

// Each rank's site and every stage boundary's link, for the table and --explain.
void add_network(Plan& p, const Sites& sites, const Inventory& inv) {
  for (RankPlacement& x : p.placement) x.site = sites.site_of(x.host);
  p.n_sites = sites.n_sites;
  p.site_threshold_us = sites.threshold_us;
  for (size_t s = 0; s + 1 < p.stages.size(); ++s) {
    const std::string& a = inv.ranks[static_cast<size_t>(p.stages[s].ranks[0])].host;
    const std::string& b = inv.ranks[static_cast<size_t>(p.stages[s + 1].ranks[0])].host;
    Hop h{a, b, 0, 0, sites.site_of(a) != sites.site_of(b)};
    if (const HostLink* l = a == b ? nullptr : inv.link(a, b)) h.latency_us = l->latency_us, h.bandwidth_gbps = l->bandwidth_gbps;
    p.hops.push_back(h);
  }
}

}  // namespace

const HostLink* Inventory::link(const std::string& a, const std::string& b) const {
  auto it = links.find(a < b ? std::make_pair(a, b) : std::make_pair(b, a));
  return it == links.end() ? nullptr : &it->second;
}

nlohmann::json inventory_to_json(const Inventory& inv) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const RankInfo& r : inv.ranks) {
    ranks.push_back({{"rank", r.rank}, {"host", r.host}, {"cores", r.cores}, {"numa_nodes", r.numa_nodes},
                     {"memory_bytes", r.memory_bytes}, {"gpus", r.gpus}, {"speed_gbps", r.speed_gbps},
                     {"compute_gmacs", r.compute_gmacs}, {"machine", r.machine}, {"solo_speed_gbps", r.solo_speed_gbps}});
    if (!r.decode_gmacs.empty()) ranks.back()["decode_gmacs"] = r.decode_gmacs;
  }
  nlohmann::json links = nlohmann::json::array();
  for (const auto& [k, l] : inv.links) {
    links.push_back({{"hosts", {k.first, k.second}}, {"latency_us", l.latency_us}, {"bandwidth_gbps", l.bandwidth_gbps}});
  }
  return {{"format", "ranklm-inventory"}, {"version", 1}, {"ranks", ranks}, {"links", links}};
}

Inventory inventory_from_json(const nlohmann::json& j, const std::string& source) {
  auto need = [&](const nlohmann::json& o, const char* key, const std::string& where) -> const nlohmann::json& {
    if (!o.is_object() || !o.contains(key)) fail("{}: missing field '{}'", where, key);
    return o.at(key);
  };
  auto number = [&](const nlohmann::json& o, const char* key, const std::string& where, double lo) {
    const nlohmann::json& v = need(o, key, where);
    if (!v.is_number() || v.get<double>() < lo) fail("{}: field '{}' must be a number >= {} (got {})", where, key, lo, v.dump());
    return v.get<double>();
  };
  Inventory inv;
  const nlohmann::json& ranks = need(j, "ranks", source);
  if (!ranks.is_array() || ranks.empty()) fail("{}: field 'ranks' must be a non-empty array", source);
  for (size_t i = 0; i < ranks.size(); ++i) {
    const std::string w = fmt::format("{}: ranks[{}]", source, i);
    RankInfo r;
    r.rank = static_cast<int>(number(ranks[i], "rank", w, 0));
    if (r.rank != static_cast<int>(i)) fail("{}: 'rank' is {}, expected {} (ranks in order)", w, r.rank, i);
    const nlohmann::json& h = need(ranks[i], "host", w);
    if (!h.is_string() || h.get<std::string>().empty()) fail("{}: field 'host' must be a host name", w);
    r.host = h.get<std::string>();
    r.cores = static_cast<int>(number(ranks[i], "cores", w, 1));
    r.numa_nodes = static_cast<int>(number(ranks[i], "numa_nodes", w, 1));
    r.memory_bytes = static_cast<uint64_t>(number(ranks[i], "memory_bytes", w, 1));
    r.gpus = ranks[i].contains("gpus") ? static_cast<int>(number(ranks[i], "gpus", w, 0)) : 0;
    r.speed_gbps = number(ranks[i], "speed_gbps", w, 0);
    r.compute_gmacs = ranks[i].contains("compute_gmacs") ? number(ranks[i], "compute_gmacs", w, 0) : 0;
    r.solo_speed_gbps = ranks[i].contains("solo_speed_gbps") ? number(ranks[i], "solo_speed_gbps", w, 0) : 0;
    if (ranks[i].contains("decode_gmacs")) {
      const nlohmann::json& d = ranks[i]["decode_gmacs"];
      if (!d.is_object() || d.size() > 64) fail("{}: field 'decode_gmacs' must be an object of at most 64 type names and rates", w);
      for (const auto& [type, v] : d.items()) r.decode_gmacs[type] = number(d, type.c_str(), w + ".decode_gmacs", 0);
    }
    if (ranks[i].contains("machine")) {
      if (!ranks[i]["machine"].is_string()) fail("{}: field 'machine' must be a string", w);
      r.machine = ranks[i]["machine"].get<std::string>();
    }
    inv.ranks.push_back(r);
  }
  if (j.contains("links")) {
    const nlohmann::json& links = j.at("links");
    if (!links.is_array()) fail("{}: field 'links' must be an array", source);
    for (size_t i = 0; i < links.size(); ++i) {
      const std::string w = fmt::format("{}: links[{}]", source, i);
      const nlohmann::json& hs = need(links[i], "hosts", w);
      if (!hs.is_array() || hs.size() != 2 || !hs[0].is_string() || !hs[1].is_string()) {
        fail("{}: field 'hosts' must be two host names", w);
      }
      std::string a = hs[0].get<std::string>(), b = hs[1].get<std::string>();
      if (b < a) std::swap(a, b);
      inv.links[{a, b}] = {number(links[i], "latency_us", w, 0), number(links[i], "bandwidth_gbps", w, 0)};
    }
  }
  return inv;
}

ModelSizes model_sizes(const gguf::File& f) {
  ModelSizes s;
  const ModelIdentity id = model_identity(f);
  const HParams hp = read_hparams(f);
  s.layer_bytes.assign(static_cast<size_t>(id.n_layer), 0);
  s.layer_macs.assign(static_cast<size_t>(id.n_layer), 0);
  uint64_t embd_macs = 0;
  // One token's multiply-adds by weight type: the layers' matrices, the experts it picks, the head.
  const double picked = hp.n_expert > 0 ? static_cast<double>(hp.n_expert_used) / static_cast<double>(hp.n_expert) : 0;
  std::optional<kern::GgmlType> embd_type, output_type;
  auto add_share = [&](kern::GgmlType type, double macs) { s.decode_mac_share[std::string(kern::type_name(type))] += macs; };
  for (const gguf::TensorInfo& t : f.tensors()) {
    uint64_t elems = 1;
    for (int64_t d : t.ne) elems *= static_cast<uint64_t>(d);
    if (const std::optional<int64_t> il = layer_of(t.name)) {
      if (*il < id.n_layer) s.layer_bytes[static_cast<size_t>(*il)] += t.n_bytes;
      if (*il < id.n_layer && t.ne.size() == 2) {  // matrices only
        s.layer_macs[static_cast<size_t>(*il)] += elems;
        add_share(t.type, static_cast<double>(elems));
      }
      if (*il < id.n_layer && t.ne.size() == 3) {  // stacked experts
        if (s.layer_expert_bytes.empty()) {
          s.layer_expert_bytes.assign(static_cast<size_t>(id.n_layer), 0);
          s.layer_expert_macs.assign(static_cast<size_t>(id.n_layer), 0);
        }
        s.layer_expert_bytes[static_cast<size_t>(*il)] += t.n_bytes;
        s.layer_expert_macs[static_cast<size_t>(*il)] += elems;
        add_share(t.type, static_cast<double>(elems) * picked);
      }
    } else if (const std::optional<NamedTensor> nt = parse_tensor_name(t.name)) {
      if (nt->id == TensorId::kTokEmbd) s.embd_bytes = t.n_bytes, embd_macs = elems, embd_type = t.type;
      if (nt->id == TensorId::kOutput) s.output_bytes = t.n_bytes, s.output_macs = elems, output_type = t.type;
    }
  }
  if (s.output_bytes == 0) s.output_bytes = s.embd_bytes, s.output_macs = embd_macs;  // tied head
  if (output_type || embd_type) add_share(output_type ? *output_type : *embd_type, static_cast<double>(s.output_macs));
  double total = 0;
  for (const auto& share : s.decode_mac_share) total += share.second;
  for (auto& share : s.decode_mac_share) share.second = total > 0 ? share.second / total : 0;
  const TpShape shape = tp_shape(f);
  s.kv_bytes_per_token_layer = static_cast<uint64_t>(2 * shape.n_head_kv * shape.head_dim * 2);
  for (int64_t il = 0; il < hp.n_layer; ++il) s.layer_window.push_back(hp.windowed(il) ? hp.swa_window : 0);
  s.n_expert = hp.n_expert;
  s.n_expert_used = hp.n_expert_used;
  return s;
}

double ModelSizes::decode_gmacs(const RankInfo& r) const {
  if (r.decode_gmacs.empty() || decode_mac_share.empty()) return 0;
  double inverse = 0;  // seconds per 1e9 multiply-adds of the model's mix
  for (const auto& [type, share] : decode_mac_share) {
    const auto it = r.decode_gmacs.find(type);
    const double rate = it != r.decode_gmacs.end() && it->second > 0 ? it->second : r.compute_gmacs;
    if (rate <= 0) return 0;
    inverse += share / rate;
  }
  return inverse > 0 ? 1.0 / inverse : 0;
}

double ModelSizes::expert_read_share(double n_tok) const {
  if (n_expert <= 0) return 0;
  return 1.0 - std::pow(1.0 - static_cast<double>(n_expert_used) / static_cast<double>(n_expert), std::max(1.0, n_tok));
}

uint64_t ModelSizes::kv_layer_bytes(int64_t l, int64_t n_ctx) const {
  const int64_t w = l < static_cast<int64_t>(layer_window.size()) ? layer_window[static_cast<size_t>(l)] : 0;
  return kv_bytes_per_token_layer * static_cast<uint64_t>(kv_positions_held(n_ctx, w));
}

uint64_t rank_bytes(const Plan& p, const ModelSizes& sizes, int rank, const PlaceOptions& o) {
  const auto [stage, tpi] = p.where(rank);
  const Stage& st = p.stages[static_cast<size_t>(stage)];
  const uint64_t t = static_cast<uint64_t>(st.tp());
  uint64_t b = 0;
  for (int64_t l = st.layer_begin; l < st.layer_end; ++l) {
    const uint64_t experts = sizes.layer_expert_bytes.empty() ? 0 : sizes.layer_expert_bytes[static_cast<size_t>(l)];
    const uint64_t rest = sizes.layer_bytes[static_cast<size_t>(l)] - experts;
    // An EP group holds attention (and its KV) whole on every member, the experts split.
    const uint64_t split = p.ep ? 1 : t;
    b += rest / split + experts / t;
    // KV heads are replicated when TP exceeds them; count a rank's share as at least one head's.
    b += sizes.kv_layer_bytes(l, o.n_ctx) * static_cast<uint64_t>(o.n_seq) / split;
  }
  if (stage == p.embedding_stage) b += sizes.embd_bytes;
  if (stage == p.output_stage) b += sizes.output_bytes;
  return b;
}

namespace {

// Every rank of the inventory: TP groups inside hosts, pipeline stages across them.
Plan place_spread(const ModelIdentity& m, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
                  const PlaceOptions& o) {
  const int n = static_cast<int>(inv.ranks.size());
  if (n < 1) fail("the inventory lists no ranks");
  if (static_cast<int64_t>(sizes.layer_bytes.size()) != m.n_layer) fail("model sizes do not match the model's {} layers", m.n_layer);
  // 1. Sites (hosts close to each other) and the pipeline's host order (network.h).
  const Sites sites = find_sites(inv, o.site_latency_us);
  // 2. TP size: the ranks per host (all hosts alike), else their gcd; reduced to what the model allows.
  const int per_host = ranks_per_host(inv);
  int tp = o.tp;
  if (tp == 0) {
    tp = per_host;
    while (tp > 1 && !tp_ok(shape, tp, o.ep)) --tp;
    while (tp > 1 && per_host % tp != 0) --tp;
  }
  if (!tp_ok(shape, tp, o.ep)) {
    if (o.ep) fail("EP {} does not suit this model ({} experts); choose an EP size of at most {}", tp, shape.n_expert, shape.n_expert);
    fail("TP {} does not suit this model ({} heads, {} KV heads, FFN {}); choose a TP size that divides the heads",
         tp, shape.n_head, shape.n_head_kv, shape.n_ff);
  }
  const std::vector<std::vector<int>> groups = form_tp_groups(inv, sites, tp, o.tp_latency_us);
  const int n_stages = static_cast<int>(groups.size());
  if (n_stages > m.n_layer) fail("{} stages of TP {} but the model has {} layers; use fewer ranks or a larger TP", n_stages, tp, m.n_layer);
  // 3. Layers: one at a time to the stage whose step time stays lowest, within its memory.
  std::vector<double> speed(static_cast<size_t>(n_stages)), extra(static_cast<size_t>(n_stages), 0.0);
  std::vector<uint64_t> room(static_cast<size_t>(n_stages)), fixed(static_cast<size_t>(n_stages), 0);
  for (int s = 0; s < n_stages; ++s) {
    double sp = 1e30;
    uint64_t mem = UINT64_MAX;
    for (int r : groups[static_cast<size_t>(s)]) {
      const RankInfo& ri = inv.ranks[static_cast<size_t>(r)];
      sp = std::min(sp, ri.speed_gbps > 0 ? ri.speed_gbps : 1.0);
      mem = std::min(mem, ri.memory_bytes);
    }
    speed[static_cast<size_t>(s)] = sp * tp;  // a TP group streams its weights tp ways at once
    if (s == 0) fixed[0] += sizes.embd_bytes;
    if (s == n_stages - 1) {
      fixed[static_cast<size_t>(s)] += sizes.output_bytes;
      extra[static_cast<size_t>(s)] = static_cast<double>(sizes.output_bytes);  // the head is streamed every step
    }
    room[static_cast<size_t>(s)] = static_cast<uint64_t>(static_cast<double>(mem) * o.memory_fraction);
  }
  snap_speeds(speed);
  // The mean layer's KV (sliding-window layers hold less).
  uint64_t kv_total = 0;
  for (int64_t l = 0; l < m.n_layer; ++l) kv_total += sizes.kv_layer_bytes(l, o.n_ctx) * static_cast<uint64_t>(o.n_seq);
  const uint64_t kv_layer = kv_total / static_cast<uint64_t>(std::max<int64_t>(1, m.n_layer));
  std::vector<int64_t> count(static_cast<size_t>(n_stages), 0);
  std::vector<uint64_t> used = fixed, streamed(static_cast<size_t>(n_stages), 0);
  for (int s = 0; s < n_stages; ++s) streamed[static_cast<size_t>(s)] = static_cast<uint64_t>(extra[static_cast<size_t>(s)]);
  // Stages take consecutive layers; the greedy runs over counts, then layers are laid out in
  // stage order. Layer sizes differ little, so the mean layer stands for each.
  const uint64_t total_layers = std::accumulate(sizes.layer_bytes.begin(), sizes.layer_bytes.end(), uint64_t{0});
  const uint64_t mean_layer = std::max<uint64_t>(1, total_layers / static_cast<uint64_t>(m.n_layer));
  auto fits = [&](int s) {
    return used[static_cast<size_t>(s)] + (mean_layer + kv_layer) / static_cast<uint64_t>(tp) <= room[static_cast<size_t>(s)];
  };
  for (int s = 0; s < n_stages; ++s) {  // every stage holds at least one layer
    if (!fits(s)) break;
    ++count[static_cast<size_t>(s)];
    used[static_cast<size_t>(s)] += (mean_layer + kv_layer) / static_cast<uint64_t>(tp);
    streamed[static_cast<size_t>(s)] += mean_layer;
  }
  for (int64_t l = std::accumulate(count.begin(), count.end(), int64_t{0}); l < m.n_layer; ++l) {
    int best = -1;
    double best_t = 1e300;
    for (int s = 0; s < n_stages; ++s) {
      if (!fits(s)) continue;
      const double t = static_cast<double>(streamed[static_cast<size_t>(s)] + mean_layer) / speed[static_cast<size_t>(s)];
      if (t < best_t) best_t = t, best = s;
    }
    if (best < 0) {
      uint64_t need = 0, have = 0;
      for (int s = 0; s < n_stages; ++s) have += room[static_cast<size_t>(s)] * static_cast<uint64_t>(tp);
      need = total_layers + kv_total + sizes.embd_bytes * static_cast<uint64_t>(tp) +
             sizes.output_bytes * static_cast<uint64_t>(tp);
      fail("the model does not fit: it needs about {:.2f} GiB (weights, embedding and head on their TP groups, KV cache "
           "for {} positions x {} sequences) but these {} ranks offer {:.2f} GiB ({:.0f}% of their memory); add ranks "
           "or hosts, use a smaller context, or a smaller quantization", gib(need), o.n_ctx, o.n_seq, n, gib(have),
           o.memory_fraction * 100);
    }
    ++count[static_cast<size_t>(best)];
    used[static_cast<size_t>(best)] += (mean_layer + kv_layer) / static_cast<uint64_t>(tp);
    streamed[static_cast<size_t>(best)] += mean_layer;
  }
  for (int s = 0; s < n_stages; ++s) {
    if (count[static_cast<size_t>(s)] == 0) {
      fail("stage {} (ranks on {}) has no memory left for a layer; the model does not fit these ranks", s,
           inv.ranks[static_cast<size_t>(groups[static_cast<size_t>(s)][0])].host);
    }
  }
  Plan p;
  p.world_size = n;
  p.model = m;
  p.ep = o.ep && tp > 1;
  int64_t next = 0;
  for (int s = 0; s < n_stages; ++s) {
    Stage st;
    st.layer_begin = next;
    st.layer_end = next + count[static_cast<size_t>(s)];
    next = st.layer_end;
    st.ranks = groups[static_cast<size_t>(s)];
    p.stages.push_back(st);
  }
  p.embedding_stage = 0;
  p.output_stage = n_stages - 1;
  p.placement.resize(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    const RankInfo& ri = inv.ranks[static_cast<size_t>(r)];
    p.placement[static_cast<size_t>(r)] = {ri.host, ri.cores, ri.memory_bytes, 0};
  }
  add_network(p, sites, inv);
  for (int r = 0; r < n; ++r) p.placement[static_cast<size_t>(r)].estimated_bytes = rank_bytes(p, sizes, r, o);
  validate(p, "placed plan");
  return p;
}

// KV blocks each rank's memory holds beside its weights (what the plan does not use of it).
void count_kv_blocks(Plan& p, const ModelSizes& sizes, const PlaceOptions& o) {
  PlaceOptions weights_only = o;
  weights_only.n_seq = 0;  // rank_bytes without a KV cache
  for (int r = 0; r < p.world_size; ++r) {
    RankPlacement& x = p.placement[static_cast<size_t>(r)];
    const auto [stage, tpi] = p.where(r);
    const Stage& st = p.stages[static_cast<size_t>(stage)];
    // A block's bytes amortized over one context (as the engine counts them).
    uint64_t per_ctx = 0;
    for (int64_t l = st.layer_begin; l < st.layer_end; ++l) per_ctx += sizes.kv_layer_bytes(l, o.n_ctx);
    const uint64_t blocks_per_ctx = static_cast<uint64_t>(std::max<int64_t>(1, kv_blocks_for(o.n_ctx)));
    // An EP group keeps every KV head on each member (attention is whole there).
    const uint64_t kv_split = p.ep ? 1 : static_cast<uint64_t>(st.tp());
    const uint64_t block = (per_ctx + blocks_per_ctx - 1) / blocks_per_ctx / kv_split;
    const uint64_t weights = rank_bytes(p, sizes, r, weights_only);
    const uint64_t room = static_cast<uint64_t>(static_cast<double>(x.memory_bytes) * o.memory_fraction);
    x.kv_blocks = block > 0 && room > weights ? static_cast<int64_t>((room - weights) / block) : 0;
  }
}

// Several hosts and no TP size given: TP groups that span the hosts of a site (over links below
// the site threshold, or below --tp-latency-us) when the prediction (predict.h) says the job
// runs at least 10% faster so: for a large model on a fast LAN, a wider group streams each
// token's weights on more machines at once. Replaces p and says why; "" when p stays.
std::string widen_tp(Plan& p, const ModelIdentity& m, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
                     const PlaceOptions& o) {
  const double reach = o.tp_latency_us > 0 ? o.tp_latency_us : p.site_threshold_us;
  if (reach <= 0) return "";
  PredictOptions po;
  po.n_seq = o.n_seq;
  const int base = p.stages.front().tp();
  const double base_rate = predict(p, sizes, shape, inv, po).batch_tokens_s;
  double best_rate = base_rate * 1.1;
  std::string why;
  for (int t = 2 * base; t <= static_cast<int>(inv.ranks.size()); t += base) {
    PlaceOptions w = o;
    w.tp = t;
    w.tp_latency_us = reach;
    try {
      Plan q = place_spread(m, sizes, shape, inv, w);
      q.tp_mode = o.tp_mode;
      const double rate = predict(q, sizes, shape, inv, po).batch_tokens_s;
      if (rate > best_rate) {
        why = fmt::format("TP {} across the hosts of a site, predicted {:.3g} tokens/s for {} sequence{} against {:.3g} with TP {} "
                          "inside hosts (ranklm plan --explain)", t, rate, o.n_seq, o.n_seq == 1 ? "" : "s", base_rate, base);
        best_rate = rate;
        p = std::move(q);
      }
    } catch (const Error&) {
      // Not a TP size these sites, their links or the model's heads allow.
    }
  }
  return why;
}

// An MoE model with groups and no --ep: the groups split attention by heads (TP) or hold it whole
// (EP); both split the experts by expert. Takes the one predicted faster for a batch; says why.
std::string choose_moe_split(Plan& p, const ModelIdentity& m, const ModelSizes& sizes, const TpShape& shape,
                             const Inventory& inv, const PlaceOptions& o) {
  if (shape.n_expert == 0 || o.ep_forced || p.stages.front().tp() < 2) return "";
  PredictOptions po;
  po.n_seq = o.n_seq;
  PlaceOptions w = o;
  w.ep = !p.ep;
  w.tp = p.stages.front().tp();
  try {
    Plan q = place_spread(m, sizes, shape, inv, w);
    q.tp_mode = o.tp_mode;
    const double a = predict(p, sizes, shape, inv, po).batch_tokens_s, b = predict(q, sizes, shape, inv, po).batch_tokens_s;
    const auto name = [](const Plan& x) { return x.ep ? "EP (attention whole on each member)" : "attention by heads (TP)"; };
    const std::string why = fmt::format("MoE layers: {} predicted {:.3g} tokens/s against {:.3g} with {}", name(b > a ? q : p),
                                        std::max(a, b), std::min(a, b), name(b > a ? p : q));
    if (b > a) p = std::move(q);
    return why;
  } catch (const Error&) {
    return "";  // the other split does not fit (memory) or suit the model
  }
}

}  // namespace

Plan place(const ModelIdentity& m, const ModelSizes& sizes, const TpShape& shape, const Inventory& inv,
           const PlaceOptions& o) {
  std::map<std::string, int> cores;
  for (const RankInfo& r : inv.ranks) cores[r.host] += r.cores;
  const int n = static_cast<int>(inv.ranks.size());
  if (n > 1 && cores.size() == 1 && o.one_rank_per_host && o.tp == 0) {
    // One host: one rank with all the job's cores, if the model fits its memory.
    Inventory one;
    one.ranks.push_back(inv.ranks.front());
    RankInfo& r0 = one.ranks.front();
    r0.cores = cores.begin()->second;
    for (const RankInfo& r : inv.ranks) {
      r0.memory_bytes = std::max(r0.memory_bytes, r.memory_bytes);
      r0.speed_gbps = std::max(r0.speed_gbps, r.speed_gbps);
    }
    try {
      Plan p = place_spread(m, sizes, shape, one, o);
      count_kv_blocks(p, sizes, o);
      p.why = fmt::format("one rank with all {} cores of host {}: on one host a batch job runs fastest so (no pipeline "
                          "bubbles, no transfers or collectives; docs/PERFORMANCE.md) and the model fits its memory; "
                          "start it with mpirun -np 1 (or without mpirun) and -t {} (--layout spread uses all {} ranks)",
                          r0.cores, r0.host, r0.cores, n);
      return p;
    } catch (const Error&) {
      // Too big for one rank's memory: spread it over every rank below.
    }
  }
  Plan p = place_spread(m, sizes, shape, inv, o);
  p.tp_mode = o.tp_mode;
  std::string wider;
  if (cores.size() > 1 && o.tp == 0) wider = widen_tp(p, m, sizes, shape, inv, o);
  const std::string moe = choose_moe_split(p, m, sizes, shape, inv, o);
  count_kv_blocks(p, sizes, o);
  if (cores.size() == 1 && n > 1) {
    p.why = o.tp != 0 || !o.one_rank_per_host ? fmt::format("every rank of the job, as asked ({} ranks on host {})", n, cores.begin()->first)
                                              : fmt::format("the model does not fit one rank's memory: spread over the {} ranks of host {}", n,
                                                            cores.begin()->first);
  } else if (cores.size() > 1) {
    const std::string groups = !wider.empty() ? wider : o.tp_latency_us > 0 ? "TP groups inside hosts (or sites, over links below --tp-latency-us)"
                                                                           : "TP groups inside hosts";
    p.why = p.n_sites > 1 ? fmt::format("{} hosts in {} sites: {}, pipeline stages across them, each site's hosts together so the "
                                        "pipeline crosses between sites as few times as it can", cores.size(), p.n_sites, groups)
                          : fmt::format("{} hosts: {}, pipeline stages across them", cores.size(), groups);
  }
  if (!moe.empty()) p.why += (p.why.empty() ? "" : "; ") + moe;
  return p;
}

}  // namespace ranklm::plan
