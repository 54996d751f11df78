// AVX2 kernels for packed Q4_0 / Q4_1 / Q4_K / Q6_K / Q8_0 weights (layouts in packed.h). Compiled with -mavx2 -mfma
// -mf16c and called only when the CPU has them. Like packed_avx512.cpp, this file calls no
// inline functions from ordinary shared headers (packed_tiles.h has internal linkage).
//
// Without VNNI, products of unsigned and signed bytes go through VPMADDUBSW (pairs into int16)
// and VPMADDWD (pairs into int32): Q4_0 nibbles (0..15) are small enough not to saturate and
// start from the activation's `corr` lanes as in the AVX-512 kernel; Q8_0 uses |w| and the
// activation with w's sign moved onto it, so no bias is needed.
#include <immintrin.h>

#include "packed.h"
#include "packed_tiles.h"

namespace ranklm::kern {

namespace {

// 32 unsigned bytes . 32 signed bytes -> 8 int32 lanes of 4 products each.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// The 16-lane chunk layout read as two 8-lane halves: half h (bytes 32h..32h+31 of each
// 64-byte vector) covers blocks 8h..8h+7 (for Q4_K, super-block h of the chunk).
enum Q4Kind { kQ4_0, kQ4_1, kQ4_K };

template <int TT, Q4Kind kKind>
void q4_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  Act a[TT];
  __m256 acc[TT];
  tile_start(act, cols, t0, a, acc, _mm256_setzero_ps());
  constexpr bool kMin = kKind != kQ4_0;
  constexpr int kBytes = kKind == kQ4_0 ? 288 : kKind == kQ4_1 ? 320 : 296;
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p = wr + c * kBytes;
    for (int h = 0; h < 2; ++h) {
      __m256i w[8];
      for (int m = 0; m < 4; ++m) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * m + 32 * h));
        w[m] = _mm256_and_si256(v, m4);
        w[m + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      }
      __m256 dw, mw = _mm256_setzero_ps();
      if constexpr (kKind == kQ4_K) {  // d sc and -dmin mn of super-block h's 8 sub-blocks
        const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 256 + 8 * h))));
        const __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 272 + 8 * h))));
        const float d = _cvtsh_ss(static_cast<uint16_t>(p[288 + 2 * h] | (p[289 + 2 * h] << 8)));
        const float dmin = _cvtsh_ss(static_cast<uint16_t>(p[292 + 2 * h] | (p[293 + 2 * h] << 8)));
        dw = _mm256_mul_ps(_mm256_set1_ps(d), sc);
        mw = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(_mm256_set1_ps(dmin), mn));
      } else {
        dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 256 + 16 * h)));
        if constexpr (kKind == kQ4_1) mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 288 + 16 * h)));
      }
      for (int t = 0; t < TT; ++t) {
        const int8_t* q = a[t].q + c * 512 + 32 * h;
        // Nibble (<= 15) times int8 (|x| <= 127): eight pair sums stay below 2^15 in int16.
        __m256i s16 = _mm256_maddubs_epi16(w[0], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
        for (int k = 1; k < 8; ++k) {
          s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * k))));
        }
        __m256i i = _mm256_madd_epi16(s16, ones);
        if constexpr (!kMin) {
          i = _mm256_add_epi32(i, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].corr + c * 16 + 8 * h)));
        }
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(a[t].d + c * 16 + 8 * h)), dw, acc[t]);
        if constexpr (kMin) acc[t] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a[t].s + c * 16 + 8 * h), acc[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = hsum256(acc[t]);
    if (nb > 16 * nc) {
      const uint8_t* tail = wr + nc * kBytes;
      s += kKind == kQ4_K ? q4_k_tail(tail, 16 * nc, nb, a[t])
           : kMin         ? q4_1_tail(tail, 16 * nc, nb, a[t])
                          : q4_0_tail(tail, 16 * nc, nb, a[t]);
    }
    y[(t0 + t) * ldy + r] = s;
  }
}

