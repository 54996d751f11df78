// ranklm plan --model M.gguf --ranks N [--pp S] [--tp T] [--layers 10,12,...] [-o plan.json]:
// an even (or given) split of the model over N ranks, printed as a table and written as JSON.
//
// mpirun ... ranklm plan --model M.gguf [-o plan.json]: the ranks of the job report their hosts,
// cores, NUMA nodes, memory and speed (and host leaders time their links); the plan puts TP
// groups inside hosts and splits layers by each stage's speed and memory (plan/placement.h).
// --inventory FILE plans from an inventory saved with --save-inventory, without the machines.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "cli/watchdog.h"
#include "util/json_file.h"
#include "cli/engine.h"
#include "cli/options.h"
#include "cli/probe.h"
#include "plan/placement.h"
#include "plan/predict.h"
#include "util/atomic_file.h"
#include "io/gguf.h"
#include "plan/identity.h"
#include "plan/plan.h"

namespace ranklm::cli {

namespace {

plan::PlaceOptions po_with_tp(plan::PlaceOptions o, int tp) {
  o.tp = tp;
  return o;
}

// What the groups split and how they combine (printed under the plan table).
void print_split_notes(const plan::Plan& p, const plan::TpShape& shape) {
  bool any_tp = false;
  for (const plan::Stage& st : p.stages) any_tp = any_tp || st.tp() > 1;
  const bool exact = p.tp_mode == plan::TpMode::kExact;
  if (any_tp && !p.ep) {
    std::printf("tensor parallel: %s\n", exact ? "exact (inputs of attn_output and ffn_down gathered, rows split; logits as on one rank)"
                                               : "sum (partial products of attn_output and ffn_down summed by allreduce)");
  }
  if (any_tp && shape.n_expert > 0) {
    std::printf("MoE layers: %s, %s\n",
                p.ep ? "expert parallel (each group member holds its share of the experts; attention whole on every member)"
                     : "attention split by heads (TP), the experts by expert",
                exact ? "expert outputs gathered and summed in the one-rank order (logits as on one rank)"
                      : "each member's weighted expert outputs summed by allreduce");
  }
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const int tp = p.stages[s].tp();
    if (tp > 1 && plan::tp_part(shape, tp, 0, p.tp_mode, p.ep).attn_output_replicated) {
      std::printf("note: stage %zu: %lld heads x %lld per rank do not fill whole %lld-element blocks of "
                  "attn_output.weight; it is replicated on the stage's %d ranks (more memory, a gather "
                  "instead of a reduce)\n", s, static_cast<long long>(shape.n_head / tp),
                  static_cast<long long>(shape.head_dim), static_cast<long long>(shape.attn_output_block), tp);
    }
  }
}

}  // namespace

