// ranklm bench: llama-bench style throughput report, from a GGUF on one rank or from shards on
// any number of ranks (one rank per process under mpirun; rank 0 prints). One implementation:
//
//   ranklm bench (-m M.gguf[,M2.gguf] | --shards DIR) [-t 1,2] [-p 512] [-n 128] [--npl 1,16] [-r 5] [-o md|csv|json]
//
// For every model x threads x npl x test it runs one warm-up and r timed repetitions, each from
// empty KV caches, through the engine and the continuous-batching scheduler (as a batch job
// runs): pp-N prefills N random tokens in each of npl sequences at once (one step), tg-N decodes
// N tokens in each of npl sequences (from a one-token prompt). avg_ts is the aggregate tokens/s
// (mean and standard deviation over repetitions, as llama-bench). Every row has the same fields:
// the weight bytes streamed per second during decode against a read bandwidth rank 0 measures
// with the same threads, the resident set size, and each rank's compute / communication time.
// JSON/CSV rows use llama-bench's field names where the meaning is the same.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine.h"
#include "cli/options.h"
#include "kernels/cpu.h"
#include "kernels/stream.h"
#include "model/arch.h"
#include "runtime/scheduler.h"
#include "sys/cpu_binding.h"
#include "util/error.h"

#include "cli/commit.h"  // RANKLM_COMMIT, generated at build time (tools/version.cmake)

namespace ranklm::cli {

namespace {

using Clock = std::chrono::steady_clock;

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  }
  return "unknown";
}

// Resident set size (VmRSS) in bytes, from /proc/self/status.
uint64_t rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

struct Row {
  std::string model, model_type, isa;
  uint64_t model_size = 0, n_params = 0, bytes_per_token = 0, macs_per_token = 0;
  // Mixtures of experts: the stacked experts' bytes and multiply-adds (all experts; left out of
  // the two above), of which a token uses expert_share (used / experts).
  uint64_t expert_bytes = 0, expert_macs = 0;
  double expert_share = 0;
  double compute_rate = 0;  // multiply-adds per second of the batched kernel (kern::measure_compute_rate)
  int threads = 0;
  int64_t n_prompt = 0, n_gen = 0;
  std::vector<double> samples_ns;
  double avg_ts = 0, stddev_ts = 0, avg_ns = 0, stddev_ns = 0;
  double gbps = 0, mem_bw_gbps = 0;
  uint64_t rss = 0, kv_bytes = 0;  // KV: blocks rank 0's sequences hold at the test's end
  // Ranks, layout, sequences run together, and per rank the seconds per repetition spent
  // computing and communicating/waiting (min, avg, max).
  int n_ranks = 1, n_parallel = 1;
  std::string layout;
  double compute_s[3] = {0, 0, 0}, comm_s[3] = {0, 0, 0};
  std::vector<double> compute_by_rank, comm_by_rank;

  // What every test row starts with: the model, the build's instruction set, the test.
  static Row of(std::string model, std::string type, uint64_t size, uint64_t n_params, int threads, int64_t n_prompt,
                int64_t n_gen) {
    Row r;
    r.model = std::move(model);
    r.model_type = std::move(type);
    r.isa = kern::isa_name(kern::active_isa());
    r.model_size = size;
    r.n_params = n_params;
    r.threads = threads;
    r.n_prompt = n_prompt;
    r.n_gen = n_gen;
    return r;
  }

  std::string test() const {
    return n_prompt > 0 ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen);
  }

  // The roof of a step of T tokens (n_parallel sequences, each a whole prompt or one decode
  // token): it reads every weight once (bytes / bandwidth) and does T x macs_per_token
  // multiply-adds (/ compute rate), so it takes at least the larger of the two. Attention and
  // everything else are left out: the roof is what the weight products alone allow.
  struct Roof {
    double ts = 0;             // tokens/s the roof allows (0: not measured)
    const char* bound = "";    // "memory" or "compute"
  };
  // Weight bytes a step of t tokens reads: the dense weights, and the share of the experts its
  // tokens pick (each token's picks spread evenly: 1 - (1 - share)^t of them).
  double step_bytes(double t) const {
    const double picked = expert_share > 0 ? 1.0 - std::pow(1.0 - expert_share, std::max(1.0, t)) : 0.0;
    return static_cast<double>(bytes_per_token) + picked * static_cast<double>(expert_bytes);
  }
  double token_macs() const {
    return static_cast<double>(macs_per_token) + expert_share * static_cast<double>(expert_macs);
  }
  Roof roof() const {
    const double t = static_cast<double>(n_parallel) * static_cast<double>(n_prompt > 0 ? n_prompt : 1);
    const double mem_s = mem_bw_gbps > 0 ? step_bytes(t) / (mem_bw_gbps * 1e9) : 0.0;
    const double mac_s = compute_rate > 0 ? t * token_macs() / compute_rate : 0.0;
    const double step = std::max(mem_s, mac_s);
    return step > 0 ? Roof{t / step, mem_s >= mac_s ? "memory" : "compute"} : Roof{};
  }
};

