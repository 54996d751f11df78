// AVX2 dot products of Q4_K / Q6_K weight rows with Q8_K activations (and of Q4_1 rows, the
// default model's type, with Q8_1 activations), on the GGUF layout
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

#include <cstring>

#include "packed_tiles.h"
#include "types.h"

namespace ranklm::kern {

namespace {

// Decode streams each weight row once: keep more cache-line reads in flight than the hardware
// prefetcher alone does on one core (one prefetch per line of the block, 2 KiB ahead).
inline void prefetch_ahead(const void* block, size_t bytes) {
  const char* p = static_cast<const char*>(block) + 2048;
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

// Byte-shuffle patterns that broadcast int16 element e of a 128-bit lane to a whole lane.
inline __m256i bcast16(int e) {
  const int lo = 2 * e, hi = 2 * e + 1;
  return _mm256_set1_epi16(static_cast<int16_t>(lo | (hi << 8)));
}

// T activation rows against one Q6_K row: each super-block's weights are unpacked once and
// used by all T rows (T = 1 for decode, 4 for batches).
template <int T>
void q6_k_rows(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* y[T];
  for (int t = 0; t < T; ++t) y[t] = static_cast<const BlockQ8_K*>(a[t]);
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m3 = _mm256_set1_epi8(0x03);
  __m256 acc[T], corr[T];
  for (int t = 0; t < T; ++t) acc[t] = corr[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    if (T == 1) prefetch_ahead(x + i, sizeof(BlockQ6_K));
    const float dw = _cvtsh_ss(x[i].d);
    // 16 sub-block scales as int16; the -32 offset through the 16-element activation sums.
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
    __m256i isum[T];
    for (int t = 0; t < T; ++t) {
      const __m256i bs16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums));
      corr[t] = _mm256_fmadd_ps(_mm256_set1_ps(32.0f * dw * y[t][i].d), _mm256_cvtepi32_ps(_mm256_madd_epi16(sc16, bs16)), corr[t]);
      isum[t] = _mm256_setzero_si256();
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      // Scales 8h..8h+7 in both 128-bit lanes; pair j uses scale 2j (low lane) and 2j+1 (high).
      const __m256i sch = h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
      const __m256i qs[4] = {
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)),
          _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4))};
      for (int j = 0; j < 4; ++j) {
        const __m256i scj = _mm256_blend_epi32(_mm256_shuffle_epi8(sch, bcast16(2 * j)),
                                               _mm256_shuffle_epi8(sch, bcast16(2 * j + 1)), 0xF0);
        for (int t = 0; t < T; ++t) {
          const __m256i a8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs + 128 * h + 32 * j));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(qs[j], a8), scj));
        }
      }
    }
    for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[t][i].d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
  }
  for (int t = 0; t < T; ++t) out[t] = hsum256(_mm256_sub_ps(acc[t], corr[t]));
}

// The 8 six-bit scales and 8 six-bit mins of a Q4_K super-block (12 bytes q, see
// unpack_q4_k in types.cpp): bytes 0..7 of the result are the scales, 8..15 the mins.
//   j < 4:  sc = q[j] & 63,                          m = q[j + 4] & 63
//   j >= 4: sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4, m = (q[j + 4] >> 4) | (q[j] >> 6) << 4
inline __m128i q4_k_scales_mins(const uint8_t* q) {
  uint32_t w[3];
  __builtin_memcpy(w, q, 12);
  const uint32_t k6 = 0x3F3F3F3Fu, k4 = 0x0F0F0F0Fu, k2 = 0x03030303u;
  const uint32_t sc_lo = w[0] & k6;
  const uint32_t sc_hi = (w[2] & k4) | (((w[0] >> 6) & k2) << 4);
  const uint32_t m_lo = w[1] & k6;
  const uint32_t m_hi = ((w[2] >> 4) & k4) | (((w[1] >> 6) & k2) << 4);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo), static_cast<int>(m_hi));
}

