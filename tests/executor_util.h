// Helpers of the executor tests (test_executor.cpp, test_logprobs.cpp): a plan's ranks as
// threads of a fake world, each loading its own shard through the engine; the layouts every
// test runs; the scheduler over a list of requests.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "comm/fake.h"
#include "engine/engine.h"
#include "io/gguf.h"
#include "model/model.h"
#include "plan/identity.h"
#include "plan/plan.h"
#include "runtime/executor.h"
#include "runtime/scheduler.h"
#include "shard/shard.h"
#include "test_util.h"

namespace ranklm::test {

inline std::mutex hdf5_mu;  // HDF5 (serial build) is not thread-safe; loading is serialized

// Runs plan p over shards of `model_path` with one thread per rank, each rank the engine every
// command runs (engine/engine.h) on its communicator of a fake world: rank 0 runs
// body(executor), the others serve.
inline void run_ranks(const std::string& model_path, const plan::Plan& p, comm::Compression z, int n_slots, int64_t n_ctx,
               const std::function<void(runtime::Executor&)>& body, int64_t kv_blocks = 0) {
  test::TempDir dir;
  {
    auto f = gguf::File::open(model_path);
    for (int r = 0; r < p.world_size; ++r) shard::write_shard(*f, p, r, dir.str());
  }
  std::ofstream(dir.str() + "/manifest.json") << "{\"plan_hash\": \"" << plan::plan_hash(p) << "\"}";
  comm::FakeWorld world(p.world_size);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(p.world_size));
  std::vector<std::thread> threads;
  for (int r = 0; r < p.world_size; ++r) {
    threads.emplace_back([&, r] {
      try {
        comm::Comm& c = world.rank(r);
        c.set_timeout(std::chrono::seconds(30));
        std::unique_ptr<engine::Engine> e;
        {
          std::lock_guard lk(hdf5_mu);
          e = engine::Engine::load(c, engine::ModelSource{"", dir.str()}, 1);
        }
        // Every slot's whole context unless the test gives the pool's size.
        const int64_t blocks = kv_blocks > 0 ? kv_blocks : n_slots * ((n_ctx + kKvBlockLen - 1) / kKvBlockLen);
        e->start(n_slots, n_ctx, comm::Payloads{z, comm::Compression::kNone}, blocks);
        if (r == 0) {
          body(e->exec());
          e->exec().stop();
        } else {
          e->exec().serve(std::chrono::seconds(30));
        }
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) if (e) std::rethrow_exception(e);
}

struct Layout {
  const char* label;
  int ranks, pp, tp;
  std::vector<int64_t> layers;
};

inline const std::vector<Layout> kLayouts = {
    {"2 ranks PP", 2, 2, 1, {}},
    {"2 ranks TP", 2, 1, 2, {}},
    {"3 ranks PP uneven 1+2+1", 3, 3, 1, {1, 2, 1}},
    {"4 ranks PP2 x TP2 uneven 1+3", 4, 2, 2, {1, 3}},
    {"4 ranks TP4", 4, 1, 4, {}},
};

// The layout as ranklm plan makes it by default (exact TP).
inline plan::Plan exact_plan(const plan::ModelIdentity& id, const Layout& l) {
  plan::Plan p = plan::make_plan(id, l.ranks, l.pp, l.tp, stretch_layers(l.layers, id.n_layer));
  p.tp_mode = plan::TpMode::kExact;
  return p;
}

// Runs reqs through the continuous-batching scheduler on plan p (n_slots KV slots of 32) and
// returns each request's tokens; every request must finish once and none be rejected.
inline std::map<int64_t, std::vector<int32_t>> schedule(const std::string& path, const plan::Plan& p, int n_slots,
                                                 const runtime::SchedulerOptions& o,
                                                 const std::vector<runtime::Request>& reqs,
                                                 const std::function<void(const runtime::Finished&)>& check = {},
                                                 int64_t n_ctx = 32, int64_t kv_blocks = 0) {
  std::map<int64_t, std::vector<int32_t>> got;
  run_ranks(path, p, comm::Compression::kNone, n_slots, n_ctx, [&](runtime::Executor& ex) {
    size_t next = 0;
    runtime::Scheduler(ex, o).run(
        [&]() -> std::optional<runtime::Request> {
          if (next == reqs.size()) return std::nullopt;
          return reqs[next++];
        },
        [&](runtime::Finished&& fin) {
          if (check) check(fin);
          EXPECT_TRUE(got.emplace(fin.id, fin.tokens).second) << "request " << fin.id << " finished twice";
        },
        [&](const runtime::Request& r, const std::string& why) { ADD_FAILURE() << r.id << ": " << why; });
  }, kv_blocks);
  return got;
}

}  // namespace ranklm::test
