// Small helpers shared by the subcommands' option parsing.
#pragma once

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/engine.h"
#include "runtime/sampler.h"
#include "util/error.h"

namespace ranklm::cli {

namespace po = boost::program_options;

// ---- option groups every model-running command shares ----
// --model / --shards: where the model comes from (bench takes a comma-separated list of models).
inline void add_source_options(po::options_description& desc, ModelSource& src, bool model_list = false) {
  desc.add_options()
      ("model,m", po::value<std::string>(&src.gguf), model_list ? "GGUF model file(s), comma-separated" : "GGUF model file")
      ("shards", po::value<std::string>(&src.shards),
       "or: a shard directory (ranklm-repack); under mpirun, one rank per shard");
}
// --allreduce and --hops: what travels between ranks as f32 or Q8_0 (engine.h parse_payloads).
inline void add_payload_options(po::options_description& desc, PayloadOptions& p) {
  desc.add_options()
      ("allreduce", po::value<std::string>(&p.allreduce)->default_value("f32"), "with a sum-mode TP plan: allreduce payload, f32 or q8_0")
      ("hops", po::value<std::string>(&p.hops)->default_value("f32"),
       "hidden states between pipeline stages: f32, or q8_0 (about a quarter of the bytes, for slow links; logits move by about 1%)");
}
// --threads (one count per rank), --allreduce and --hops.
inline void add_rank_options(po::options_description& desc, int& threads, PayloadOptions& payloads, int default_threads) {
  desc.add_options()("threads,t", po::value<int>(&threads)->default_value(default_threads), "worker threads per rank");
  add_payload_options(desc, payloads);
}
// Sampling, with llama.cpp's defaults; `what` prefixes the help ("default " for per-request values).
inline void add_sampling_options(po::options_description& desc, SamplingParams& sp, const std::string& what = "") {
  desc.add_options()
      ("temp", po::value<float>(&sp.temperature)->default_value(0.8f, "0.8"), (what + "temperature (0 = greedy)").c_str())
      ("top-k", po::value<int>(&sp.top_k)->default_value(40), "top-k (0 = off)")
      ("top-p", po::value<float>(&sp.top_p)->default_value(0.95f, "0.95"), (what + "top-p (1 = off)").c_str())
      ("min-p", po::value<float>(&sp.min_p)->default_value(0.05f, "0.05"), "min-p (0 = off)")
      ("repeat-penalty", po::value<float>(&sp.repeat_penalty)->default_value(1.0f, "1.0"), "repetition penalty (1 = off)")
      ("seed,s", po::value<uint64_t>(&sp.seed)->default_value(0),
       what.empty() ? "random seed"
                    : "job seed; a request without its own seed gets one derived from this and its id (run: custom_id; "
                      "serve: arrival number)");
}
// --ctx-size: KV positions per sequence.
inline void add_context_option(po::options_description& desc, int& ctx, int default_ctx, const char* help) {
  desc.add_options()("ctx-size,c", po::value<int>(&ctx)->default_value(default_ctx), help);
}
// The context size bound every command checks.
constexpr int kMaxContext = 1 << 24;
// Most sequences in flight (KV slots) a job may ask for.
constexpr int kMaxParallel = 4096;

// Parses args into vm; returns false (after printing help) when --help was given.
inline bool parse_options(const std::string& cmd, const std::string& synopsis,
                          po::options_description& desc, const std::vector<std::string>& args,
                          po::variables_map& vm,
                          const po::positional_options_description* pos = nullptr) {
  desc.add_options()("help,h", "show this help");
  auto parser = po::command_line_parser(args).options(desc);
  if (pos) parser.positional(*pos);
  po::store(parser.run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: ranklm " << cmd << " " << synopsis << "\n\n" << desc << "\n";
    return false;
  }
  po::notify(vm);
  return true;
}

// The non-empty items of a comma-separated list.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) if (!item.empty()) out.push_back(item);
  return out;
}

// A comma-separated list of integers in [lo, hi]; a bad item throws an Error naming the option
// and the item.
template <typename T>
std::vector<T> parse_int_list(const std::string& opt, const std::string& s, long long lo,
                              long long hi) {
  std::vector<T> out;
  std::vector<std::string> items;
  std::stringstream ss(s);
  std::string piece;
  while (std::getline(ss, piece, ',')) items.push_back(piece);
  if (!s.empty() && s.back() == ',') items.push_back("");
  for (const std::string& item : items) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < lo || v > hi) {
      usage_fail("{}: '{}' is not an integer in {}..{} (expected a comma-separated list)", opt, item, lo, hi);
    }
    out.push_back(static_cast<T>(v));
  }
  return out;
}

// The sampling settings of the command line, checked as the JSONL path checks a request's.
inline void check_sampling(const SamplingParams& sp) {
  if (!(sp.temperature >= 0 && sp.temperature <= 100)) usage_fail("--temp: {} must be in [0, 100] (0 = greedy)", sp.temperature);
  if (sp.top_k < 0) usage_fail("--top-k: {} must be >= 0 (0 = off)", sp.top_k);
  if (!(sp.top_p > 0 && sp.top_p <= 1)) usage_fail("--top-p: {} must be in (0, 1] (1 = off)", sp.top_p);
  if (!(sp.min_p >= 0 && sp.min_p <= 1)) usage_fail("--min-p: {} must be in [0, 1] (0 = off)", sp.min_p);
  if (!(sp.repeat_penalty > 0 && sp.repeat_penalty <= 100)) {
    usage_fail("--repeat-penalty: {} must be in (0, 100] (1 = off)", sp.repeat_penalty);
  }
}

// Worker threads: at least 1; more than the cores this process may run on (its CPU affinity,
// which mpirun and srun set per rank) only slows every step down, so it is capped there.
inline int usable_threads(int requested, int cores) {
  if (requested < 1) usage_fail("--threads: {} must be >= 1", requested);
  if (requested > cores) {
    std::fprintf(stderr, "ranklm: --threads %d: this process may run on %d cores; using %d\n", requested, cores, cores);
    return cores;
  }
  return requested;
}

}  // namespace ranklm::cli