void finish(Row& r) {
  const double n = static_cast<double>(r.n_prompt + r.n_gen);
  std::vector<double> ts;
  for (double ns : r.samples_ns) ts.push_back(n * 1e9 / ns);
  auto mean_sd = [](const std::vector<double>& v, double& m, double& sd) {
    m = 0;
    for (double x : v) m += x;
    m /= static_cast<double>(v.size());
    sd = 0;
    for (double x : v) sd += (x - m) * (x - m);
    sd = v.size() > 1 ? std::sqrt(sd / static_cast<double>(v.size() - 1)) : 0.0;
  };
  mean_sd(ts, r.avg_ts, r.stddev_ts);
  mean_sd(r.samples_ns, r.avg_ns, r.stddev_ns);
  // Steps per second times the bytes a step reads (n_parallel tokens per decode step).
  if (r.n_gen > 0) r.gbps = r.avg_ts / r.n_parallel * r.step_bytes(r.n_parallel) / 1e9;
}

std::string mib(uint64_t b) { return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20)); }

std::string human_size(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  return buf;
}

nlohmann::ordered_json row_json(const Row& r) {
  nlohmann::ordered_json j;
  j["build_commit"] = RANKLM_COMMIT;
  j["compiler"] = __VERSION__;
  j["cpu_info"] = cpu_name();
  j["isa"] = r.isa;
  j["model_filename"] = r.model;
  j["model_type"] = r.model_type;
  j["model_size"] = r.model_size;
  j["model_n_params"] = r.n_params;
  j["n_threads"] = r.threads;
  j["n_prompt"] = r.n_prompt;
  j["n_gen"] = r.n_gen;
  j["avg_ns"] = static_cast<uint64_t>(r.avg_ns);
  j["stddev_ns"] = static_cast<uint64_t>(r.stddev_ns);
  j["avg_ts"] = r.avg_ts;
  j["stddev_ts"] = r.stddev_ts;
  j["samples_ns"] = r.samples_ns;
  j["weight_bytes_per_token"] = r.bytes_per_token;
  j["achieved_gbps"] = r.gbps;
  j["mem_bw_gbps"] = r.mem_bw_gbps;
  j["bw_limit_ts"] = r.bytes_per_token ? r.mem_bw_gbps * 1e9 / r.step_bytes(1) : 0.0;
  j["expert_bytes"] = r.expert_bytes;
  j["macs_per_token"] = r.macs_per_token;
  j["compute_macs_per_s"] = r.compute_rate;
  const Row::Roof roof = r.roof();
  j["roof_ts"] = roof.ts;
  j["roof_bound"] = roof.bound;
  j["roof_share"] = roof.ts > 0 ? r.avg_ts / roof.ts : 0.0;
  j["rss_bytes"] = r.rss;
  j["kv_cache_bytes"] = r.kv_bytes;
  j["n_parallel"] = r.n_parallel;
  j["n_ranks"] = r.n_ranks;
  j["layout"] = r.layout;
  j["compute_s_min"] = r.compute_s[0];
  j["compute_s_avg"] = r.compute_s[1];
  j["compute_s_max"] = r.compute_s[2];
  j["comm_s_min"] = r.comm_s[0];
  j["comm_s_avg"] = r.comm_s[1];
  j["comm_s_max"] = r.comm_s[2];
  j["compute_s_by_rank"] = r.compute_by_rank;
  j["comm_s_by_rank"] = r.comm_by_rank;
  return j;
}

