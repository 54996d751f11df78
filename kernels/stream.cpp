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

double measure_compute_rate(ThreadPool& pool, int passes) {
  constexpr int64_t kRows = 1024, kCols = 2048, kTok = 64;
  const TypeTraits& t = traits(GgmlType::Q4_0);
  std::vector<uint8_t> w(row_bytes(t, kCols) * kRows);
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<uint8_t>(next() >> 24);
  for (int64_t b = 0; b < kRows * kCols / QK; ++b) {  // sane fp16 scales (0x2000: about 0.0078)
    w[static_cast<size_t>(b) * t.type_size] = 0x00;
    w[static_cast<size_t>(b) * t.type_size + 1] = 0x20;
  }
  std::vector<float> x(static_cast<size_t>(kTok * kCols)), y(static_cast<size_t>(kTok * kRows));
  for (float& v : x) v = static_cast<float>(static_cast<int32_t>(next() >> 16) - 32768) / 32768.0f;
  std::vector<uint8_t> storage, scratch;
  const MatrixView mv = pack_matrix(MatrixView{GgmlType::Q4_0, w.data(), kRows, kCols}, storage);
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 4; ++i) matmul(mv, x.data(), kTok, y.data(), pool, scratch);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 4.0 * kRows * kCols * kTok / s);
  }
  return best;
}

}  // namespace ranklm::kern
