// The job's world communicator. Under a launcher (mpirun, srun: its rank variables set) this is
// MPI_COMM_WORLD, initialized here and finalized when the World goes; a process started alone
// gets a world of one rank without touching MPI.
#pragma once

#include <memory>

#include "comm/comm.h"

namespace ranklm::comm {

class World {
 public:
  World();
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;
  Comm& comm() { return *comm_; }
  bool is_mpi() const { return mpi_; }
  // Ends every rank of the job at once after a fatal error on this one (MPI_Abort); without
  // MPI, does nothing.
  [[noreturn]] void abort(int code);

 private:
  bool mpi_ = false;
  std::unique_ptr<Comm> comm_;
  std::shared_ptr<void> keep_;  // a fake world of one, when not under MPI
};

// True when this process was started by an MPI launcher (Open MPI's, PMIx, Slurm's srun).
bool launched_by_mpi();

}  // namespace ranklm::comm