// Q6_K (layout in packed.h), as the AVX-512 kernel does it, on 8-lane halves: six-bit weights
// times int8 in VPMADDUBSW (two pair sums still fit int16), each block's halves in their own
// int32 sums started from corr / corr2, multiplied by their scales in int32, then d_w d_x.
template <int TT>
void q6k_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y, int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  Act a[TT];
  __m256 acc[TT];
  tile_start(act, cols, t0, a, acc, _mm256_setzero_ps());
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p = wr + c * 420;
    for (int h = 0; h < 2; ++h) {
      __m256i w[8];
      for (int m = 0; m < 4; ++m) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * m + 32 * h));
        const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 256 + 64 * (m / 2) + 32 * h));
        const __m256i hl = m % 2 == 0 ? _mm256_slli_epi16(hb, 4) : hb;
        const __m256i hh = m % 2 == 0 ? _mm256_slli_epi16(hb, 2) : _mm256_srli_epi16(hb, 2);
        w[m] = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(hl, m30));
        w[m + 4] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_and_si256(hh, m30));
      }
      const __m256i sl = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 384 + 8 * h)));
      const __m256i sh = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 400 + 8 * h)));
      const __m256 dw = _mm256_set1_ps(_cvtsh_ss(static_cast<uint16_t>(p[416 + 2 * h] | (p[417 + 2 * h] << 8))));
      const __m256i ones = _mm256_set1_epi16(1);
      for (int t = 0; t < TT; ++t) {
        const int8_t* q = a[t].q + c * 512 + 32 * h;
        auto x = [&](int k) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * k)); };
        auto half = [&](int k0) {  // elements of groups k0..k0+3: two pairs of VPMADDUBSW per int16 sum
          const __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(w[k0], x(k0)), _mm256_maddubs_epi16(w[k0 + 1], x(k0 + 1)));
          const __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(w[k0 + 2], x(k0 + 2)), _mm256_maddubs_epi16(w[k0 + 3], x(k0 + 3)));
          return _mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones));
        };
        const __m256i lo = _mm256_add_epi32(half(0), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].corr + c * 16 + 8 * h)));
        const __m256i hi = _mm256_add_epi32(half(4), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].corr2 + c * 16 + 8 * h)));
        const __m256i i = _mm256_add_epi32(_mm256_mullo_epi32(lo, sl), _mm256_mullo_epi32(hi, sh));
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(a[t].d + c * 16 + 8 * h)), dw, acc[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = hsum256(acc[t]);
    if (nb > 16 * nc) s += q6_k_tail(wr + nc * 420, 16 * nc, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

template <int TT>
void q8_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  Act a[TT];
  __m256 acc[TT];
  tile_start(act, cols, t0, a, acc, _mm256_setzero_ps());
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p = wr + c * 544;
    for (int h = 0; h < 2; ++h) {
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 512 + 16 * h)));
      for (int t = 0; t < TT; ++t) {
        const int8_t* q = a[t].q + c * 512 + 32 * h;
        __m256i i = _mm256_setzero_si256();
        for (int k = 0; k < 8; ++k) {
          const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * k + 32 * h));
          const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * k));
          i = _mm256_add_epi32(i, dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)));  // |w| * (x with w's sign)
        }
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(a[t].d + c * 16 + 8 * h)), dw, acc[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = hsum256(acc[t]);
    if (nb > 16 * nc) s += q8_0_tail(wr + nc * 544, 16 * nc, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

}  // namespace

void quantize_act_q8_avx2(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  // Bit for bit the scalar conversion: the same amax, d = amax / 127, fp16 d, 1/d and
  // round-half-to-even of x / d (VROUNDPS in the default rounding mode, like nearbyint).
  const int64_t nb = cols / 32, nc = nb / 16;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* corr = reinterpret_cast<int32_t*>(dst + cols);
  auto* dl = reinterpret_cast<float*>(dst + cols + 4 * nb);
  auto* sl = dl + nb;
  auto* corr2 = reinterpret_cast<int32_t*>(sl + nb);
  for (int64_t b = 0; b < nb; ++b) corr2[b] = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    __m256 v[4];
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) {
      i32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // int32 -> int8 in element order (the packs work per 128-bit lane; the permute restores it).
    const __m256i i16 = _mm256_packs_epi32(i32[0], i32[1]), j16 = _mm256_packs_epi32(i32[2], i32[3]);
    const __m256i i8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i16, j16), order);
    const __m256i s16 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), i8), _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    const int32_t sum = _mm_cvtsi128_si32(s4);
    corr[b] = -f.bias * sum;
    dl[b] = _cvtsh_ss(dh);
    sl[b] = f.s_fp16 ? _cvtsh_ss(_cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT))
                     : dl[b] * static_cast<float>(sum);
    if (b < nc * 16) {
      int8_t* c = q + (b / 16) * 512 + (b % 16) * 4;
      alignas(32) int32_t g[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(g), i8);
      for (int k = 0; k < 8; ++k) __builtin_memcpy(c + 64 * k, g + k, 4);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * 32), i8);
    }
  }
}

PackedGemmFn packed_gemm_avx2(GgmlType t) {
  if (t == GgmlType::Q4_0) return &gemm_tiles<q4_tile<1, kQ4_0>, q4_tile<2, kQ4_0>, q4_tile<4, kQ4_0>, q4_tile<8, kQ4_0>>;
  if (t == GgmlType::Q4_1) return &gemm_tiles<q4_tile<1, kQ4_1>, q4_tile<2, kQ4_1>, q4_tile<4, kQ4_1>, q4_tile<8, kQ4_1>>;
  if (t == GgmlType::Q4_K) return &gemm_tiles<q4_tile<1, kQ4_K>, q4_tile<2, kQ4_K>, q4_tile<4, kQ4_K>, q4_tile<8, kQ4_K>>;
  if (t == GgmlType::Q6_K) return &gemm_tiles<q6k_tile<1>, q6k_tile<2>, q6k_tile<4>, q6k_tile<8>>;
  if (t == GgmlType::Q8_0) return &gemm_tiles<q8_0_tile<1>, q8_0_tile<2>, q8_0_tile<4>, q8_0_tile<8>>;
  return nullptr;
}

}  // namespace ranklm::kern
