// ranklm-repack --model M.gguf --plan plan.json -o DIR [--ranks 3,5] [--missing]: one HDF5 shard
// per rank (DIR/rank-00000.h5 ...) and DIR/manifest.json; --missing skips shards already there. Under mpirun (Open MPI's or Slurm's rank
// variables set) and without --ranks, each process writes only its own rank's shard, so every
// host repacks its own part; the tool itself needs no MPI.
#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/tool_main.h"
#include "io/gguf.h"
#include "shard/shard.h"
#include "plan/identity.h"
#include "plan/plan.h"
#include "util/json_file.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace po = boost::program_options;
using namespace ranklm;

namespace {

int env_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    if (const char* s = std::getenv(v); s && *s) return std::atoi(s);
  }
  return -1;
}

// The job's size as the launcher tells it (0: not under a launcher).
int env_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"}) {
    if (const char* s = std::getenv(v); s && *s) return std::atoi(s);
  }
  return 0;
}

std::vector<int> parse_ranks(const std::string& s, int world) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    const long r = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || r < 0 || r >= world) {
      usage_fail("--ranks: '{}' is not a rank of this plan (0..{})", item, world - 1);
    }
    if (std::find(out.begin(), out.end(), static_cast<int>(r)) != out.end()) {
      usage_fail("--ranks: rank {} is listed twice (two writers would race on one shard)", r);
    }
    out.push_back(static_cast<int>(r));
  }
  if (out.empty()) usage_fail("--ranks: empty list");
  return out;
}

void write_json_atomic(const std::string& path, const nlohmann::json& j) { write_file_atomic(path, j.dump(2) + "\n"); }

// Writes one rank's shard and its record (DIR/rank-NNNNN.h5.json), with progress lines.
void write_rank(const gguf::File& f, const plan::Plan& p, int r, const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  double shown = 0;
  const shard::ShardWritten w = shard::write_shard(f, p, r, dir, [&](uint64_t done, uint64_t total) {
    if (secs() - shown < 1.0) return;  // a line a second at most
    shown = secs();
    std::fprintf(stderr, "ranklm-repack: rank %d: %.1f / %.1f MB, %.0f MB/s\n", r, done / 1e6, total / 1e6,
                 done / 1e6 / std::max(secs(), 1e-9));
  });
  std::fprintf(stderr, "ranklm-repack: rank %d: %s, %.1f MB in %.2f s (%.0f MB/s)\n", r, w.path.c_str(),
               w.bytes / 1e6, secs(), w.tensor_bytes / 1e6 / std::max(secs(), 1e-9));
  const nlohmann::json entry = {{"rank", r}, {"file", shard::shard_name(r)}, {"bytes", w.bytes},
                                {"fnv1a64x4", w.checksum}};
  // Each rank's own record, so hosts that repack their own ranks each leave one; the manifest
  // is made from these.
  write_json_atomic(dir + "/" + shard::shard_name(r) + ".json",
                    {{"plan_hash", plan::plan_hash(p)}, {"model_hash", p.model.gguf_hash}, {"shard", entry}});
}

// Whether DIR already holds rank r's shard for this plan: its record names the plan and the file
// has the recorded size (the loader verifies every tensor's checksum when it reads it).
bool shard_present(const plan::Plan& p, int r, const std::string& dir) {
  std::ifstream rec(dir + "/" + shard::shard_name(r) + ".json");
  if (!rec) return false;
  const nlohmann::json j = nlohmann::json::parse(rec, nullptr, false);
  if (!j.is_object() || j.value("plan_hash", "") != plan::plan_hash(p) || !j.contains("shard")) return false;
  std::error_code ec;
  const auto size = std::filesystem::file_size(dir + "/" + shard::shard_name(r), ec);
  return !ec && j["shard"].is_object() && j["shard"].value("bytes", uint64_t{0}) == size;
}

// Cores this process may run on.
int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

