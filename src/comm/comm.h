// Communication between the ranks of a job: point-to-point messages with tags, non-blocking,
// waited on with a deadline. Two implementations: MpiComm (mpi.h/.cpp, the only code that
// includes <mpi.h>) and FakeWorld (fake.h, every rank a thread of one process, for tests and
// single-process runs). Collectives (ring allreduce, allgather) are built on these messages in
// ring.h, so the same code runs on both.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "util/error.h"

namespace ranklm::comm {

// Every kind of message; the wire format (docs/FORMATS.md) lists each payload.
enum class Tag : int {
  kHidden = 10,   // hidden states [n_tok, n_embd] float32, stage s -> stage s+1
  kRing = 20,     // ring allreduce / allgather segments inside a TP group
  kTokens = 30,   // sampled token ids int32, the head rank (last stage, TP index 0) -> rank 0
  kLogits = 40,   // logits [n_out, vocab share] float32, last stage members -> rank 0 (plain
                  // steps) or -> the head rank (sampled steps)
  kControl = 50,  // runtime/protocol.h: header + body, rank 0 -> every rank (steps, stop, time
                  // report requests) or -> the head rank (slot set-up); ready messages, every
                  // rank -> rank 0, at start-up
  kStats = 60,    // a rank's time split (protocol Times), every rank -> rank 0
  kProbe = 70,    // placement: inventories, ping-pong between host leaders (ranklm plan under mpirun)
};
const char* tag_name(Tag t);

// A message that never came, or a peer that is gone. Thrown by waits; names rank and host.
class CommError : public Error {
 public:
  using Error::Error;
};

// An outstanding send or receive. Complete once wait() returned (or test() said true).
class Request {
 public:
  class Impl {
   public:
    virtual ~Impl() = default;
    virtual bool test() = 0;  // true once complete; never blocks
  };
  Request() = default;
  Request(std::unique_ptr<Impl> impl, int peer, Tag tag, bool is_recv)
      : impl_(std::move(impl)), peer_(peer), tag_(tag), is_recv_(is_recv) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&&) noexcept = default;
  bool active() const { return impl_ != nullptr; }
  bool test();
  int peer() const { return peer_; }
  Tag tag() const { return tag_; }
  bool is_recv() const { return is_recv_; }

 private:
  std::unique_ptr<Impl> impl_;
  int peer_ = -1;
  Tag tag_ = Tag::kControl;
  bool is_recv_ = false;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The host a rank runs on (gathered once at start).
  virtual const std::string& host(int rank) const = 0;

  // Starts sending `bytes` bytes to `dest`; the buffer must stay alive and unchanged until
  // the request completes. Messages between two ranks with one tag arrive in order.
  virtual Request isend(const void* buf, size_t bytes, int dest, Tag tag) = 0;
  // Starts receiving exactly `bytes` bytes from `src` (a different size is an error naming
  // both sizes).
  virtual Request irecv(void* buf, size_t bytes, int src, Tag tag) = 0;

  // Waits for a request, at most the timeout (set_timeout); throws CommError naming the peer,
  // its host and `what` when it does not complete in time.
  void wait(Request& r, const char* what);
  void send(const void* buf, size_t bytes, int dest, Tag tag, const char* what);
  void recv(void* buf, size_t bytes, int src, Tag tag, const char* what);
  // A byte string of any length (its size first, then the bytes).
  void send_string(const std::string& s, int dest, Tag tag, const char* what);
  std::string recv_string(int src, Tag tag, const char* what);

  // How long a wait may last before the job is declared stuck (default 60 s; RANKLM_COMM_TIMEOUT).
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Time spent inside wait() (communication and waiting for peers), for the bench report.
  double wait_seconds() const { return wait_s_; }
  void reset_wait_seconds() { wait_s_ = 0; }

 protected:
  Comm();
  // Called while a wait spins: MPI progresses its engine here; the fake yields.
  virtual void idle() = 0;

 private:
  std::chrono::milliseconds timeout_;
  double wait_s_ = 0;
};

}  // namespace ranklm::comm
