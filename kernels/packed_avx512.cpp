// AVX-512 VNNI kernels for packed Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K / Q6_K weights (layouts in packed.h).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma -mf16c and called only when
// the CPU has them. It calls no inline functions from ordinary shared headers (the linker could
// keep this file's AVX-512 copy for the whole program); packed_tiles.h is built for that
// (internal linkage).
//
// A tile is one group of 16 rows and up to 8 tokens. Per block of 32 columns, the group's
// weights are loaded and unpacked once into eight vectors (vector k, lane j: elements 4k..4k+3
// of row j, as unsigned bytes); each token then runs eight VPDPBUSD, each with 4 of its
// activation bytes broadcast to all lanes, into one accumulator started from its block's
// `corr` (which makes biased weights signed). The accumulator ends with the 16 rows' exact
// integer dot products, converted and scaled by d_w * d_x with one multiply and one fused
// multiply-add; the token's 16 results are stored as one vector at the end of the row.
#include <immintrin.h>

#include "packed.h"
#include "packed_tiles.h"

namespace ranklm::kern {

namespace {

// Decode (one token) streams each weight once; prefetching this far ahead keeps more
// cache-line reads in flight than the hardware prefetcher alone does on one core.
constexpr int kPrefetch = 2048;

inline __m512i load(const void* p) { return _mm512_loadu_si512(p); }
inline __m512 load_ph16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 load_u8_ps(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 neg(__m512 v) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN))); }

// Nibble plane (256 bytes) -> w[m]: elements 4m..4m+3, w[m + 4]: elements 16+4m..16+4m+3.
inline void unpack_nibbles(const uint8_t* p, __m512i (&w)[8]) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int m = 0; m < 4; ++m) {
    const __m512i v = load(p + 64 * m);
    w[m] = _mm512_and_si512(v, m4);
    w[m + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  }
}

// A 5-bit block: the nibbles, then bit 4 of each byte from the high plane (64 bytes after
// them; byte 4j + i, bit m for element 4m + i, bit 4 + m for element 16 + 4m + i).
inline void unpack_5bit(const uint8_t* p, __m512i (&w)[8]) {
  unpack_nibbles(p, w);
  const __m512i h = load(p + 256), b4 = _mm512_set1_epi8(0x10);
  for (int m = 0; m < 4; ++m) {
    w[m] = _mm512_or_si512(w[m], _mm512_and_si512(_mm512_slli_epi16(h, 4 - m), b4));
    w[m + 4] = _mm512_or_si512(w[m + 4], _mm512_and_si512(_mm512_srli_epi16(h, m), b4));
  }
}

// Each type's block b of a group: the eight weight vectors, d_w (and m_w where kMin), and for
// Q6_K the halves' int8 scales. kCorr: the weights are biased (start from corr).
struct Scales {
  __m512 dw, mw;
  __m512i sl, sh;
};

struct Q4_0G {
  static constexpr bool kMin = false, kCorr = true, kQ6 = false;
  static constexpr int kBlockBytes = 288;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 288;
    unpack_nibbles(p, w);
    s.dw = load_ph16(p + 256);
  }
};

struct Q4_1G {
  static constexpr bool kMin = true, kCorr = false, kQ6 = false;
  static constexpr int kBlockBytes = 320;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 320;
    unpack_nibbles(p, w);
    s.dw = load_ph16(p + 256);
    s.mw = load_ph16(p + 288);
  }
};

struct Q5_0G {
  static constexpr bool kMin = false, kCorr = true, kQ6 = false;
  static constexpr int kBlockBytes = 352;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 352;
    unpack_5bit(p, w);
    s.dw = load_ph16(p + 320);
  }
};

struct Q5_1G {
  static constexpr bool kMin = true, kCorr = false, kQ6 = false;
  static constexpr int kBlockBytes = 384;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 384;
    unpack_5bit(p, w);
    s.dw = load_ph16(p + 320);
    s.mw = load_ph16(p + 352);
  }
};

struct Q8_0G {
  static constexpr bool kMin = false, kCorr = true, kQ6 = false;
  static constexpr int kBlockBytes = 544;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 544;
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; ++k) w[k] = _mm512_xor_si512(load(p + 64 * k), bias);  // w + 128
    s.dw = load_ph16(p + 512);
  }
};

// Q4_K and Q5_K (kBits 4 or 5): d sc and -(dmin mn) per row from the unpacked 6-bit values and
// the rows' fp16 d, dmin.
template <int kBits>
struct QK_G {
  static constexpr bool kMin = true, kCorr = false, kQ6 = false;
  static constexpr int kUnit = kBits == 5 ? 2880 : 2368, kBlock = kBits == 5 ? 352 : 288;
  static constexpr int kBlockBytes = kUnit / 8;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* h = g + (b / 8) * kUnit;
    const uint8_t* p = h + 64 + kBlock * (b % 8);
    if constexpr (kBits == 5) {
      unpack_5bit(p, w);
    } else {
      unpack_nibbles(p, w);
    }
    const uint8_t* sc = p + kBlock - 32;  // 16 scales, then 16 mins
    s.dw = _mm512_mul_ps(load_ph16(h), load_u8_ps(sc));
    s.mw = neg(_mm512_mul_ps(load_ph16(h + 32), load_u8_ps(sc + 16)));
  }
};

