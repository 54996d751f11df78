// AVX2 dot products of Q4_K / Q6_K weight rows with Q8_K activations, on the GGUF layout
// (block structs in types.h). Compiled with -mavx2 -mfma -mf16c and used only when the CPU has
// them; calls no inline functions from ordinary shared headers (packed_tiles.h has internal
// linkage).
//
// Unsigned weight quants times signed activations go through VPMADDUBSW (pairs into int16; the
// largest sum, 63 * 127 * 2, fits), then VPMADDWD against the sub-block scales sums pairs into
// int32 with the scale applied, so a whole super-block accumulates in integers. The weight
// offset (Q6_K's -32, Q4_K's min) is taken out through the activation's 16-element sums
// (bsums), exactly as in the reference.
#include <immintrin.h>

#include "packed_tiles.h"
#include "types.h"

namespace ranklm::kern {

namespace {

// int16 vector: scale a in lanes 0..7, scale b in lanes 8..15 (two 16-element sub-blocks).
inline __m256i scale_pair(int a, int b) {
  return _mm256_setr_m128i(_mm_set1_epi16(static_cast<int16_t>(a)), _mm_set1_epi16(static_cast<int16_t>(b)));
}

float dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m3 = _mm256_set1_epi8(0x03);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = _cvtsh_ss(x[i].d) * y[i].d;
    const int8_t* sc = x[i].scales;
    int32_t offset = 0;  // 32 * sum_k sc_k * bsum_k
    for (int k = 0; k < 16; ++k) offset += sc[k] * y[i].bsums[k];
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      const int8_t* q8 = y[i].qs + 128 * h;
      const int8_t* s = sc + 8 * h;
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
      const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
      const __m256i qs[4] = {q0, q1, q2, q3};
      for (int j = 0; j < 4; ++j) {
        const __m256i a8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32 * j));
        const __m256i p16 = _mm256_maddubs_epi16(qs[j], a8);
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16, scale_pair(s[2 * j], s[2 * j + 1])));
      }
    }
    const __m256 fi = _mm256_cvtepi32_ps(isum);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), fi, acc);
    corr += d * static_cast<float>(32 * offset);
  }
  return hsum256(acc) - corr;
}

inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  float sum = 0.0f;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const float d = _cvtsh_ss(x[i].d) * y[i].d;
    const float dmin = _cvtsh_ss(x[i].dmin) * y[i].d;
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) scale_min_k4(j, x[i].scales, sc[j], mn[j]);
    int32_t msum = 0;
    for (int j = 0; j < 8; ++j) msum += mn[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
    __m256i isum = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * j));
      const __m256i lo = _mm256_and_si256(v, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs + 64 * j));
      const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs + 64 * j + 32));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), _mm256_set1_epi16(static_cast<int16_t>(sc[2 * j]))));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), _mm256_set1_epi16(static_cast<int16_t>(sc[2 * j + 1]))));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
    sum -= dmin * static_cast<float>(msum);
  }
  return hsum256(acc) + sum;
}

}  // namespace

VecDotFn vec_dot_avx2(GgmlType t) {
  if (t == GgmlType::Q6_K) return &dot_q6_k;
  if (t == GgmlType::Q4_K) return &dot_q4_k;
  return nullptr;
}

}  // namespace ranklm::kern