template <int T>
void q4_k_rows(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const BlockQ8_K* y[T];
  for (int t = 0; t < T; ++t) y[t] = static_cast<const BlockQ8_K*>(a[t]);
  const int64_t nb = n / QK_K;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  __m128 accm[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    accm[t] = _mm_setzero_ps();
  }
  for (int64_t i = 0; i < nb; ++i) {
    if (T == 1) prefetch_ahead(x + i, sizeof(BlockQ4_K));
    const float dw = _cvtsh_ss(x[i].d);
    const float mw = _cvtsh_ss(x[i].dmin);
    const __m128i sm = q4_k_scales_mins(x[i].scales);
    // Mins times the 32-element activation sums (pairs of the 16-element bsums).
    const __m128i mins16 = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
    // Scales as int16, the same 8 in both 128-bit lanes.
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    __m256i isum[T];
    for (int t = 0; t < T; ++t) {
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums));
      const __m128i bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
      accm[t] = _mm_fmadd_ps(_mm_set1_ps(mw * y[t][i].d), _mm_cvtepi32_ps(_mm_madd_epi16(mins16, bs32)), accm[t]);
      isum[t] = _mm256_setzero_si256();
    }
    for (int j = 0; j < 4; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * j));
      const __m256i lo = _mm256_and_si256(v, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      const __m256i s_lo = _mm256_shuffle_epi8(sc16, bcast16(2 * j));
      const __m256i s_hi = _mm256_shuffle_epi8(sc16, bcast16(2 * j + 1));
      for (int t = 0; t < T; ++t) {
        const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs + 64 * j));
        const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs + 64 * j + 32));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s_lo));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s_hi));
      }
    }
    for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[t][i].d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
  }
  for (int t = 0; t < T; ++t) {
    __m128 m = _mm_add_ps(accm[t], _mm_movehl_ps(accm[t], accm[t]));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    out[t] = hsum256(acc[t]) - _mm_cvtss_f32(m);
  }
}

// T activation rows (Q8_1) against one Q4_1 row: x = d q + m per 32-element block, so
// sum(x a) = d d_a sum(q a_q) + m s, with s = d_a sum(a_q) as Q8_1 stores it (the reference's
// formula). Nibbles 0..15 are unsigned: VPMADDUBSW then VPMADDWD give the integer dot.
template <int T>
void q4_1_rows(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const BlockQ4_1*>(w);
  const BlockQ8_1* y[T];
  for (int t = 0; t < T; ++t) y[t] = static_cast<const BlockQ8_1*>(a[t]);
  const int64_t nb = n / QK;
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  // Two accumulators per row (even and odd blocks) halve the FMA dependency chain; the
  // min terms m * s collect in the low lanes of a third vector.
  __m256 acc[T][2];
  __m128 mins[T];
  for (int t = 0; t < T; ++t) {
    acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    mins[t] = _mm_setzero_ps();
  }
  for (int64_t i = 0; i < nb; ++i) {
    if (T == 1 && (i & 3) == 0) prefetch_ahead(x + i, 4 * sizeof(BlockQ4_1));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qs));
    const __m256i wq = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
    // d and m of the weights, d and s of the activations: 4 fp16 values, converted at once.
    uint32_t dm;
    std::memcpy(&dm, &x[i].d, 4);
    const __m128 wdm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm)));  // {d, m, 0, 0}
    for (int t = 0; t < T; ++t) {
      uint32_t ds;
      std::memcpy(&ds, &y[t][i].d, 4);
      const __m128 ads = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(ds)));  // {d_a, s, 0, 0}
      const __m256i aq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs));
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, aq), ones);
      const __m128 prod = _mm_mul_ps(wdm, ads);  // {d d_a, m s, ...}
      acc[t][i & 1] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(p), acc[t][i & 1]);
      mins[t] = _mm_add_ps(mins[t], prod);
    }
  }
  for (int t = 0; t < T; ++t) {
    out[t] = hsum256(_mm256_add_ps(acc[t][0], acc[t][1])) + _mm_cvtss_f32(_mm_shuffle_ps(mins[t], mins[t], 1));
  }
}

float dot_q4_1(int64_t n, const void* w, const void* a) {
  float r;
  q4_1_rows<1>(n, w, &a, &r);
  return r;
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  float r;
  q4_k_rows<1>(n, w, &a, &r);
  return r;
}

float dot_q6_k(int64_t n, const void* w, const void* a) {
  float r;
  q6_k_rows<1>(n, w, &a, &r);
  return r;
}

}  // namespace

VecDot4Fn vec_dot4_avx2(GgmlType t) {
  if (t == GgmlType::Q4_1) return &q4_1_rows<4>;
  if (t == GgmlType::Q6_K) return &q6_k_rows<4>;
  if (t == GgmlType::Q4_K) return &q4_k_rows<4>;
  return nullptr;
}

VecDotFn vec_dot_avx2(GgmlType t) {
  if (t == GgmlType::Q4_1) return &dot_q4_1;
  if (t == GgmlType::Q6_K) return &dot_q6_k;
  if (t == GgmlType::Q4_K) return &dot_q4_k;
  return nullptr;
}

}  // namespace ranklm::kern