// Prints the table footer (md) or every row (json, csv).
void print_rows(const std::vector<Row>& rows, const std::string& out, const std::map<int, double>& bw,
                const std::map<int, double>& rate) {
  if (out == "md") {
    std::printf("\nbuild %s, %s, CPU %s", RANKLM_COMMIT, __VERSION__, cpu_name().c_str());
    if (!bw.empty()) std::printf("; measured (read bandwidth, batched Q4_0 product):");
    for (auto [t, g] : bw) std::printf(" %.1f GB/s and %.1f G multiply-adds/s at %d thread%s;", g, rate.at(t) / 1e9, t, t > 1 ? "s" : "");
    std::printf("\nroof: a step reads every weight once (of an MoE's experts, the share its tokens pick: 1 - (1 - used / "
                "experts)^tokens) and does its tokens' multiply-adds; the larger of the two "
                "times bounds it (attention left out); read bandwidth for a model: the faster of the 1 GiB buffer and a "
                "buffer of its weights' size (in cache when they fit)\n");
  } else if (out == "json") {
    nlohmann::ordered_json j = nlohmann::ordered_json::array();
    for (const Row& r : rows) j.push_back(row_json(r));
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    bool header = true;
    for (const Row& r : rows) {
      const nlohmann::ordered_json j = row_json(r);
      std::string line;
      if (header) {
        for (auto it = j.begin(); it != j.end(); ++it) line += (line.empty() ? "" : ",") + it.key();
        std::printf("%s\n", line.c_str());
        line.clear();
        header = false;
      }
      for (auto it = j.begin(); it != j.end(); ++it) {
        std::string v = it->is_string() ? it->get<std::string>() : it->dump();
        if (it->is_array()) {
          v.clear();
          for (const auto& x : *it) v += (v.empty() ? "" : ";") + x.dump();
        }
        if (v.find_first_of(",\"") != std::string::npos) {
          std::string q = "\"";
          for (char c : v) q += c == '"' ? std::string("\"\"") : std::string(1, c);
          v = q + "\"";
        }
        line += (line.empty() ? "" : ",") + v;
      }
      std::printf("%s\n", line.c_str());
    }
  }
}

struct BenchOptions {
  std::vector<int> threads;
  std::vector<int64_t> pps, tgs, npls;
  int reps = 5;
  std::string out = "md";
  uint32_t seed = 1;
  comm::Payloads z;
};

// The md table's line for a row (the header first, with the first row).
void print_md_row(const Row& r, bool first) {
  if (first) {
    std::printf("| model | size | ranks | layout | threads | isa | test | npl | t/s | GB/s | bw limit t/s | roof t/s (share) | "
                "compute s/rep (min/avg/max) | comm+wait s/rep (min/avg/max) | KV | RSS |\n");
    std::printf("| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |\n");
  }
  const double limit = r.bytes_per_token ? r.mem_bw_gbps * 1e9 / r.step_bytes(1) : 0.0;
  const Row::Roof roof = r.roof();
  const std::string roof_s = roof.ts > 0 ? fmt::format("{:.1f} {} ({:.0f}%)", roof.ts, roof.bound, 100 * r.avg_ts / roof.ts) : "";
  std::printf("| %s | %s | %d | %s | %d | %s | %s | %d | %.2f ± %.2f | %s | %s | %s | %.3f / %.3f / %.3f | %.3f / %.3f / %.3f | %s | %s |\n",
              r.model.c_str(), human_size(r.model_size).c_str(), r.n_ranks, r.layout.c_str(), r.threads, r.isa.c_str(),
              r.test().c_str(), r.n_parallel, r.avg_ts, r.stddev_ts, r.n_gen > 0 ? fmt::format("{:.1f}", r.gbps).c_str() : "",
              r.n_gen > 0 && r.n_parallel == 1 ? fmt::format("{:.1f}", limit).c_str() : "", roof_s.c_str(), r.compute_s[0],
              r.compute_s[1], r.compute_s[2], r.comm_s[0], r.comm_s[1], r.comm_s[2], mib(r.kv_bytes).c_str(),
              human_size(r.rss).c_str());
  std::fflush(stdout);
}

