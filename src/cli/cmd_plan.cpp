// ranklm plan --model M.gguf --ranks N [--pp S] [--tp T] [--layers 10,12,...] [-o plan.json]:
// an even (or given) split of the model over N ranks, printed as a table and written as JSON.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "plan/identity.h"
#include "plan/plan.h"

namespace ranklm::cli {

int cmd_plan(const std::vector<std::string>& args) {
  po::options_description desc("plan options");
  std::string model, out, layers_s;
  int ranks = 0, pp = 0, tp = 0;
  desc.add_options()
      ("model,m", po::value(&model)->required(), "GGUF model file")
      ("ranks,n", po::value(&ranks)->required(), "number of ranks (the job's world size)")
      ("pp", po::value(&pp)->default_value(0), "pipeline stages (0: ranks / tp)")
      ("tp", po::value(&tp)->default_value(0), "tensor-parallel size of every stage (0: ranks / pp)")
      ("layers", po::value(&layers_s), "layers per stage, comma-separated (default: even split)")
      ("output,o", po::value(&out), "write the plan here (JSON); without it, only print");
  po::variables_map vm;
  if (!parse_options("plan", "--model M.gguf --ranks N [--pp S] [--tp T] [--layers 10,12] [-o plan.json]",
                     desc, args, vm)) {
    return kExitOk;
  }
  const auto layers = parse_int_list<int64_t>("--layers", layers_s, 1, 1 << 20);
  auto f = gguf::File::open(model);
  const plan::Plan p = plan::make_plan(plan::model_identity(*f), ranks, pp, tp, layers);
  plan::check_tp_slicing(*f, p);
  std::fputs(plan::plan_table(p).c_str(), stdout);
  std::printf("plan hash %s, model hash %s\n", plan::plan_hash(p).c_str(), p.model.gguf_hash.c_str());
  const plan::TpShape shape = plan::tp_shape(*f);
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const int tp = p.stages[s].tp();
    if (tp > 1 && plan::tp_part(shape, tp, 0).attn_output_replicated) {
      std::printf("note: stage %zu: %lld heads x %lld per rank do not fill whole %lld-element blocks of "
                  "attn_output.weight; it is replicated on the stage's %d ranks (more memory, a gather "
                  "instead of a reduce)\n", s, static_cast<long long>(shape.n_head / tp),
                  static_cast<long long>(shape.head_dim), static_cast<long long>(shape.attn_output_block), tp);
    }
  }
  if (!out.empty()) {
    // Written whole under a temporary name, then renamed: a reader never sees half a plan.
    const std::string tmp = out + ".partial";
    {
      std::ofstream os(tmp, std::ios::trunc);
      if (!os) fail("{}: cannot write ({}); check the directory exists and is writable", tmp, std::strerror(errno));
      os << plan::to_json(p).dump(2) << "\n";
      if (!os.flush()) fail("{}: write failed", tmp);
    }
    std::filesystem::rename(tmp, out);
    std::printf("wrote %s\n", out.c_str());
  }
  return kExitOk;
}

}  // namespace ranklm::cli