// Writes `ranks` with up to `jobs` processes at once (HDF5 is not thread-safe, so parallel
// writers are forked processes sharing the mapped GGUF). Rank i goes to worker i % jobs.
void write_ranks(const gguf::File& f, const plan::Plan& p, const std::vector<int>& ranks, const std::string& dir,
                 int jobs) {
  jobs = std::clamp(jobs, 1, static_cast<int>(ranks.size()));
  if (jobs == 1) {
    for (int r : ranks) write_rank(f, p, r, dir);
    return;
  }
  std::fflush(nullptr);
  std::vector<pid_t> kids;
  for (int j = 0; j < jobs; ++j) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("cannot start a writer process (fork failed); rerun with --jobs 1");
    if (pid == 0) {
      // A writer dies with the tool (kill -9 of the parent, a job step cancelled): nothing
      // keeps writing behind the user's back.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() == 1) ::_exit(1);
      int rc = 0;
      try {
        for (size_t i = static_cast<size_t>(j); i < ranks.size(); i += static_cast<size_t>(jobs)) {
          write_rank(f, p, ranks[i], dir);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "ranklm-repack: error: %s\n", e.what());
        rc = 1;
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    kids.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : kids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  if (failed > 0) fail("{} of {} writer processes failed (see the messages above); no shard they were writing is left under its final name", failed, jobs);
}

int run(int argc, char** argv) {
  std::string model, plan_path, dir, ranks_s;
  int jobs = 0;
  bool missing = false;
  po::options_description desc("ranklm-repack options");
  desc.add_options()
      ("help,h", "show this help")
      ("model,m", po::value(&model)->required(), "GGUF model file")
      ("plan", po::value(&plan_path)->required(), "plan.json from ranklm plan")
      ("output,o", po::value(&dir)->required(), "directory for the shards")
      ("ranks", po::value(&ranks_s), "only these ranks, comma-separated (default: all, or this process's rank under mpirun)")
      ("jobs,j", po::value(&jobs), "shards written at once, one process each (default: the usable cores)")
      ("missing", po::bool_switch(&missing), "write only the shards DIR does not already hold for this plan (a job's resubmission; node-local disks)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    std::cout << "usage: ranklm-repack --model M.gguf --plan plan.json -o DIR [--ranks 3,5] [--missing] [-j J]\n\n" << desc << "\n";
    return 0;
  }
  po::notify(vm);

  const plan::Plan p = plan::from_json(read_json_file(plan_path, "the plan"), plan_path);
  auto f = gguf::File::open(model);
  const plan::ModelIdentity id = plan::model_identity(*f);
  if (id.gguf_hash != p.model.gguf_hash) {
    fail("{}: this plan was made for another model file (plan model hash {}, {} has {}); rerun "
         "ranklm plan on this file", plan_path, p.model.gguf_hash, model, id.gguf_hash);
  }
  plan::check_tp_slicing(*f, p);

  std::vector<int> ranks;
  if (!ranks_s.empty()) {
    ranks = parse_ranks(ranks_s, p.world_size);
  } else if (const int r = env_rank(); r >= 0) {
    // Each process of the job writes its own rank's shard, so the job must have the plan's size.
    if (const int n = env_size(); n > 0 && n != p.world_size) {
      fail("{}: {} rank{} planned, {} started: start ranklm-repack with mpirun -np {}{} (or make a plan "
           "for {} ranks: ranklm plan --layout spread under mpirun -np {})", plan_path, p.world_size,
           p.world_size == 1 ? "" : "s", n, p.world_size,
           p.world_size == 1 ? " or without mpirun (one process writes every shard)" : "", n, n);
    }
    if (r >= p.world_size) fail("{}: this process is rank {} but the plan has {} ranks: start ranklm-repack with mpirun -np {}", plan_path, r, p.world_size, p.world_size);
    ranks = {r};
  } else {
    for (int r = 0; r < p.world_size; ++r) ranks.push_back(r);
  }
  std::filesystem::create_directories(dir);
  if (missing) {
    std::vector<int> todo;
    for (int r : ranks) {
      if (shard_present(p, r, dir)) {
        std::fprintf(stderr, "ranklm-repack: rank %d: %s/%s is already there for this plan\n", r, dir.c_str(), shard::shard_name(r).c_str());
      } else {
        todo.push_back(r);
      }
    }
    ranks = todo;
  }

  if (jobs < 0) usage_fail("--jobs: {} is not a number of processes (1 or more, 0 for the usable cores)", jobs);
  if (!ranks.empty()) write_ranks(*f, p, ranks, dir, jobs == 0 ? usable_cores() : jobs);

  // The manifest: the plan and every shard whose record is in DIR (this run's and earlier ones
  // for the same plan). Processes repacking ranks into one directory at once (mpirun) take a
  // lock here, so the last one sees every record.
  const int lock_fd = ::open((dir + "/.manifest.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd >= 0) ::flock(lock_fd, LOCK_EX);
  nlohmann::json files = nlohmann::json::array();
  for (int r = 0; r < p.world_size; ++r) {
    std::ifstream rec(dir + "/" + shard::shard_name(r) + ".json");
    if (!rec) continue;
    const nlohmann::json j = nlohmann::json::parse(rec, nullptr, false);
    if (j.is_object() && j.value("plan_hash", "") == plan::plan_hash(p)) files.push_back(j["shard"]);
  }
  write_json_atomic(dir + "/manifest.json", {{"format", "ranklm-shards"},
                                             {"format_version", shard::kShardFormatVersion},
                                             {"plan_hash", plan::plan_hash(p)},
                                             {"plan", plan::to_json(p)},
                                             {"complete", static_cast<int>(files.size()) == p.world_size},
                                             {"files", files}});
  if (lock_fd >= 0) ::close(lock_fd);  // releases the lock
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ranklm::cli::run_tool("ranklm-repack", &run, argc, argv); }