// One test (pp or tg) at one npl, warm-up plus reps, through the scheduler. Rank 0.
void run_test(Engine& e, const BenchOptions& o, Row r, int64_t npl, std::mt19937& rng, std::vector<Row>& rows) {
  runtime::Executor& ex = e.exec();
  const int64_t n_prompt = r.n_prompt, n_gen = r.n_gen;
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(ex.n_vocab() - 1));
  runtime::SchedulerOptions so;
  so.n_micro = static_cast<int>(e.plan().stages.size());
  so.prefill_chunk = std::max<int64_t>(n_prompt, 1);
  r.n_parallel = static_cast<int>(npl);
  std::vector<runtime::RankTimes> sum(static_cast<size_t>(e.plan().world_size));
  for (int rep = -1; rep < o.reps; ++rep) {  // rep -1 is the warm-up
    int64_t issued = 0;
    runtime::Scheduler sched(ex, so);
    const auto t0 = Clock::now();
    sched.run(
        [&]() -> std::optional<runtime::Request> {
          if (issued == npl) return std::nullopt;
          runtime::Request q;
          q.id = issued++;
          q.prompt.resize(static_cast<size_t>(n_prompt > 0 ? n_prompt : 1));
          for (auto& x : q.prompt) x = tok(rng);
          q.max_tokens = n_prompt > 0 ? 1 : static_cast<int>(n_gen);
          q.sampling.temperature = 0;
          return q;
        },
        [](runtime::Finished&&) {}, [](const runtime::Request&, const std::string& why) { fail("bench: {}", why); });
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    const std::vector<runtime::RankTimes> t = ex.gather_times();
    if (rep < 0) continue;
    r.samples_ns.push_back(ns);
    for (size_t i = 0; i < t.size(); ++i) {
      sum[i].compute_s += t[i].compute_s;
      sum[i].comm_s += t[i].comm_s;
    }
  }
  // Tokens per repetition: npl sequences of the test's length.
  r.n_prompt *= npl;
  r.n_gen *= npl;
  finish(r);
  r.n_prompt = n_prompt;
  r.n_gen = n_gen;
  auto stats = [&](auto field, double* out3) {
    out3[0] = 1e30, out3[1] = 0, out3[2] = 0;
    for (const runtime::RankTimes& x : sum) {
      const double v = field(x) / o.reps;
      out3[0] = std::min(out3[0], v);
      out3[1] += v / static_cast<double>(sum.size());
      out3[2] = std::max(out3[2], v);
    }
  };
  stats([](const runtime::RankTimes& x) { return x.compute_s; }, r.compute_s);
  stats([](const runtime::RankTimes& x) { return x.comm_s; }, r.comm_s);
  for (const runtime::RankTimes& x : sum) {
    r.compute_by_rank.push_back(x.compute_s / o.reps);
    r.comm_by_rank.push_back(x.comm_s / o.reps);
  }
  r.rss = rss_bytes();
  const runtime::KvStats kv = ex.kv_stats();  // the test's sequences keep their blocks to the end
  r.kv_bytes = static_cast<uint64_t>(kv.bytes_in_use);
  rows.push_back(r);
  if (o.out == "md") print_md_row(r, rows.size() == 1);
}

