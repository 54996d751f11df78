// AVX2 + FMA + F16C attention over the fp16 KV cache: the same single-pass online softmax as
// the portable kernel in ops.cpp (Q rounded to fp16, running output rounded to fp16 after
// every update, rescaled when a new maximum appears), with the per-key dot product and the
// output update done 8 lanes at a time. Only the summation order of the dot product differs.
//
// Compiled with -mavx2 -mfma -mf16c and called only when the CPU has them; it includes no
// standard-library headers with inline functions (see packed_tiles.h for why).
#include <immintrin.h>

#include <math.h>

#include "attention_simd.h"

namespace ranklm::kern {

namespace {

inline __m256 round_fp16(__m256 x) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

inline __m256 load_ph(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

void attention_jobs_avx2(const AttentionArgs& a, int64_t job0, int64_t job1) {
  const int hd = a.head_dim;
  const int group = a.n_head / a.n_head_kv;
  const int64_t kv_stride = static_cast<int64_t>(a.n_head_kv) * hd;
  const int64_t q_stride = static_cast<int64_t>(a.n_head) * hd;
  alignas(32) float qh[kMaxSimdHeadDim];
  alignas(32) float acc[kMaxSimdHeadDim];
  for (int64_t job = job0; job < job1; ++job) {
    const int64_t t = job / a.n_head;
    const int h = static_cast<int>(job % a.n_head);
    const int64_t kv_off = static_cast<int64_t>(h / group) * hd;
    const int64_t n_keys = a.pos0 + t + 1;  // causal: keys 0 .. pos0 + t
    const float* qp = a.q + t * q_stride + static_cast<int64_t>(h) * hd;
    for (int d = 0; d < hd; d += 8) {
      _mm256_store_ps(qh + d, round_fp16(_mm256_loadu_ps(qp + d)));
      _mm256_store_ps(acc + d, _mm256_setzero_ps());
    }
    float m = -INFINITY;
    float sum = 0.0f;
    for (int64_t j = 0; j < n_keys; ++j) {
      const uint16_t* kp = a.k + j * kv_stride + kv_off;
      const uint16_t* vp = a.v + j * kv_stride + kv_off;
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
      int d = 0;
      for (; d + 16 <= hd; d += 16) {
        s0 = _mm256_fmadd_ps(_mm256_load_ps(qh + d), load_ph(kp + d), s0);
        s1 = _mm256_fmadd_ps(_mm256_load_ps(qh + d + 8), load_ph(kp + d + 8), s1);
      }
      if (d < hd) s0 = _mm256_fmadd_ps(_mm256_load_ps(qh + d), load_ph(kp + d), s0);
      const float s = hsum(_mm256_add_ps(s0, s1)) * a.scale;
      float ms = 1.0f, vs = 1.0f;
      if (s > m) {
        ms = expf(m - s);
        m = s;
        const __m256 msv = _mm256_set1_ps(ms);
        for (d = 0; d < hd; d += 8) {
          _mm256_store_ps(acc + d, round_fp16(_mm256_mul_ps(_mm256_load_ps(acc + d), msv)));
        }
      } else {
        vs = expf(s - m);
      }
      const __m256 vsv = _mm256_set1_ps(vs);
      for (d = 0; d < hd; d += 8) {
        _mm256_store_ps(acc + d, round_fp16(_mm256_fmadd_ps(load_ph(vp + d), vsv, _mm256_load_ps(acc + d))));
      }
      sum = sum * ms + vs;
    }
    float* o = a.out + t * q_stride + static_cast<int64_t>(h) * hd;
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_load_ps(acc + d), inv));
  }
}

}  // namespace ranklm::kern
