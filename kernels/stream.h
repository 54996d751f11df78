// Memory read bandwidth, measured the way decode reads weights: every thread of the pool
// streams its own contiguous part of a buffer far larger than the caches.
#pragma once

#include <cstddef>

#include "threadpool.h"
#include "types.h"

namespace ranklm::kern {

// Bytes per second: the best of `passes` parallel reads of a `bytes`-sized buffer.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int passes = 3);

// Multiply-adds per second of the batched quantized product at its best: a packed Q4_0 matrix
// small enough to stay in cache (1024 x 2048) times 64 tokens, the best of `passes` runs. The
// compute roof of a batched step (ranklm bench).
double measure_compute_rate(ThreadPool& pool, int passes = 5);

// Multiply-adds per second of one-token products (decode) of type t, the matrix in cache (256
// x 2048, packed): what one token's arithmetic costs apart from reading the weights. Types
// whose one-token kernel is slow next to the read bandwidth (K-quants on AVX2) make decode
// compute-bound; the planner's predictions use it (ranklm plan, inventory field decode_gmacs).
double measure_decode_rate(ThreadPool& pool, GgmlType t, int passes = 5);

}  // namespace ranklm::kern
