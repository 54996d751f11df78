// The commands' side of the engine (engine/engine.h): the job's world, the watchdog's start-up
// hooks, and the policy that an error on any rank ends the whole job at once, naming the rank and
// host.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "comm/mpi.h"
#include "engine/engine.h"

namespace ranklm::cli {

using engine::Engine;
using engine::ModelSource;

// --allreduce and --hops as given: "f32" or "q8_0" each (parse_payloads).
struct PayloadOptions {
  std::string allreduce = "f32", hops = "f32";
};

// This rank's engine on the job's world, its start-up watched by the watchdog (cli/watchdog.h).
std::unique_ptr<Engine> load_engine(comm::World& world, const ModelSource& src, int threads);

// Runs body with the job's world. An error on this rank is printed with its rank and host and,
// under MPI, ends every rank (MPI_Abort), so no rank waits for one that has failed.
int with_world(const std::string& cmd, const std::function<int(comm::World&)>& body);

// --allreduce and --hops: "f32" or "q8_0" each.
comm::Payloads parse_payloads(const PayloadOptions& p);

}  // namespace ranklm::cli