int cmd_plan(const std::vector<std::string>& args) {
  po::options_description desc("plan options");
  std::string model, out, layers_s, inventory, save_inventory, topology, tp_mode = "exact", layout = "auto";
  int ranks = 0, pp = 0, tp = 0, ep = 0, threads = default_threads();
  bool explain = false;
  std::string hops = "f32";
  plan::PlaceOptions po_;
  desc.add_options()
      ("model,m", po::value(&model)->required(), "GGUF model file")
      ("ranks,n", po::value(&ranks), "number of ranks (the job's world size); under mpirun, the job's")
      ("pp", po::value(&pp)->default_value(0), "pipeline stages (0: ranks / tp)")
      ("tp", po::value(&tp)->default_value(0), "tensor-parallel size of every stage (0: ranks / pp)")
      ("ep", po::value(&ep)->default_value(0), "MoE models: expert-parallel groups of this size (each member holds its share of the experts and attention whole) instead of attention split by heads; 0: --tp groups, or the planner's choice")
      ("layers", po::value(&layers_s), "layers per stage, comma-separated (default: even split)")
      ("tp-mode", po::value(&tp_mode)->default_value("exact"), "how TP members combine attn_output and ffn_down: exact (gathers; logits identical to one rank) or sum (allreduce of partial sums; fewer bytes)")
      ("output,o", po::value(&out), "write the plan here (JSON); without it, only print")
      ("inventory", po::value(&inventory), "plan from this inventory (JSON from --save-inventory) instead of an even split")
      ("save-inventory", po::value(&save_inventory), "under mpirun: also write the gathered inventory here")
      ("topology", po::value(&topology), "under mpirun: describe this hwloc XML topology instead of the machine (tests)")
      ("threads,t", po::value(&threads)->default_value(default_threads()), "threads per rank for the speed probe")
      ("ctx-size,c", po::value(&po_.n_ctx)->default_value(4096), "placed plans: KV positions to reserve per sequence")
      ("parallel", po::value(&po_.n_seq)->default_value(1), "placed plans: sequences in flight (KV slots)")
      ("memory-fraction", po::value(&po_.memory_fraction)->default_value(0.85, "0.85"), "placed plans: share of a rank's memory to use")
      ("tp-latency-us", po::value(&po_.tp_latency_us)->default_value(0.0), "placed plans: hosts closer than this may share a TP group")
      ("site-latency-us", po::value(&po_.site_latency_us)->default_value(0.0), "placed plans: links this slow or slower separate sites (0: found from the measured latencies)")
      ("explain", po::bool_switch(&explain), "placed plans: also print the predicted decode time per token and batch throughput of this plan and of the alternatives it was chosen over")
      ("hops", po::value(&hops)->default_value("f32"), "with --explain: the pipeline hops' payload the job will use (f32 or q8_0, ranklm run --hops)")
      ("layout", po::value(&layout)->default_value("auto"), "placed plans: auto (on one host, one rank with every core when the model fits; what serves a batch job fastest) or spread (every rank of the job)");
  po::variables_map vm;
  if (!parse_options("plan", "--model M.gguf (--ranks N [--pp S] [--layers 10,12] | --inventory FILE | under mpirun) [--tp T] [-o plan.json]",
                     desc, args, vm)) {
    return kExitOk;
  }
  const auto layers = parse_int_list<int64_t>("--layers", layers_s, 1, 1 << 20);
  if (ep < 0 || (ep > 0 && tp > 0 && tp != ep)) {
    usage_fail("--ep {} with --tp {}: an EP group is the stage's group (attention whole on each member); give --ep N alone", ep, tp);
  }
  if (ep > 0) tp = ep;
  po_.ep = ep > 0;
  po_.ep_forced = ep > 0 || tp > 0;
  if (tp_mode != "exact" && tp_mode != "sum") usage_fail("--tp-mode: '{}' is not a TP mode (exact or sum)", tp_mode);
  if (layout != "auto" && layout != "spread") usage_fail("--layout: '{}' is not a layout choice (auto or spread)", layout);
  po_.one_rank_per_host = layout == "auto";
  po_.tp_mode = tp_mode == "exact" ? plan::TpMode::kExact : plan::TpMode::kSum;
  if (po_.n_ctx < 1 || po_.n_seq < 1 || !(po_.memory_fraction > 0 && po_.memory_fraction <= 1)) {
    usage_fail("--ctx-size and --parallel must be >= 1 and --memory-fraction in (0, 1]");
  }
  const bool probe = comm::launched_by_mpi() && inventory.empty();
  if (!probe && inventory.empty() && ranks < 1) usage_fail("--ranks: give the number of ranks (or run under mpirun, or give --inventory)");
  if ((probe || !inventory.empty()) && (pp != 0 || !layers.empty())) {
    usage_fail("--pp and --layers make an even or given split; a placed plan (mpirun or --inventory) chooses them itself");
  }
  if (explain && !probe && inventory.empty()) usage_fail("--explain predicts from an inventory: run under mpirun or give --inventory");
  auto f = gguf::File::open(model);
  plan::Plan p;
  plan::Inventory inv;
  if (probe) {
    // Every rank probes; rank 0 places, prints and writes.
    int rc = kExitOk;
    const int code = with_world("plan", [&](comm::World& world) {
      Watchdog::started();  // the probe's own waits have timeouts
      inv = gather_inventory(world.comm(), threads, topology);
      if (world.comm().rank() != 0) return kExitOk;
      if (ranks > 0 && ranks != world.comm().size()) fail("--ranks {} but this job has {} ranks", ranks, world.comm().size());
      if (!save_inventory.empty()) write_file_atomic(save_inventory, plan::inventory_to_json(inv).dump(2) + "\n");
      p = plan::place(plan::model_identity(*f), plan::model_sizes(*f), plan::tp_shape(*f), inv, po_with_tp(po_, tp));
      rc = -1;  // go on below on rank 0
      return kExitOk;
    });
    if (rc != -1) return code;
  } else if (!inventory.empty()) {
    const nlohmann::json j = read_json_file(inventory, "the inventory");
    inv = plan::inventory_from_json(j, inventory);
    if (ranks > 0 && ranks != static_cast<int>(inv.ranks.size())) usage_fail("--ranks {} but {} lists {} ranks", ranks, inventory, inv.ranks.size());
    p = plan::place(plan::model_identity(*f), plan::model_sizes(*f), plan::tp_shape(*f), inv, po_with_tp(po_, tp));
  } else {
    p = plan::make_plan(plan::model_identity(*f), ranks, pp, tp, layers, ep > 0);
  }
  p.tp_mode = tp_mode == "exact" ? plan::TpMode::kExact : plan::TpMode::kSum;
  plan::check_tp_slicing(*f, p);
  std::fputs(plan::plan_table(p).c_str(), stdout);
  if (probe && p.world_size != static_cast<int>(inv.ranks.size())) {
    // --layout auto on one host: fewer ranks than were started. Every later step must be started
    // with the plan's size; say so where it cannot be missed (stdout and stderr).
    const std::string note = fmt::format(
        "\n*** this plan has {} rank{}, not the {} this job started (--layout auto: {}). Start ranklm-repack and "
        "ranklm run with mpirun -np {}{}; for a plan over all {} ranks, add --layout spread. ***\n\n",
        p.world_size, p.world_size == 1 ? "" : "s", inv.ranks.size(),
        p.world_size == 1 ? "one rank with every core serves a batch job fastest when the model fits"
                          : "one rank per host with all its cores",
        p.world_size, p.world_size == 1 ? " (or without mpirun)" : "", inv.ranks.size());
    std::fputs(note.c_str(), stdout);
    std::fflush(stdout);
    std::fputs(note.c_str(), stderr);
  }
  std::printf("plan hash %s, model hash %s\n", plan::plan_hash(p).c_str(), p.model.gguf_hash.c_str());
  const plan::TpShape shape = plan::tp_shape(*f);
  print_split_notes(p, shape);
  if (explain) {
    plan::PredictOptions o;
    o.n_seq = po_.n_seq;
    if (hops != "f32" && hops != "q8_0") usage_fail("--hops: '{}' is not a payload type (f32 or q8_0)", hops);
    o.q8_hops = hops == "q8_0";
    const plan::ModelSizes sizes = plan::model_sizes(*f);
    std::fputs(plan::explain_table(plan::candidates(p, sizes, shape, inv, po_with_tp(po_, tp), o), o).c_str(), stdout);
  }
  if (!out.empty()) {
    write_file_atomic(out, plan::to_json(p).dump(2) + "\n");
    std::printf("wrote %s\n", out.c_str());
  }
  return kExitOk;
}

}  // namespace ranklm::cli
