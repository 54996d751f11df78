// ranklm bench: llama-bench style throughput report for one rank.
//
//   ranklm bench -m M.gguf[,M2.gguf] [-t 1,2] [-p 512] [-n 128] [-r 5] [-o md|csv|json]
//
// For every model x threads x test it runs one warm-up and r timed repetitions from an empty
// KV cache: pp-N is one batched prefill of N random tokens, tg-N is N one-token decode steps.
// It reports tokens/s (mean and standard deviation over repetitions, as llama-bench), the
// weight bytes streamed per second during decode against a read bandwidth it measures itself
// with the same threads, and the resident set size. JSON/CSV rows use llama-bench's field names
// where the meaning is the same.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "runtime/cpu_binding.h"
#include "runtime/scheduler.h"
#include "cli/commands.h"
#include "cli/distributed.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "kernels/cpu.h"
#include "kernels/stream.h"
#include "model/model.h"
#include "util/error.h"

#ifndef RANKLM_COMMIT
#define RANKLM_COMMIT "unknown"
#endif

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
  uint64_t model_size = 0, n_params = 0, bytes_per_token = 0;
  int threads = 0;
  int64_t n_prompt = 0, n_gen = 0;
  std::vector<double> samples_ns;
  double avg_ts = 0, stddev_ts = 0, avg_ns = 0, stddev_ns = 0;
  double gbps = 0, mem_bw_gbps = 0;
  uint64_t rss = 0, kv_bytes = 0;
  // Distributed runs (--shards): ranks, layout, sequences decoded together, and per rank the
  // seconds per repetition spent computing and communicating/waiting (min, avg, max).
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
  if (r.n_gen > 0) r.gbps = r.avg_ts * static_cast<double>(r.bytes_per_token) / 1e9;
}

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
  j["bw_limit_ts"] = r.bytes_per_token ? r.mem_bw_gbps * 1e9 / static_cast<double>(r.bytes_per_token) : 0.0;
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
void print_rows(const std::vector<Row>& rows, const std::string& out, const std::map<int, double>& bw) {
  if (out == "md") {
    std::printf("\nbuild %s, %s, CPU %s", RANKLM_COMMIT, __VERSION__, cpu_name().c_str());
    if (!bw.empty()) std::printf("; read bandwidth measured:");
    for (auto [t, g] : bw) std::printf(" %.1f GB/s at %d thread%s;", g, t, t > 1 ? "s" : "");
    std::printf("\n");
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

// ranklm bench --shards DIR: the same tests through the distributed executor, one rank per
// process under mpirun (rank 0 prints). Each test runs n_parallel sequences through the
// continuous-batching scheduler with as many steps in flight as there are pipeline stages:
// pp-N prefills N random tokens per sequence, tg-N decodes N tokens per sequence (from a
// one-token prompt); avg_ts is the aggregate tokens/s.
int bench_shards(comm::World& world, const std::string& dir, int threads, const std::vector<int64_t>& pps,
                 const std::vector<int64_t>& tgs, const std::vector<int64_t>& npls, int reps, const std::string& out,
                 uint32_t seed, comm::Compression z) {
  int64_t n_ctx = 16, max_npl = 1;
  for (auto p : pps) n_ctx = std::max(n_ctx, p + 2);
  for (auto n : tgs) n_ctx = std::max(n_ctx, n + 2);
  for (auto n : npls) max_npl = std::max(max_npl, n);
  auto job = open_shard_job(world, dir, threads, static_cast<int>(max_npl), n_ctx, z);
  runtime::Executor& ex = *job->exec;
  if (world.comm().rank() != 0) {
    ex.serve();
    return kExitOk;
  }
  const plan::Plan& p = job->rank_file.plan;
  const gguf::File& header = *job->rank_file.model;
  std::string layout;
  for (const plan::Stage& st : p.stages) layout += (layout.empty() ? "" : "+") + fmt::format("{}x{}", st.layer_end - st.layer_begin, st.tp());
  layout = fmt::format("pp{} [{}]", p.stages.size(), layout);
  uint64_t size = 0, n_params = 0;
  for (const auto& ti : header.tensors()) {
    size += ti.n_bytes;
    n_params += static_cast<uint64_t>(ti.n_elements());
  }
  std::string name = dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  name = name.substr(name.find_last_of('/') + 1);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(ex.n_vocab() - 1));
  runtime::SchedulerOptions so;
  so.n_micro = static_cast<int>(p.stages.size());
  std::vector<Row> rows;
  auto run_test = [&](int64_t n_prompt, int64_t n_gen, int64_t npl) {
    Row r = Row::of(name, p.model.name, size, n_params, threads, n_prompt, n_gen);
    r.n_parallel = static_cast<int>(npl);
    r.n_ranks = p.world_size;
    r.layout = layout;
    so.prefill_chunk = std::max<int64_t>(n_prompt, 1);
    std::vector<runtime::RankTimes> sum(static_cast<size_t>(p.world_size));
    for (int rep = -1; rep < reps; ++rep) {  // rep -1 is the warm-up
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
          [](runtime::Finished&&) {},
          [](const runtime::Request&, const std::string& why) { fail("bench: {}", why); });
      const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
      const std::vector<runtime::RankTimes> t = ex.gather_times();
      if (rep < 0) continue;
      r.samples_ns.push_back(ns);
      for (size_t i = 0; i < t.size(); ++i) {
        sum[i].compute_s += t[i].compute_s;
        sum[i].comm_s += t[i].comm_s;
      }
    }
    // Tokens per repetition: n_parallel sequences of the test's length.
    r.n_prompt *= npl;
    r.n_gen *= npl;
    finish(r);
    r.n_prompt = n_prompt;
    r.n_gen = n_gen;
    auto stats = [&](auto field, double* out3) {
      out3[0] = 1e30, out3[1] = 0, out3[2] = 0;
      for (const runtime::RankTimes& x : sum) {
        const double v = field(x) / reps;
        out3[0] = std::min(out3[0], v);
        out3[1] += v / static_cast<double>(sum.size());
        out3[2] = std::max(out3[2], v);
      }
    };
    stats([](const runtime::RankTimes& x) { return x.compute_s; }, r.compute_s);
    stats([](const runtime::RankTimes& x) { return x.comm_s; }, r.comm_s);
    for (const runtime::RankTimes& x : sum) {
      r.compute_by_rank.push_back(x.compute_s / reps);
      r.comm_by_rank.push_back(x.comm_s / reps);
    }
    r.rss = rss_bytes();
    rows.push_back(r);
    if (out == "md") {
      if (rows.size() == 1) {
        std::printf("| shards | ranks | layout | threads | test | npl | t/s | compute s/rep (min/avg/max) | comm+wait s/rep (min/avg/max) |\n");
        std::printf("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |\n");
      }
      std::printf("| %s | %d | %s | %d | %s | %d | %.2f ± %.2f | %.3f / %.3f / %.3f | %.3f / %.3f / %.3f |\n", r.model.c_str(),
                  r.n_ranks, r.layout.c_str(), r.threads, r.test().c_str(), r.n_parallel, r.avg_ts, r.stddev_ts,
                  r.compute_s[0], r.compute_s[1], r.compute_s[2], r.comm_s[0], r.comm_s[1], r.comm_s[2]);
      std::fflush(stdout);
    }
  };
  for (int64_t npl : npls) {
    for (auto n : pps) if (n > 0) run_test(n, 0, npl);
    for (auto n : tgs) if (n > 0) run_test(0, n, npl);
  }
  ex.stop();
  print_rows(rows, out, {});
  return kExitOk;
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  po::options_description desc("bench options");
  std::string models, shards, threads_s, pp_s = "512", tg_s = "128", out = "md", npl_s = "1", allreduce = "f32";
  int reps = 5;
  uint32_t seed = 1;
  desc.add_options()
      ("model,m", po::value(&models), "GGUF model file(s), comma-separated")
      ("shards", po::value(&shards), "or: a shard directory (ranklm-repack); under mpirun, one rank per shard")
      ("npl", po::value(&npl_s)->default_value("1"), "with --shards: sequences run together, comma-separated")
      ("allreduce", po::value(&allreduce)->default_value("f32"), "with --shards: TP allreduce payload, f32 or q8_0")
      ("threads,t", po::value(&threads_s)->default_value(std::to_string(default_threads())),
       "thread counts, comma-separated")
      ("n-prompt,p", po::value(&pp_s)->default_value("512"), "prefill lengths (pp tests), comma-separated; 0 skips")
      ("n-gen,n", po::value(&tg_s)->default_value("128"), "decode lengths (tg tests), comma-separated; 0 skips")
      ("repetitions,r", po::value(&reps)->default_value(5), "timed repetitions per test (after one warm-up)")
      ("output,o", po::value(&out)->default_value("md"), "md, csv or json")
      ("seed", po::value(&seed)->default_value(1), "seed of the random prompt tokens");
  po::variables_map vm;
  if (!parse_options("bench", "(-m M.gguf | --shards DIR [--npl 1,16]) [-t 1,2] [-p 512] [-n 128] [-r 5] [-o md|csv|json]", desc,
                     args, vm)) {
    return kExitOk;
  }
  if (out != "md" && out != "csv" && out != "json") usage_fail("--output: '{}' (expected md, csv or json)", out);
  if (reps < 1) usage_fail("--repetitions: {} must be >= 1", reps);
  const auto threads = parse_int_list<int>("--threads", threads_s, 1, 4096);
  const auto pps = parse_int_list<int64_t>("--n-prompt", pp_s, 0, 1 << 20);
  const auto tgs = parse_int_list<int64_t>("--n-gen", tg_s, 0, 1 << 20);
  if (threads.empty()) usage_fail("--threads: empty list");
  if (models.empty() == shards.empty()) usage_fail("give exactly one of --model and --shards");
  if (!shards.empty()) {
    if (threads.size() != 1) usage_fail("--threads: with --shards give one thread count (each rank's)");
    const auto npls = parse_int_list<int64_t>("--npl", npl_s, 1, 4096);
    const comm::Compression z = parse_compression(allreduce);
    return with_world("bench", [&](comm::World& world) {
      return bench_shards(world, shards, threads[0], pps, tgs, npls, reps, out, seed, z);
    });
  }

  std::vector<Row> rows;
  std::map<int, double> bw;  // threads -> GB/s
  for (int t : threads) {
    kern::ThreadPool pool(t, core_binder(t));
    bw[t] = kern::measure_read_bandwidth(pool) / 1e9;
  }
  for (const std::string& path : split_list(models)) {
    auto file = gguf::File::open(path);
    auto model = Model::load(*file);
    const HParams& hp = model->hparams();
    uint64_t size = 0, n_params = 0, embd_bytes = 0;
    for (const auto& ti : file->tensors()) {
      size += ti.n_bytes;
      n_params += static_cast<uint64_t>(ti.n_elements());
      if (ti.name == "token_embd.weight") embd_bytes = ti.n_bytes;
    }
    // Decode streams every weight once per token except the embedding table (one row), which
    // is read in full only when it doubles as the output matrix.
    const uint64_t per_token = hp.tied_output ? size : size - embd_bytes;
    const std::string type = file->get_string_opt("general.name").value_or(hp.arch);
    std::string fname = path.substr(path.find_last_of('/') + 1);
    int64_t n_ctx = 16;
    for (auto p : pps) n_ctx = std::max(n_ctx, p + 1);
    for (auto n : tgs) n_ctx = std::max(n_ctx, n + 1);
    std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(hp.n_vocab - 1));

    for (int t : threads) {
      kern::ThreadPool pool(t, core_binder(t));
      auto run_test = [&](int64_t n_prompt, int64_t n_gen) {
        Row r = Row::of(fname, type, size, n_params, t, n_prompt, n_gen);
        r.bytes_per_token = per_token;
        r.mem_bw_gbps = bw[t];
        KvCache cache = model->make_cache(n_ctx);
        r.kv_bytes = static_cast<uint64_t>(hp.n_layer) * 2 * cache.n_ctx * cache.kv_dim * 2;
        std::vector<int32_t> toks(static_cast<size_t>(std::max<int64_t>(n_prompt, 1)));
        for (int rep = -1; rep < reps; ++rep) {  // rep -1 is the warm-up
          for (auto& x : toks) x = tok(rng);
          const auto t0 = Clock::now();
          if (n_prompt > 0) {
            model->forward(toks.data(), n_prompt, 0, cache, false, logits.data(), pool);
          } else {
            int32_t cur = toks[0];
            for (int64_t i = 0; i < n_gen; ++i) {
              model->forward(&cur, 1, i, cache, false, logits.data(), pool);
              cur = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
            }
          }
          const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
          if (rep >= 0) r.samples_ns.push_back(ns);
        }
        r.rss = rss_bytes();
        finish(r);
        rows.push_back(r);
        if (out == "md") {
          if (rows.size() == 1) {
            std::printf("| model | size | threads | isa | test | t/s | GB/s | bw limit t/s | RSS |\n");
            std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
          }
          const double limit = r.mem_bw_gbps * 1e9 / static_cast<double>(r.bytes_per_token);
          std::printf("| %s | %s | %d | %s | %s | %.2f ± %.2f | %s | %s | %s |\n", r.model.c_str(),
                      human_size(r.model_size).c_str(), r.threads, r.isa.c_str(), r.test().c_str(),
                      r.avg_ts, r.stddev_ts, r.n_gen > 0 ? fmt::format("{:.1f}", r.gbps).c_str() : "",
                      r.n_gen > 0 ? fmt::format("{:.1f}", limit).c_str() : "",
                      human_size(r.rss).c_str());
          std::fflush(stdout);
        }
      };
      for (auto p : pps) if (p > 0) run_test(p, 0);
      for (auto n : tgs) if (n > 0) run_test(0, n);
    }
  }
  print_rows(rows, out, bw);
  return kExitOk;
}

}  // namespace ranklm::cli
