#include "stream.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu.h"
#include "matmul.h"

namespace ranklm::kern {

namespace {

#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t out[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), a0);
  return out[0] + out[1] + out[2] + out[3];
}
#endif

uint64_t sum_scalar(const uint8_t* p, size_t n) {
  uint64_t a = 0, b = 0;
  for (size_t i = 0; i + 16 <= n; i += 16) {
    uint64_t x, y;
    std::memcpy(&x, p + i, 8);
    std::memcpy(&y, p + i + 8, 8);
    a += x;
    b += y;
  }
  return a + b;
}

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int passes) {
  std::unique_ptr<uint8_t[]> buf(new uint8_t[bytes]);
  const int64_t n_chunks = pool.size();
  const size_t per = bytes / static_cast<size_t>(n_chunks) / 128 * 128;
  pool.parallel_for(n_chunks, [&](int64_t b, int64_t e, int) {  // first touch by the reader
    for (int64_t c = b; c < e; ++c) std::memset(buf.get() + c * per, static_cast<int>(c + 1), per);
  });
  const bool avx2 = active_isa() >= Isa::Avx2;
  double best = 0;
  std::atomic<uint64_t> sink{0};  // keeps the reads from being optimised away
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n_chunks, [&](int64_t b, int64_t e, int) {
      uint64_t s = 0;
      for (int64_t c = b; c < e; ++c) {
#if defined(__x86_64__)
        s += avx2 ? sum_avx2(buf.get() + c * per, per) : sum_scalar(buf.get() + c * per, per);
#else
        s += sum_scalar(buf.get() + c * per, per);
#endif
      }
      sink.fetch_add(s, std::memory_order_relaxed);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(per * static_cast<size_t>(n_chunks)) / s);
  }
  return best;
}

namespace {

// A random matrix of type t (rows x cols, GGUF layout) with sane scales (fp16 0x2000, about
// 0.0078, in every scale field), packed; and its product timed.
std::vector<uint8_t> random_weights(GgmlType t, int64_t rows, int64_t cols) {
  const TypeTraits& tt = traits(t);
  std::vector<uint8_t> w(row_bytes(tt, cols) * static_cast<size_t>(rows));
  uint32_t state = 12345;
  for (uint8_t& b : w) b = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
  const size_t blocks = w.size() / tt.type_size;
  for (size_t b = 0; b < blocks; ++b) {
    uint8_t* p = w.data() + b * tt.type_size;
    auto scale = [](uint8_t* at) { at[0] = 0x00, at[1] = 0x20; };
    switch (t) {
      case GgmlType::Q2_K: case GgmlType::Q4_K: case GgmlType::Q5_K:
        if (t == GgmlType::Q2_K) p += tt.type_size - 4;  // d, dmin after the quants
        scale(p), scale(p + 2);
        break;
      case GgmlType::Q3_K: case GgmlType::Q6_K: scale(p + tt.type_size - 2); break;  // d last
      case GgmlType::Q4_1: case GgmlType::Q5_1: scale(p), scale(p + 2); break;
      default: scale(p);  // d first: Q4_0, Q5_0, Q8_0
    }
  }
  return w;
}

double product_rate(GgmlType t, int64_t rows, int64_t cols, int64_t n_tok, int reps, ThreadPool& pool, int passes) {
  const std::vector<uint8_t> w = random_weights(t, rows, cols);
  std::vector<float> x(static_cast<size_t>(n_tok * cols)), y(static_cast<size_t>(n_tok * rows));
  uint32_t state = 777;
  for (float& v : x) v = static_cast<float>(static_cast<int32_t>((state = state * 1664525u + 1013904223u) >> 16) - 32768) / 32768.0f;
  std::vector<uint8_t> storage, scratch;
  const MatrixView mv = pack_matrix(MatrixView{t, w.data(), rows, cols}, storage);
  matmul(mv, x.data(), n_tok, y.data(), pool, scratch);  // warm: caches, scratch
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) matmul(mv, x.data(), n_tok, y.data(), pool, scratch);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(reps) * static_cast<double>(rows * cols * n_tok) / s);
  }
  return best;
}

}  // namespace

double measure_compute_rate(ThreadPool& pool, int passes) {
  return product_rate(GgmlType::Q4_0, 1024, 2048, 64, 4, pool, passes);
}

double measure_decode_rate(ThreadPool& pool, GgmlType t, int passes) {
  // 256 x 2048: 288 KiB of Q4_K, 420 KiB of Q6_K, shared by the threads: in L2 or L3.
  return product_rate(t, 256, 2048, 1, 64, pool, passes);
}

}  // namespace ranklm::kern
