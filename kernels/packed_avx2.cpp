// AVX2 kernels for packed Q4_0 / Q8_0 weights (layouts in packed.h). Compiled with -mavx2 -mfma
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
// 64-byte vector) covers blocks 8h..8h+7.
template <int TT>
void q4_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  Act a[TT];
  __m256 acc[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p = wr + c * 288;
    for (int h = 0; h < 2; ++h) {
      __m256i w[8];
      for (int m = 0; m < 4; ++m) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * m + 32 * h));
        w[m] = _mm256_and_si256(v, m4);
        w[m + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 256 + 16 * h)));
      for (int t = 0; t < TT; ++t) {
        const int8_t* q = a[t].q + c * 512 + 32 * h;
        // Nibble (<= 15) times int8 (|x| <= 127): eight pair sums stay below 2^15 in int16.
        __m256i s16 = _mm256_maddubs_epi16(w[0], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
        for (int k = 1; k < 8; ++k) {
          s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * k))));
        }
        const __m256i i = _mm256_add_epi32(_mm256_madd_epi16(s16, ones),
                                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].corr + c * 16 + 8 * h)));
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(a[t].d + c * 16 + 8 * h)), dw, acc[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = hsum256(acc[t]);
    if (nb > 16 * nc) s += q4_0_tail(wr + nc * 288, 16 * nc, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

template <int TT>
void q8_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  Act a[TT];
  __m256 acc[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
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

PackedGemmFn packed_gemm_avx2(GgmlType t) {
  if (t == GgmlType::Q4_0) return &gemm_tiles<q4_0_tile<1>, q4_0_tile<2>, q4_0_tile<4>, q4_0_tile<8>>;
  if (t == GgmlType::Q8_0) return &gemm_tiles<q8_0_tile<1>, q8_0_tile<2>, q8_0_tile<4>, q8_0_tile<8>>;
  return nullptr;
}

}  // namespace ranklm::kern
