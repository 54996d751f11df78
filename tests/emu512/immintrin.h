// <immintrin.h> for tests/avx512_emulated.cpp only: the compiler's own header (AVX2, FMA and
// F16C run natively), then SIMDe's portable AVX-512 under the native names, so
// kernels/packed_avx512.cpp compiles and runs, lane by lane, on a CPU without AVX-512. SIMDe 0.7
// lacks a few intrinsics that file uses, and its _mm512_madd_epi16 alias takes the wrong number
// of arguments; those are defined here, lane by lane as Intel's guide defines them.
#pragma once
#include_next <immintrin.h>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>

#include <cstdint>

namespace ranklm_emu {

inline simde__m512i cvtepu8_epi32(simde__m128i a) {
  simde__m512i_private r;
  const simde__m128i_private p = simde__m128i_to_private(a);
  for (int i = 0; i < 16; ++i) r.i32[i] = p.u8[i];
  return simde__m512i_from_private(r);
}

inline simde__m512i cvtepi8_epi32(simde__m128i a) {
  simde__m512i_private r;
  const simde__m128i_private p = simde__m128i_to_private(a);
  for (int i = 0; i < 16; ++i) r.i32[i] = p.i8[i];
  return simde__m512i_from_private(r);
}

inline simde__m512i cvtepu16_epi32(simde__m256i a) {
  simde__m512i_private r;
  const simde__m256i_private p = simde__m256i_to_private(a);
  for (int i = 0; i < 16; ++i) r.i32[i] = p.u16[i];
  return simde__m512i_from_private(r);
}

inline simde__m512 cvtepi32_ps(simde__m512i a) {
  simde__m512_private r;
  const simde__m512i_private p = simde__m512i_to_private(a);
  for (int i = 0; i < 16; ++i) r.f32[i] = static_cast<float>(p.i32[i]);
  return simde__m512_from_private(r);
}

inline simde__m512 cvtph_ps(simde__m256i a) {
  simde__m512_private r;
  r.m256[0] = simde_mm256_cvtph_ps(simde_mm256_extracti128_si256(a, 0));
  r.m256[1] = simde_mm256_cvtph_ps(simde_mm256_extracti128_si256(a, 1));
  return simde__m512_from_private(r);
}

inline simde__m512i madd_epi16(simde__m512i a, simde__m512i b) {
  simde__m512i_private r;
  const simde__m512i_private pa = simde__m512i_to_private(a), pb = simde__m512i_to_private(b);
  for (int i = 0; i < 16; ++i) {
    r.i32[i] = int32_t{pa.i16[2 * i]} * pb.i16[2 * i] + int32_t{pa.i16[2 * i + 1]} * pb.i16[2 * i + 1];
  }
  return simde__m512i_from_private(r);
}

}  // namespace ranklm_emu

#define _mm512_cvtepu8_epi32 ranklm_emu::cvtepu8_epi32
#define _mm512_cvtepi8_epi32 ranklm_emu::cvtepi8_epi32
#define _mm512_cvtepu16_epi32 ranklm_emu::cvtepu16_epi32
#define _mm512_cvtepi32_ps ranklm_emu::cvtepi32_ps
#define _mm512_cvtph_ps ranklm_emu::cvtph_ps
#undef _mm512_madd_epi16
#define _mm512_madd_epi16 ranklm_emu::madd_epi16