// Every test of one model source at one thread count. Every rank calls it; rank 0 drives.
void bench_source(comm::World& world, const ModelSource& src, int threads, const BenchOptions& o, double bw_gbps,
                  double compute_rate, std::vector<Row>& rows) {
  int64_t n_ctx = 16, max_npl = 1;
  for (auto p : o.pps) n_ctx = std::max(n_ctx, p + 2);
  for (auto n : o.tgs) n_ctx = std::max(n_ctx, n + 2);
  for (auto n : o.npls) max_npl = std::max(max_npl, n);
  auto e = load_engine(world, src, threads);
  e->start(static_cast<int>(max_npl), n_ctx, o.z);
  if (!e->drives()) {
    e->exec().serve();
    return;
  }
  const plan::Plan& p = e->plan();
  const gguf::File& header = e->header();
  std::string layout;
  for (const plan::Stage& st : p.stages) layout += (layout.empty() ? "" : "+") + fmt::format("{}x{}", st.layer_end - st.layer_begin, st.tp());
  layout = fmt::format("pp{} [{}]", p.stages.size(), layout);
  uint64_t size = 0, n_params = 0, embd_bytes = 0, macs = 0, expert_bytes = 0, expert_macs = 0;
  // Decode streams every weight once per token except the embedding table (one row), which
  // is read in full only when it doubles as the output matrix.
  const std::string embd_name = tensor_name(TensorId::kTokEmbd);
  const bool tied = header.find_tensor(tensor_name(TensorId::kOutput)) == nullptr;
  for (const auto& ti : header.tensors()) {
    size += ti.n_bytes;
    n_params += static_cast<uint64_t>(ti.n_elements());
    if (ti.name == embd_name) embd_bytes = ti.n_bytes;
    // Multiply-adds per token: one per element of every matrix a token is multiplied by.
    if (ti.ne.size() == 2 && (ti.name != embd_name || tied)) macs += static_cast<uint64_t>(ti.n_elements());
    if (ti.ne.size() == 3) expert_bytes += ti.n_bytes, expert_macs += static_cast<uint64_t>(ti.n_elements());
  }
  const uint64_t per_token = (tied ? size : size - embd_bytes) - expert_bytes;
  const HParams hp = read_hparams(header);
  const double expert_share = hp.moe() ? static_cast<double>(hp.n_expert_used) / static_cast<double>(hp.n_expert) : 0.0;
  // The memory roof must bound what decode can do: weights that fit in the last-level cache are
  // read faster than the 1 GiB buffer's DRAM bandwidth (a small model then showed 135% of its
  // roof). Read a buffer of the weights' own size too and take the faster of the two.
  if (per_token + expert_bytes > 0 && per_token + expert_bytes < (uint64_t{1} << 30)) {
    kern::ThreadPool pool(threads, sys::core_binder(threads));
    bw_gbps = std::max(bw_gbps, kern::measure_read_bandwidth(pool, std::max<size_t>(per_token + expert_bytes, size_t{1} << 20), 5) / 1e9);
  }
  const std::string type = header.get_string_opt("general.name").value_or(p.model.arch);
  std::mt19937 rng(o.seed);
  auto row = [&](int64_t n_prompt, int64_t n_gen) {
    Row r = Row::of(src.label(), type, size, n_params, threads, n_prompt, n_gen);
    r.bytes_per_token = per_token;
    r.macs_per_token = macs;
    r.expert_bytes = expert_bytes;
    r.expert_macs = expert_macs;
    r.expert_share = expert_share;
    r.compute_rate = compute_rate;
    r.mem_bw_gbps = bw_gbps;
    r.n_ranks = p.world_size;
    r.layout = layout;
    return r;
  };
  for (int64_t npl : o.npls) {
    for (auto n : o.pps) if (n > 0) run_test(*e, o, row(n, 0), npl, rng, rows);
    for (auto n : o.tgs) if (n > 0) run_test(*e, o, row(0, n), npl, rng, rows);
  }
  e->exec().stop();
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  po::options_description desc("bench options");
  ModelSource src;
  BenchOptions o;
  std::string threads_s, pp_s, tg_s, npl_s;
  PayloadOptions payloads;
  add_source_options(desc, src, true);
  add_payload_options(desc, payloads);
  desc.add_options()
      ("threads,t", po::value(&threads_s)->default_value(std::to_string(default_threads())),
       "thread counts per rank, comma-separated")
      ("n-prompt,p", po::value(&pp_s)->default_value("512"), "prefill lengths (pp tests), comma-separated; 0 skips")
      ("n-gen,n", po::value(&tg_s)->default_value("128"), "decode lengths (tg tests), comma-separated; 0 skips")
      ("npl", po::value(&npl_s)->default_value("1"), "sequences run together, comma-separated")
      ("repetitions,r", po::value(&o.reps)->default_value(5), "timed repetitions per test (after one warm-up)")
      ("output,o", po::value(&o.out)->default_value("md"), "md, csv or json")
      ("seed", po::value(&o.seed)->default_value(1), "seed of the random prompt tokens");
  po::variables_map vm;
  if (!parse_options("bench", "(-m M.gguf[,M2.gguf] | --shards DIR) [-t 1,2] [-p 512] [-n 128] [--npl 1,16] [-r 5] "
                     "[-o md|csv|json]", desc, args, vm)) {
    return kExitOk;
  }
  if (o.out != "md" && o.out != "csv" && o.out != "json") usage_fail("--output: '{}' (expected md, csv or json)", o.out);
  if (o.reps < 1) usage_fail("--repetitions: {} must be >= 1", o.reps);
  o.threads = parse_int_list<int>("--threads", threads_s, 1, 4096);
  o.pps = parse_int_list<int64_t>("--n-prompt", pp_s, 0, 1 << 20);
  o.tgs = parse_int_list<int64_t>("--n-gen", tg_s, 0, 1 << 20);
  o.npls = parse_int_list<int64_t>("--npl", npl_s, 1, 4096);
  if (o.threads.empty()) usage_fail("--threads: empty list");
  if (o.npls.empty()) usage_fail("--npl: empty list");
  src.check();
  o.z = parse_payloads(payloads);
  std::vector<ModelSource> sources;
  if (!src.shards.empty()) sources.push_back(src);
  for (const std::string& path : split_list(src.gguf)) sources.push_back(ModelSource{path, ""});
  if (sources.empty()) usage_fail("--model: empty list");

  return with_world("bench", [&](comm::World& world) {
    std::vector<Row> rows;
    std::map<int, double> bw, rate;  // threads -> GB/s, and multiply-adds/s, measured on rank 0
    if (world.comm().rank() == 0) {
      for (int t : o.threads) {
        kern::ThreadPool pool(t, sys::core_binder(t));
        bw[t] = kern::measure_read_bandwidth(pool) / 1e9;
        rate[t] = kern::measure_compute_rate(pool);
      }
    }
    for (const ModelSource& s : sources) {
      for (int t : o.threads) bench_source(world, s, t, o, bw[t], rate[t], rows);
    }
    if (world.comm().rank() == 0) print_rows(rows, o.out, bw, rate);
    return kExitOk;
  });
}

}  // namespace ranklm::cli
