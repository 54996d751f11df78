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

template <int TT>
void q4_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, ng = nb / 4;
  const uint16_t* dw = reinterpret_cast<const uint16_t*>(wr + nb * 16);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  Act a[TT];
  __m256 acc[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  for (int64_t g = 0; g < ng; ++g) {
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + g * 64));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + g * 64 + 32));
    // Elements 0..31 (block 0), 32..63 (block 1), 64..95 (block 2), 96..127 (block 3).
    const __m256i w0 = _mm256_and_si256(v0, m4);
    const __m256i w1 = _mm256_and_si256(v1, m4);
    const __m256i w2 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
    const __m256i w3 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
    const __m128 d4 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(dw + 4 * g)));
    const __m256 d44 = _mm256_set_m128(d4, d4);
    const __m256 s0 = _mm256_permute_ps(d44, 0x00);
    const __m256 s1 = _mm256_permute_ps(d44, 0x55);
    const __m256 s2 = _mm256_permute_ps(d44, 0xAA);
    const __m256 s3 = _mm256_permute_ps(d44, 0xFF);
    for (int t = 0; t < TT; ++t) {
      const int8_t* q = a[t].q + g * 128;
      const int32_t* c = a[t].corr + g * 32;
      const float* l = a[t].dl + g * 32;
#define RL_STEP(W, K, S)                                                                        \
  {                                                                                             \
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * K));         \
    const __m256i i = _mm256_add_epi32(dot_u8s8(W, x),                                          \
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 8 * K))); \
    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(l + 8 * K)), S, acc[t]); \
  }
      RL_STEP(w0, 0, s0)
      RL_STEP(w1, 1, s1)
      RL_STEP(w2, 2, s2)
      RL_STEP(w3, 3, s3)
#undef RL_STEP
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = hsum256(acc[t]);
    if (nb > 4 * ng) s += q4_0_tail(wr + ng * 64, dw, 4 * ng, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

template <int TT>
void q8_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32;
  const auto* wq = reinterpret_cast<const int8_t*>(wr);
  const uint16_t* dw = reinterpret_cast<const uint16_t*>(wr + nb * 32);
  Act a[TT];
  __m256 acc[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + b * 32));
    const __m256i av = _mm256_sign_epi8(v, v);  // |w|
    const __m256 ds = _mm256_set1_ps(_cvtsh_ss(dw[b]));
    for (int t = 0; t < TT; ++t) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].q + b * 32));
      const __m256i i = dot_u8s8(av, _mm256_sign_epi8(x, v));  // |w| * (x with w's sign)
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(a[t].dl + b * 8)),
                               ds, acc[t]);
    }
  }
  for (int t = 0; t < TT; ++t) y[(t0 + t) * ldy + r] = hsum256(acc[t]);
}

}  // namespace

PackedGemmFn packed_gemm_avx2(GgmlType t) {
  if (t == GgmlType::Q4_0) return &gemm_tiles<q4_0_tile<1>, q4_0_tile<2>, q4_0_tile<4>, q4_0_tile<8>>;
  if (t == GgmlType::Q8_0) return &gemm_tiles<q8_0_tile<1>, q8_0_tile<2>, q8_0_tile<4>, q8_0_tile<8>>;
  return nullptr;
}

}  // namespace ranklm::kern
