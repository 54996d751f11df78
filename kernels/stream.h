// Memory read bandwidth, measured the way decode reads weights: every thread of the pool
// streams its own contiguous part of a buffer far larger than the caches.
#pragma once

#include <cstddef>

#include "threadpool.h"

namespace ranklm::kern {

// Bytes per second: the best of `passes` parallel reads of a `bytes`-sized buffer.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int passes = 3);

}  // namespace ranklm::kern
