// Shared pieces of the packed-layout kernels (packed_avx2.cpp, packed_avx512.cpp): the ActQ8
// row view, the GGUF-block tails and the driver that walks rows and token tiles.
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

// A tile's start: the activation rows of tokens t0..t0+TT-1 and their accumulators at zero.
template <int TT, typename Acc>
inline void tile_start(const uint8_t* act, int64_t cols, int64_t t0, Act (&a)[TT], Acc (&acc)[TT], Acc zero) {
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = zero;
  }
}

// Horizontal sum of 8 int32 lanes.
inline int32_t hsum_i32x8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// GGUF blocks b0..nb-1 past a packed row's last chunk (starting at `tail`) against one token
// (at most 15 blocks; a TP slice of the FFN often ends in some). Per block: the integer dot
// product of 32 weights with the token's 32 int8 values in AVX2 (unsigned x signed byte
// products, pairs summed in int16, then int32), scaled by d_w * d_x. Q4_0 weights are stored
// as 0..15 for -8..7: sum((w - 8) x) = sum(w x) - 8 sum(x).
inline float q4_0_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  float s = 0.0f;
  for (int64_t b = b0; b < nb; ++b) {
    const uint8_t* blk = tail + (b - b0) * 18;  // fp16 d, then 16 bytes of nibbles
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low4), _mm_and_si128(packed, low4));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + b * 32));
    const __m256i wx = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones16);
    const __m256i sx = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, x), ones16);
    const int32_t dot = hsum_i32x8(wx) - 8 * hsum_i32x8(sx);
    s += _cvtsh_ss(static_cast<uint16_t>(blk[0] | (blk[1] << 8))) * a.d[b] * static_cast<float>(dot);
  }
  return s;
}

// The same for Q4_1 (d q + m, nibbles 0..15 unsigned): d_w d_x sum(q x) + m_w s_x.
inline float q4_1_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  float s = 0.0f;
  for (int64_t b = b0; b < nb; ++b) {
    const uint8_t* blk = tail + (b - b0) * 20;  // fp16 d, fp16 m, then 16 bytes of nibbles
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4));
    const __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low4), _mm_and_si128(packed, low4));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + b * 32));
    const int32_t dot = hsum_i32x8(_mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones16));
    s += _cvtsh_ss(static_cast<uint16_t>(blk[0] | (blk[1] << 8))) * a.d[b] * static_cast<float>(dot) +
         _cvtsh_ss(static_cast<uint16_t>(blk[2] | (blk[3] << 8))) * a.s[b];
  }
  return s;
}

// The same for Q4_K super-blocks in GGUF layout (an odd last one of a packed row): per
// sub-block s, (d sc_s) sum(q x) d_x - (dmin mn_s) s_x, 6-bit scales decoded as GGUF does.
inline float q4_k_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  float s = 0.0f;
  for (int64_t b = b0; b < nb; b += 8) {
    const uint8_t* blk = tail + (b - b0) / 8 * 144;  // fp16 d, fp16 dmin, 12 bytes of scales, 128 of nibbles
    const float d = _cvtsh_ss(static_cast<uint16_t>(blk[0] | (blk[1] << 8)));
    const float dmin = _cvtsh_ss(static_cast<uint16_t>(blk[2] | (blk[3] << 8)));
    const uint8_t* q = blk + 4;
    for (int j = 0; j < 8; ++j) {
      const int sc = j < 4 ? q[j] & 63 : (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
      const int mn = j < 4 ? q[j + 4] & 63 : (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * (j / 2)));
      const __m256i w = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(v, 4) : v, low4);
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + (b + j) * 32));
      const int32_t dot = hsum_i32x8(_mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones16));
      s += d * static_cast<float>(sc) * a.d[b + j] * static_cast<float>(dot) -
           dmin * static_cast<float>(mn) * a.s[b + j];
    }
  }
  return s;
}

// The same for Q6_K super-blocks in GGUF layout: per block of 32, d d_x (sc_lo dot_lo + sc_hi
// dot_hi), each half's integer dot product of q - 32 with the activations (scalar: rare tails).
inline float q6_k_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  float s = 0.0f;
  for (int64_t b = b0; b < nb; b += 8) {
    const uint8_t* blk = tail + (b - b0) / 8 * 210;  // ql[128], qh[64], scales[16] int8, fp16 d
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    const float d = _cvtsh_ss(static_cast<uint16_t>(blk[208] | (blk[209] << 8)));
    for (int j = 0; j < 8; ++j) {
      int32_t dot[2] = {0, 0};
      for (int e = 0; e < 32; ++e) {
        const int v = 32 * j + e, h = v / 128, r = v % 128, g = r / 32, l = r % 32;
        const int q = ql[64 * h + l + 32 * (g % 2)];
        const int lo = g < 2 ? q & 0x0F : q >> 4;
        const int w = (lo | (((qh[32 * h + l] >> (2 * g)) & 3) << 4)) - 32;
        dot[e / 16] += w * a.q[(b + j) * 32 + e];
      }
      s += d * a.d[b + j] * static_cast<float>(dot[0] * sc[2 * j] + dot[1] * sc[2 * j + 1]);
    }
  }
  return s;
}

// The same for Q8_0 (signed weights): |w| times x with w's sign moved onto x.
inline float q8_0_tail(const uint8_t* tail, int64_t b0, int64_t nb, const Act& a) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  float s = 0.0f;
  for (int64_t b = b0; b < nb; ++b) {
    const uint8_t* blk = tail + (b - b0) * 34;  // fp16 d, then 32 signed bytes
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + b * 32));
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), ones16);
    s += _cvtsh_ss(static_cast<uint16_t>(blk[0] | (blk[1] << 8))) * a.d[b] * static_cast<float>(hsum_i32x8(p));
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
