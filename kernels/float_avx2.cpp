// AVX2 + FMA + F16C dot products of F16 and BF16 weight rows with activations of the same type
// (GGUF layout). Each product of two halves (or two bfloat16s) is exact in float, so these
// differ from the portable vec_dot_float only in summation order (32 partial sums here).
// BF16 widens by a 16-bit shift; VDPBF16PS is not used because it flushes denormals and
// rounds differently, and decode of a 16-bit model is bound by memory, not by this loop.
//
// Compiled with -mavx2 -mfma -mf16c and called only when the CPU has them.
#include <immintrin.h>

#include <cstdint>

#include "types.h"

namespace ranklm::kern {

namespace {

inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256 load_bf16x8(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <__m256 (*Load)(const uint16_t*), float (*One)(uint16_t)>
float dot16(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const uint16_t*>(w);
  const auto* y = static_cast<const uint16_t*>(a);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) acc[k] = _mm256_fmadd_ps(Load(x + i + 8 * k), Load(y + i + 8 * k), acc[k]);
  }
  for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(Load(x + i), Load(y + i), acc[0]);
  float tail = 0.0f;
  for (; i < n; ++i) tail += One(x[i]) * One(y[i]);
  return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail;
}

inline float one_f16(uint16_t h) { return _cvtsh_ss(h); }
inline float one_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace

void widen_row_avx2(GgmlType t, const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (t == GgmlType::F16) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16x8(x + i));
    for (; i < n; ++i) dst[i] = one_f16(x[i]);
  } else {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16x8(x + i));
    for (; i < n; ++i) dst[i] = one_bf16(x[i]);
  }
}

VecDotFn vec_dot_float_avx2(GgmlType t) {
  if (t == GgmlType::F16) return &dot16<load_f16x8, one_f16>;
  if (t == GgmlType::BF16) return &dot16<load_bf16x8, one_bf16>;
  return nullptr;
}

}  // namespace ranklm::kern
