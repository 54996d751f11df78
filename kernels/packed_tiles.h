// Shared pieces of the packed-layout kernels (packed_avx2.cpp, packed_avx512.cpp): the ActQ8
// row view, the scalar Q4_0 tail and the driver that walks rows and token tiles.
//
// Everything here sits in an unnamed namespace on purpose: each instruction-set file gets its
// own copy with internal linkage, compiled for its own level. Ordinary inline functions would be
// merged by the linker across files, and an AVX-512 copy could then run on an AVX2-only CPU.
// Include this header only from the *_avx2.cpp / *_avx512.cpp files.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace ranklm::kern {
namespace {

// One token's ActQ8 row (layout in packed.h).
struct Act {
  const int8_t* q;
  const int32_t* corr;
  const float* d;
};

inline Act act_row(const uint8_t* act, int64_t cols, int64_t t) {
  const int64_t nb = cols / 32;
  const uint8_t* a = act + t * (cols + cols / 4);
  return {reinterpret_cast<const int8_t*>(a), reinterpret_cast<const int32_t*>(a + cols),
          reinterpret_cast<const float*>(a + cols + 4 * nb)};
}

// GGUF blocks b0..nb-1 past a packed row's last chunk (starting at `tail`) against one token;
// the tail is at most 15 blocks, so plain integer loops do.
inline float q4_0_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  float s = 0.0f;
  for (int64_t b = b0; b < nb; ++b) {
    const uint8_t* blk = tail + (b - b0) * 18;  // fp16 d, then 16 bytes of nibbles
    const int8_t* x = a.q + b * 32;
    int32_t dot = 0;
    for (int i = 0; i < 16; ++i) dot += ((blk[2 + i] & 0x0F) - 8) * x[i] + ((blk[2 + i] >> 4) - 8) * x[16 + i];
    s += _cvtsh_ss(static_cast<uint16_t>(blk[0] | (blk[1] << 8))) * a.d[b] * static_cast<float>(dot);
  }
  return s;
}

inline float q8_0_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  float s = 0.0f;
  for (int64_t b = b0; b < nb; ++b) {
    const uint8_t* blk = tail + (b - b0) * 34;  // fp16 d, then 32 signed bytes
    const int8_t* x = a.q + b * 32;
    int32_t dot = 0;
    for (int i = 0; i < 32; ++i) dot += static_cast<int8_t>(blk[2 + i]) * x[i];
    s += _cvtsh_ss(static_cast<uint16_t>(blk[0] | (blk[1] << 8))) * a.d[b] * static_cast<float>(dot);
  }
  return s;
}

// A kernel for one weight row and TT tokens starting at t0: writes y[(t0 + t) * ldy + r].
using TileFn = void (*)(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
                        int64_t ldy, int64_t r);

// Rows [r0, r1) x all tokens, blocked like a GEMM: a block of rows (kRowBlock rows, which
// stay in L2) is multiplied by each tile of 8 tokens in turn (whose activations, one row each,
// stay in L1 while the block's rows pass), then 4, 2, 1 for the last tokens.
constexpr int64_t kRowBlock = 128;

template <TileFn F1, TileFn F2, TileFn F4, TileFn F8>
void gemm_tiles(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols,
                const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = r1 < rb + kRowBlock ? r1 : rb + kRowBlock;
    int64_t t = 0;
    auto pass = [&](TileFn f, int64_t tt) {
      for (; t + tt <= n_tok; t += tt) {
        for (int64_t r = rb; r < re; ++r) f(w + r * static_cast<int64_t>(row_bytes), cols, act, t, y, ldy, r);
      }
    };
    pass(F8, 8);
    pass(F4, 4);
    pass(F2, 2);
    pass(F1, 1);
  }
}

#if defined(__AVX2__)
// Sum of the 8 floats of a vector.
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

}  // namespace
}  // namespace ranklm::kern