// Q6_K: six-bit weights 0..63 from the nibbles and the two high-bit vectors.
struct Q6_KG {
  static constexpr bool kMin = false, kCorr = true, kQ6 = true;
  static constexpr int kBlockBytes = 420;
  static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* h = g + (b / 8) * 3360;
    const uint8_t* p = h + 32 + 416 * (b % 8);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i h0 = load(p + 256), h1 = load(p + 320);
    for (int m = 0; m < 4; ++m) {
      const __m512i v = load(p + 64 * m);
      const __m512i hb = m < 2 ? h0 : h1;
      const __m512i hl = m % 2 == 0 ? _mm512_slli_epi16(hb, 4) : hb;                       // bits 0-1 (4-5) -> 4-5
      const __m512i hh = m % 2 == 0 ? _mm512_slli_epi16(hb, 2) : _mm512_srli_epi16(hb, 2);  // bits 2-3 (6-7) -> 4-5
      w[m] = _mm512_or_si512(_mm512_and_si512(v, m4), _mm512_and_si512(hl, m30));
      w[m + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), _mm512_and_si512(hh, m30));
    }
    s.sl = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 384)));
    s.sh = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 400)));
    s.dw = load_ph16(h);
  }
};

inline __m512i bcast(const int8_t* q) { return _mm512_set1_epi32(act4(q)); }

template <class K, int TT>
void tile(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  const int64_t nb = cols / 32;
  Act a[TT];
  __m512 f[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    f[t] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    if (TT == 1) {
      const uint8_t* p = g + b * K::kBlockBytes + kPrefetch;
      for (int o = 0; o < K::kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
    }
    __m512i w[8];
    Scales s;
    K::unpack(g, b, w, s);
    if constexpr (K::kQ6) {
      // Each half (elements 0-15, 16-31) in its own sum from corr / corr2 (-32 sum(x): the
      // weights' offset), times its int8 scale in int32 (exact), then d_w d_x.
#pragma GCC unroll 8
      for (int t = 0; t < TT; ++t) {
        const int8_t* q = a[t].q + b * 32;
        __m512i lo = _mm512_set1_epi32(a[t].corr[b]), hi = _mm512_set1_epi32(a[t].corr2[b]);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          lo = _mm512_dpbusd_epi32(lo, w[k], bcast(q + 4 * k));
          hi = _mm512_dpbusd_epi32(hi, w[k + 4], bcast(q + 16 + 4 * k));
        }
        const __m512i i = _mm512_add_epi32(_mm512_mullo_epi32(lo, s.sl), _mm512_mullo_epi32(hi, s.sh));
        f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(s.dw, _mm512_set1_ps(a[t].d[b])), f[t]);
      }
    } else {
      __m512i i[TT];
#pragma GCC unroll 8
      for (int t = 0; t < TT; ++t) i[t] = K::kCorr ? _mm512_set1_epi32(a[t].corr[b]) : _mm512_setzero_si512();
      // k outside t: the TT accumulator chains are independent and interleave.
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
#pragma GCC unroll 8
        for (int t = 0; t < TT; ++t) i[t] = _mm512_dpbusd_epi32(i[t], w[k], bcast(a[t].q + b * 32 + 4 * k));
      }
#pragma GCC unroll 8
      for (int t = 0; t < TT; ++t) {
        f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i[t]), _mm512_mul_ps(s.dw, _mm512_set1_ps(a[t].d[b])), f[t]);
        if constexpr (K::kMin) f[t] = _mm512_fmadd_ps(s.mw, _mm512_set1_ps(a[t].s[b]), f[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    alignas(64) float v[kGroupRows];
    _mm512_store_ps(v, f[t]);
    out.put(t0 + t, row0, v);
  }
}

template <class K>
constexpr PackedGemmFn gemm_for = &gemm_groups<tile<K, 1>, tile<K, 2>, tile<K, 4>, tile<K, 8>>;

}  // namespace

PackedGemmFn packed_gemm_avx512(GgmlType t) {
  if (t == GgmlType::Q4_0) return gemm_for<Q4_0G>;
  if (t == GgmlType::Q4_1) return gemm_for<Q4_1G>;
  if (t == GgmlType::Q4_K) return gemm_for<QK_G<4>>;
  if (t == GgmlType::Q6_K) return gemm_for<Q6_KG>;
  if (t == GgmlType::Q8_0) return gemm_for<Q8_0G>;
  if (t == GgmlType::Q5_0) return gemm_for<Q5_0G>;
  if (t == GgmlType::Q5_1) return gemm_for<Q5_1G>;
  if (t == GgmlType::Q5_K) return gemm_for<QK_G<5>>;
  return nullptr;
}

}  // namespace ranklm::kern
