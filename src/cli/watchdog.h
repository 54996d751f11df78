// A rank's guard against waiting for ever outside the steps (whose waits have their own
// timeout): under a launcher, a thread that
//   - ends this process when its launcher is gone (mpirun or srun killed: the rank's parent
//     changes), so orphaned ranks do not keep computing and appending to a results file;
//   - ends it when start-up (MPI_Init, loading the shard, the ranks' ready message) has not
//     finished within RANKLM_START_TIMEOUT seconds (default 600), naming the phase, the rank
//     and the host; the launcher then ends every other rank.
// Nothing here calls MPI: the thread prints one line and calls _exit.
#pragma once

#include <string>

namespace ranklm::cli {

class Watchdog {
 public:
  // Starts the thread when launched by MPI (comm::launched_by_mpi); otherwise does nothing.
  explicit Watchdog(std::string cmd);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // What start-up is doing now, for the message ("MPI_Init", "loading the shard"); a string
  // literal. started() ends the start-up deadline (the launcher check goes on).
  static void phase(const char* what);
  static void started();
  // hold(true) suspends the start-up deadline (a job waiting for a results file's lock);
  // hold(false) restarts its clock.
  static void hold(bool on);
  // The start-up deadline in seconds (RANKLM_START_TIMEOUT, default 600).
  static double start_timeout_s();
};

}  // namespace ranklm::cli
