// Under mpirun (any number of ranks): the ring allreduce against MPI_Allreduce on random data
// of odd lengths, plain and Q8_0-compressed, over the whole world and over two halves, and the
// allgather against MPI_Allgatherv. Prints one "ok" line per check on rank 0; exits 1 on any
// mismatch. (A test may include <mpi.h> for the reference; the product's only user is
// src/comm/mpi.cpp.)
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "comm/mpi.h"
#include "comm/ring.h"

using namespace ranklm;
using namespace ranklm::comm;

namespace {

int failures = 0;

void expect(bool ok, int rank, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL (rank %d): %s\n", rank, what.c_str());
    ++failures;
  }
}

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace

int main() {
  World world;
  Comm& c = world.comm();
  const int rank = c.rank(), size = c.size();
  Group all;
  for (int r = 0; r < size; ++r) all.ranks.push_back(r);
  all.index = rank;
  RingBuffers buf;
  for (size_t exchange_max : {size_t{0}, kExchangeMaxBytes})  // the ring, then the one-round exchange
  for (int64_t n : {1, 5, 33, 1000, 4097, 100003}) {
    const std::vector<float> mine = random_vec(n, static_cast<uint32_t>(31 * rank + n));
    std::vector<float> want(static_cast<size_t>(n));
    MPI_Allreduce(mine.data(), want.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    std::vector<float> got = mine;
    ring_allreduce(c, all, got.data(), n, Compression::kNone, buf, exchange_max);
    double worst = 0;
    for (int64_t j = 0; j < n; ++j) worst = std::max(worst, std::fabs(static_cast<double>(got[j]) - want[j]));
    expect(worst <= 1e-5 * size, rank, fmt::format("allreduce n={}: max difference {} from MPI_Allreduce", n, worst));
    // Every rank holds the same bits: compare with rank 0's.
    std::vector<float> r0 = got;
    MPI_Bcast(r0.data(), static_cast<int>(n), MPI_FLOAT, 0, MPI_COMM_WORLD);
    expect(std::memcmp(r0.data(), got.data(), static_cast<size_t>(n) * 4) == 0, rank,
           fmt::format("allreduce n={}: differs from rank 0", n));

    std::vector<float> q = mine;
    ring_allreduce(c, all, q.data(), n, Compression::kQ8_0, buf, exchange_max);
    // Error against the size of what was summed (the sum itself may cancel).
    double err = 0, ref = 0, mine2 = 0;
    for (int64_t j = 0; j < n; ++j) {
      err += (q[j] - want[j]) * (q[j] - want[j]);
      mine2 += static_cast<double>(mine[j]) * mine[j];
    }
    MPI_Allreduce(&mine2, &ref, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    // Error model in test_comm.cpp: about 0.005 * sqrt((size + 1) / 2), with 50% margin.
    expect(std::sqrt(err / ref) < 0.0075 * std::sqrt((size + 1) / 2.0), rank, fmt::format("Q8_0 allreduce n={}: normalized RMS error {}", n, std::sqrt(err / ref)));
    std::vector<float> q0 = q;
    MPI_Bcast(q0.data(), static_cast<int>(n), MPI_FLOAT, 0, MPI_COMM_WORLD);
    expect(std::memcmp(q0.data(), q.data(), static_cast<size_t>(n) * 4) == 0, rank,
           fmt::format("Q8_0 allreduce n={}: differs from rank 0", n));
  }
  // Two groups at once (the even and the odd ranks), as two TP groups of a pipeline.
  {
    Group half;
    for (int r = rank % 2; r < size; r += 2) half.ranks.push_back(r);
    half.index = rank / 2;
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &sub);
    const int64_t n = 2053;
    const std::vector<float> mine = random_vec(n, static_cast<uint32_t>(rank + 9));
    std::vector<float> want(static_cast<size_t>(n)), got = mine;
    MPI_Allreduce(mine.data(), want.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, sub);
    ring_allreduce(c, half, got.data(), n, Compression::kNone, buf, 0);
    double worst = 0;
    for (int64_t j = 0; j < n; ++j) worst = std::max(worst, std::fabs(static_cast<double>(got[j]) - want[j]));
    expect(worst <= 1e-5 * size, rank, fmt::format("allreduce in two groups: max difference {}", worst));
    MPI_Comm_free(&sub);
  }
  // Allgather of unequal parts.
  {
    std::vector<int64_t> counts;
    std::vector<int> icounts, displs;
    int64_t total = 0;
    for (int r = 0; r < size; ++r) {
      counts.push_back(7 + 3 * r);
      icounts.push_back(7 + 3 * r);
      displs.push_back(static_cast<int>(total));
      total += counts.back();
    }
    const std::vector<float> mine = random_vec(counts[static_cast<size_t>(rank)], static_cast<uint32_t>(rank + 500));
    std::vector<float> want(static_cast<size_t>(total)), got(static_cast<size_t>(total));
    MPI_Allgatherv(mine.data(), icounts[static_cast<size_t>(rank)], MPI_FLOAT, want.data(), icounts.data(), displs.data(),
                   MPI_FLOAT, MPI_COMM_WORLD);
    ring_allgather(c, all, mine.data(), counts, got.data());
    expect(got == want, rank, "allgather differs from MPI_Allgatherv");
  }
  int total_failures = 0;
  MPI_Allreduce(&failures, &total_failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) {
    if (total_failures == 0) std::printf("ok   %d ranks: ring allreduce (plain, Q8_0, two groups) and allgather match MPI\n", size);
  }
  return total_failures == 0 ? 0 : 1;
}
