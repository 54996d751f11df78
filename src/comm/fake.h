// An in-process world of n ranks: each rank is a Comm used by one thread; messages are copied
// into per-(source, destination, tag) queues. Runs the executor and the collectives without
// MPI (tests, and the single-process case: a world of 1).
#pragma once

#include <memory>
#include <vector>

#include "comm/comm.h"

namespace ranklm::comm {

class FakeWorld {
 public:
  explicit FakeWorld(int n);
  ~FakeWorld();
  int size() const;
  Comm& rank(int r);

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::vector<std::unique_ptr<Comm>> comms_;
};

}  // namespace ranklm::comm
