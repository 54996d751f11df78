// The only file that includes <mpi.h>.
#include "comm/mpi.h"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "comm/fake.h"

namespace ranklm::comm {

namespace {

std::string mpi_error(int code) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(code, s, &n);
  return std::string(s, static_cast<size_t>(n));
}

void check(int rc, const std::string& what) {
  if (rc != MPI_SUCCESS) fail("MPI: {} failed: {}", what, mpi_error(rc));
}

int count_of(size_t bytes, const char* what) {
  if (bytes > static_cast<size_t>(INT_MAX)) fail("MPI: a {} of {} bytes is over the 2 GiB message limit", what, bytes);
  return static_cast<int>(bytes);
}

class MpiSend : public Request::Impl {
 public:
  MPI_Request req = MPI_REQUEST_NULL;
  bool test() override {
    int done = 0;
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test of a send");
    return done != 0;
  }
  ~MpiSend() override {
    if (req != MPI_REQUEST_NULL) MPI_Request_free(&req);  // abandoned (error path): let it finish
  }
};

class MpiRecv : public Request::Impl {
 public:
  MPI_Request req = MPI_REQUEST_NULL;
  int me = 0, src = 0, expected = 0;
  Tag tag = Tag::kControl;
  bool test() override {
    int done = 0;
    MPI_Status st;
    const int rc = MPI_Test(&req, &done, &st);
    if (rc != MPI_SUCCESS) {
      fail("rank {}: receiving a {} from rank {} failed: {} (ranks disagree on the step; a bug)", me,
           tag_name(tag), src, mpi_error(rc));
    }
    if (!done) return false;
    int got = 0;
    MPI_Get_count(&st, MPI_BYTE, &got);
    if (got != expected) {
      fail("rank {}: a {} of {} bytes came from rank {}, {} bytes were expected (ranks disagree on the "
           "step; a bug)", me, tag_name(tag), got, src, expected);
    }
    return true;
  }
  ~MpiRecv() override {
    if (req != MPI_REQUEST_NULL) MPI_Cancel(&req), MPI_Request_free(&req);
  }
};

class MpiComm : public Comm {
 public:
  MpiComm() {
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int len = 0;
    MPI_Get_processor_name(name, &len);
    std::vector<char> all(static_cast<size_t>(size_) * MPI_MAX_PROCESSOR_NAME);
    check(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                        MPI_COMM_WORLD),
          "gathering host names");
    for (int r = 0; r < size_; ++r) hosts_.emplace_back(all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& host(int r) const override { return hosts_.at(static_cast<size_t>(r)); }
  Request isend(const void* buf, size_t bytes, int dest, Tag tag) override {
    auto s = std::make_unique<MpiSend>();
    check(MPI_Isend(buf, count_of(bytes, tag_name(tag)), MPI_BYTE, dest, static_cast<int>(tag), MPI_COMM_WORLD, &s->req),
          fmt::format("sending a {} to rank {}", tag_name(tag), dest));
    return Request(std::move(s), dest, tag, false);
  }
  Request irecv(void* buf, size_t bytes, int src, Tag tag) override {
    auto r = std::make_unique<MpiRecv>();
    r->me = rank_;
    r->src = src;
    r->tag = tag;
    r->expected = count_of(bytes, tag_name(tag));
    check(MPI_Irecv(buf, r->expected, MPI_BYTE, src, static_cast<int>(tag), MPI_COMM_WORLD, &r->req),
          fmt::format("receiving a {} from rank {}", tag_name(tag), src));
    return Request(std::move(r), src, tag, true);
  }

 protected:
  void idle() override {}  // MPI_Test progresses the engine

 private:
  int rank_ = 0, size_ = 1;
  std::vector<std::string> hosts_;
};

// A world of one rank that owns its fake world.
class SoloComm : public Comm {
 public:
  SoloComm() : world_(1), inner_(world_.rank(0)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& host(int r) const override { return inner_.host(r); }
  Request isend(const void* buf, size_t bytes, int dest, Tag tag) override { return inner_.isend(buf, bytes, dest, tag); }
  Request irecv(void* buf, size_t bytes, int src, Tag tag) override { return inner_.irecv(buf, bytes, src, tag); }

 protected:
  void idle() override {}

 private:
  FakeWorld world_;
  Comm& inner_;
};

}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (const char* s = std::getenv(v); s && *s) return true;
  }
  return false;
}

World::World() {
  if (!launched_by_mpi()) {
    // srun without a PMI plugin Open MPI speaks starts every task as a job of one rank: each
    // would run the whole model alone (or refuse a plan for many). Say what to start instead.
    const char* step = std::getenv("SLURM_STEP_ID");
    const char* ntasks = std::getenv("SLURM_STEP_NUM_TASKS");
    if (step && *step && ntasks && std::atoi(ntasks) > 1) {
      fail("srun started {} tasks, but each is a job of one rank: this srun gave Open MPI no PMIx (its --mpi "
           "plugin is '{}'). Start it with srun --mpi=pmix (srun --mpi=list names what this Slurm offers; "
           "MpiDefault=pmix in slurm.conf makes it the default), or use mpirun inside the allocation",
           ntasks, std::getenv("SLURM_MPI_TYPE") ? std::getenv("SLURM_MPI_TYPE") : "none");
    }
    comm_ = std::make_unique<SoloComm>();
    return;
  }
  int provided = 0;
  // Only the main thread calls MPI; the thread pools compute.
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    fail("MPI_Init failed: the launcher's environment is incomplete (start under mpirun or srun)");
  }
  mpi_ = true;
  comm_ = std::make_unique<MpiComm>();
}

World::~World() {
  comm_.reset();
  if (mpi_) MPI_Finalize();
}

void World::abort(int code) {
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace ranklm::comm
