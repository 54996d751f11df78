// AVX-512 VNNI kernels for packed Q4_0 / Q8_0 weights (layouts in packed.h). Compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma -mf16c and called only when the CPU has
// them. It calls no inline functions from ordinary shared headers (the linker could keep this
// file's AVX-512 copy for the whole program); packed_tiles.h is built for that (internal linkage).
//
// One call covers rows [r0, r1) for all tokens. Tokens go in tiles of up to 8: a group of four
// weight blocks (128 elements) is loaded and unpacked once per tile, then each token of the
// tile does two VPDPBUSD (started from its `corr` lanes, which makes the biased unsigned
// weights signed), two conversions and two fused multiply-adds with the per-lane scales.
#include <immintrin.h>

#include "packed.h"
#include "packed_tiles.h"

namespace ranklm::kern {

namespace {

// Decode streams weights once; prefetching this far ahead keeps more cache-line reads in flight
// than the hardware prefetcher alone does on one core.
constexpr int kPrefetch = 1024;

template <int TT>
void q4_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, ng = nb / 4;
  const uint16_t* dw = reinterpret_cast<const uint16_t*>(wr + nb * 16);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i idx_lo = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i idx_hi = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  Act a[TT];
  __m512 acc[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < ng; ++g) {
    if (TT == 1) _mm_prefetch(reinterpret_cast<const char*>(wr + g * 64 + kPrefetch), _MM_HINT_T0);
    const __m512i v = _mm512_loadu_si512(wr + g * 64);
    const __m512i lo = _mm512_and_si512(v, m4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    const __m128 d4 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(dw + 4 * g)));
    const __m512 d16 = _mm512_zextps128_ps512(d4);
    const __m512 dlo = _mm512_permutexvar_ps(idx_lo, d16);
    const __m512 dhi = _mm512_permutexvar_ps(idx_hi, d16);
    for (int t = 0; t < TT; ++t) {
      const int8_t* q = a[t].q + g * 128;
      const int32_t* c = a[t].corr + g * 32;
      const float* s = a[t].dl + g * 32;
      const __m512i il = _mm512_dpbusd_epi32(_mm512_loadu_si512(c), lo, _mm512_loadu_si512(q));
      const __m512i ih = _mm512_dpbusd_epi32(_mm512_loadu_si512(c + 16), hi, _mm512_loadu_si512(q + 64));
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(il), _mm512_loadu_ps(s)), dlo, acc[t]);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(ih), _mm512_loadu_ps(s + 16)), dhi, acc[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = _mm512_reduce_add_ps(acc[t]);
    if (nb > 4 * ng) s += q4_0_tail(wr + ng * 64, dw, 4 * ng, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

template <int TT>
void q8_0_tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y,
               int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, ng = nb / 2;  // two blocks (64 elements) per vector
  const auto* wq = reinterpret_cast<const int8_t*>(wr);
  const uint16_t* dw = reinterpret_cast<const uint16_t*>(wr + nb * 32);
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  Act a[TT];
  __m512 acc[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc[t] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < ng; ++g) {
    const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(wq + g * 64), bias);  // w + 128
    const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(dw + 2 * g));  // two fp16 scales
    const __m512 ds = _mm512_permutexvar_ps(idx, _mm512_zextps128_ps512(dd));
    for (int t = 0; t < TT; ++t) {
      const __m512i i32 = _mm512_dpbusd_epi32(_mm512_loadu_si512(a[t].corr + g * 16), v,
                                              _mm512_loadu_si512(a[t].q + g * 64));
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i32), _mm512_loadu_ps(a[t].dl + g * 16)),
                               ds, acc[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = _mm512_reduce_add_ps(acc[t]);
    for (int64_t b = 2 * ng; b < nb; ++b) {
      int32_t dot = 0;
      for (int i = 0; i < 32; ++i) dot += wq[b * 32 + i] * a[t].q[b * 32 + i];
      s += _cvtsh_ss(dw[b]) * a[t].dl[b * 8] * static_cast<float>(dot);
    }
    y[(t0 + t) * ldy + r] = s;
  }
}

}  // namespace

PackedGemmFn packed_gemm_avx512(GgmlType t) {
  if (t == GgmlType::Q4_0) return &gemm_tiles<q4_0_tile<1>, q4_0_tile<2>, q4_0_tile<4>, q4_0_tile<8>>;
  if (t == GgmlType::Q8_0) return &gemm_tiles<q8_0_tile<1>, q8_0_tile<2>, q8_0_tile<4>, q8_0_tile<8>>;
  return nullptr;
}

}  // namespace ranklm::kern
