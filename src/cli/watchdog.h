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

  // Before this rank aborts the job (MPI_Abort) after a fatal error: when mpirun itself is its
  // parent, a detached process ends mpirun if it is still there RANKLM_ABORT_GRACE seconds
  // (default 30) later. mpirun waits for the daemons of every host to confirm the abort, and a
  // host it cannot reach (a partition, a dead machine) keeps it waiting until TCP gives up on
  // the connection (net.ipv4.tcp_retries2: about 15 minutes by default). The process says so on
  // mpirun's stderr, sends SIGTERM, then SIGKILL 5 s later. It holds none of this rank's files.
  static void guard_launcher_exit(const std::string& cmd);
};

}  // namespace ranklm::cli
