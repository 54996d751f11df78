// Shared pieces of the packed-layout kernels (packed_avx2.cpp, packed_avx512.cpp): the ActQ8
// row view, the store of a group's results and the driver that walks row groups and token tiles.
//
// Everything here sits in an unnamed namespace on purpose: each instruction-set file gets its
// own copy with internal linkage, compiled for its own level. Ordinary inline functions would be
// merged by the linker across files, and an AVX-512 copy could then run on an AVX2-only CPU.
// Include this header only from the *_avx2.cpp / *_avx512.cpp files.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "packed.h"

namespace ranklm::kern {
namespace {

// One token's ActQ8 row (layout in packed.h).
struct Act {
  const int8_t* q;
  const int32_t* corr;
  const float* d;
  const float* s;
  const int32_t* corr2;
};

inline Act act_row(const uint8_t* act, int64_t cols, int64_t t) {
  const int64_t nb = cols / 32;
  const uint8_t* a = act + t * (cols + cols / 2);
  const float* d = reinterpret_cast<const float*>(a + cols + 4 * nb);
  return {reinterpret_cast<const int8_t*>(a), reinterpret_cast<const int32_t*>(a + cols), d, d + nb,
          reinterpret_cast<const int32_t*>(d + 2 * nb)};
}

// 4 activation bytes (elements 4k..4k+3 of a block) as one int32, to broadcast to every row.
inline int32_t act4(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return v;
}

// Where a tile's results go: rows [r0, r1) of the output, y[t * ldy + (r - r0)].
struct Out {
  float* y;
  int64_t ldy, r0, r1;
  // The n results of token t for rows row0..row0+n-1: only rows in range.
  void put(int64_t t, int64_t row0, const float* v, int64_t n = kGroupRows) const {
    float* yt = y + t * ldy;
    if (row0 >= r0 && row0 + n <= r1) {
      std::memcpy(yt + (row0 - r0), v, static_cast<size_t>(n) * sizeof(float));
      return;
    }
    for (int64_t j = 0; j < n; ++j) {
      if (row0 + j >= r0 && row0 + j < r1) yt[row0 + j - r0] = v[j];
    }
  }
};

// A kernel for one row group (starting at `group`, first row row0) and TT tokens from t0.
using TileFn = void (*)(const uint8_t* group, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0,
                        const Out& out);

// Rows [r0, r1) x all tokens, blocked like a GEMM: a block of groups (kGroupBlock x 16 rows,
// which stay in L2) is multiplied by each tile of 8 tokens in turn (whose activations stay in
// L1 while the block's groups pass), then 4, 2, 1 for the last tokens.
constexpr int64_t kGroupBlock = 8;

template <TileFn F1, TileFn F2, TileFn F4, TileFn F8>
void gemm_groups(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols, const uint8_t* act,
                 int64_t n_tok, float* y, int64_t ldy) {
  const int64_t gbytes = static_cast<int64_t>(row_bytes) * kGroupRows;
  const int64_t g0 = r0 / kGroupRows, g1 = (r1 + kGroupRows - 1) / kGroupRows;
  const Out out{y, ldy, r0, r1};
  for (int64_t gb = g0; gb < g1; gb += kGroupBlock) {
    const int64_t ge = g1 < gb + kGroupBlock ? g1 : gb + kGroupBlock;
    int64_t t = 0;
    auto pass = [&](TileFn f, int64_t tt) {
      for (; t + tt <= n_tok; t += tt) {
        for (int64_t g = gb; g < ge; ++g) f(w + g * gbytes, cols, act, t, g * kGroupRows, out);
      }
    };
    pass(F8, 8);
    pass(F4, 4);
    pass(F2, 2);
    pass(F1, 1);
  }
}

#if defined(__AVX2__)
// Sum of the 8 floats of a vector (kquants_avx2.cpp).
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

}  // namespace
}  // namespace ranklm::kern
