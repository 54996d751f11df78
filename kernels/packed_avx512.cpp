// AVX-512 VNNI kernels for packed Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q2_K .. Q6_K weights (and
// F32 / F16 / BF16 with AVX-512F) (layouts in packed.h).
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
// cache-line reads in flight than the hardware prefetcher alone does on one core. K-quant
// types may set their own distance (K::kPrefetch), measured per type.
constexpr int kPrefetch = 2048;
template <class K>
constexpr int prefetch_distance() {
  if constexpr (requires { K::kPrefetch; }) {
    return K::kPrefetch;
  } else {
    return kPrefetch;
  }
}

inline __m512i load(const void* p) { return _mm512_loadu_si512(p); }
inline __m512 load_ph16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 neg(__m512 v) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN))); }

// Nibble plane (256 bytes) -> w[m]: elements 4m..4m+3, w[m + 4]: elements 16+4m..16+4m+3.
[[gnu::always_inline]] inline void unpack_nibbles(const uint8_t* p, __m512i (&w)[8]) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int m = 0; m < 4; ++m) {
    const __m512i v = load(p + 64 * m);
    w[m] = _mm512_and_si512(v, m4);
    w[m + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  }
}

// A 5-bit block: the nibbles, then bit 4 of each byte from the high plane (64 bytes after
// them; byte 4j + i, bit m for element 4m + i, bit 4 + m for element 16 + 4m + i).
[[gnu::always_inline]] inline void unpack_5bit(const uint8_t* p, __m512i (&w)[8]) {
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
  __m512i sl, sh;  // the halves' integer scales (Q2_K, Q3_K, Q6_K)
  __m512i sc;      // Q4_K, Q5_K: the block's integer scales
};

// Values 0..3 of a 2-bit plane (two vectors, packed.h): elements 4m+i (hi = false) or
// 16+4m+i (hi = true) of every row.
inline __m512i two_bits(__m512i p0, __m512i p1, int m, bool hi) {
  return _mm512_and_si512(_mm512_srli_epi16(m < 2 ? p0 : p1, 4 * (m % 2) + (hi ? 2 : 0)), _mm512_set1_epi8(3));
}

struct Q4_0G {
  static constexpr bool kMin = false, kCorr = true, kHalves = false;
  static constexpr int kBlockBytes = 288;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 288;
    unpack_nibbles(p, w);
    s.dw = load_ph16(p + 256);
  }
};

struct Q4_1G {
  static constexpr bool kMin = true, kCorr = false, kHalves = false;
  static constexpr int kBlockBytes = 320;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 320;
    unpack_nibbles(p, w);
    s.dw = load_ph16(p + 256);
    s.mw = load_ph16(p + 288);
  }
};

struct Q5_0G {
  static constexpr bool kMin = false, kCorr = true, kHalves = false;
  static constexpr int kBlockBytes = 352;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 352;
    unpack_5bit(p, w);
    s.dw = load_ph16(p + 320);
  }
};

struct Q5_1G {
  static constexpr bool kMin = true, kCorr = false, kHalves = false;
  static constexpr int kBlockBytes = 384;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 384;
    unpack_5bit(p, w);
    s.dw = load_ph16(p + 320);
    s.mw = load_ph16(p + 352);
  }
};

struct Q8_0G {
  static constexpr bool kMin = false, kCorr = true, kHalves = false;
  static constexpr int kBlockBytes = 544;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* p = g + b * 544;
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; ++k) w[k] = _mm512_xor_si512(load(p + 64 * k), bias);  // w + 128
    s.dw = load_ph16(p + 512);
  }
};

// K-quants (kUnit: bytes of a group super-block) sum a super-block in integers; its header
// holds the rows' fp16 d (and, for the types with mins, dmin after it) and super_mins gives
// the min term's integer sum (packed.h).
//
// Q4_K and Q5_K (kBits 4 or 5): the 6-bit scales and mins, unpacked in the layout.
template <int kBits>
struct QK_G {
  static constexpr bool kMin = true, kCorr = false, kHalves = false;
  static constexpr int kUnit = kBits == 5 ? 2880 : 2368, kBlock = kBits == 5 ? 352 : 288;
  static constexpr int kBlockBytes = kUnit / 8;
  static constexpr int kPrefetch = 1024;  // TinyLlama Q4_K_M decode, 2 threads: 25.5 -> 27.4 t/s
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* h = g + (b / 8) * kUnit;
    const uint8_t* p = h + 64 + kBlock * (b % 8);
    if constexpr (kBits == 5) {
      unpack_5bit(p, w);
    } else {
      unpack_nibbles(p, w);
    }
    s.sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kBlock - 32)));  // then 16 mins
  }
  // The min term of super-block sb for one token: sum over its blocks of mn_b times the block's
  // activation sum (corr), each product exact through VPMADDWD against a (min, 0) pair.
  [[gnu::always_inline]] static __m512i super_mins(const uint8_t* g, int64_t sb, const Act& a) {
    __m512i m = _mm512_setzero_si512();
    for (int64_t k = 0; k < 8; ++k) {
      const uint8_t* mn = g + sb * kUnit + 64 + kBlock * k + kBlock - 16;
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mn)));
      m = _mm512_add_epi32(m, _mm512_madd_epi16(v, _mm512_set1_epi32(a.corr[8 * sb + k])));
    }
    return m;
  }
};

// Q6_K: six-bit weights 0..63 from the nibbles and the two high-bit vectors.
struct Q6_KG {
  static constexpr bool kMin = false, kCorr = true, kHalves = true;
  static constexpr int kUnit = 3360, kBlockBytes = 420;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
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
  }
};

// Q3_K: three-bit weights 0..7 (q + 4) from the 2-bit plane and the 1-bit plane after it; the
// activation's corr and corr2 start each half at -4 sum(x).
struct Q3_KG {
  static constexpr bool kMin = false, kCorr = true, kHalves = true;
  static constexpr int kUnit = 1824, kBlockBytes = 228;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* h = g + (b / 8) * 1824;
    const uint8_t* p = h + 32 + 224 * (b % 8);
    const __m512i p0 = load(p), p1 = load(p + 64), hb = load(p + 128), b2 = _mm512_set1_epi8(4);
    for (int m = 0; m < 4; ++m) {
      const __m512i lo = m < 3 ? _mm512_slli_epi16(hb, 2 - m) : _mm512_srli_epi16(hb, 1);  // bit m -> bit 2
      w[m] = _mm512_or_si512(two_bits(p0, p1, m, false), _mm512_and_si512(lo, b2));
      w[m + 4] = _mm512_or_si512(two_bits(p0, p1, m, true), _mm512_and_si512(_mm512_srli_epi16(hb, 2 + m), b2));
    }
    s.sl = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
    s.sh = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 208)));
  }
};

// Q2_K: two-bit weights 0..3; per half a 4-bit scale and a 4-bit min (scale | min << 4).
struct Q2_KG {
  static constexpr bool kMin = true, kCorr = false, kHalves = true;
  static constexpr int kUnit = 1344, kBlockBytes = 168;
  [[gnu::always_inline]] static void unpack(const uint8_t* g, int64_t b, __m512i (&w)[8], Scales& s) {
    const uint8_t* h = g + (b / 8) * 1344;
    const uint8_t* p = h + 64 + 160 * (b % 8);
    const __m512i p0 = load(p), p1 = load(p + 64);
    for (int m = 0; m < 4; ++m) {
      w[m] = two_bits(p0, p1, m, false);
      w[m + 4] = two_bits(p0, p1, m, true);
    }
    const __m512i m4 = _mm512_set1_epi32(0x0F);
    s.sl = _mm512_and_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 128))), m4);
    s.sh = _mm512_and_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 144))), m4);
  }
  // The min term of super-block sb: per block, the halves' 4-bit mins (the bytes' high nibbles)
  // times the halves' activation sums (corr, corr2).
  [[gnu::always_inline]] static __m512i super_mins(const uint8_t* g, int64_t sb, const Act& a) {
    __m512i m = _mm512_setzero_si512();
    for (int64_t k = 0; k < 8; ++k) {
      const uint8_t* p = g + sb * kUnit + 64 + 160 * k;
      const __m512i lo = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 128))), 4);
      const __m512i hi = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 144))), 4);
      m = _mm512_add_epi32(m, _mm512_madd_epi16(lo, _mm512_set1_epi32(a.corr[8 * sb + k])));
      m = _mm512_add_epi32(m, _mm512_madd_epi16(hi, _mm512_set1_epi32(a.corr2[8 * sb + k])));
    }
    return m;
  }
};

inline __m512i bcast(const int8_t* q) { return _mm512_set1_epi32(act4(q)); }

// Legacy block types: block after block, in float.
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
      const uint8_t* p = g + b * K::kBlockBytes + prefetch_distance<K>();
      for (int o = 0; o < K::kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
    }
    __m512i w[8];
    Scales s;
    K::unpack(g, b, w, s);
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
  for (int t = 0; t < TT; ++t) {
    alignas(64) float v[kGroupRows];
    _mm512_store_ps(v, f[t]);
    out.put(t0 + t, row0, v);
  }
}

// K-quants: each super-block's scaled block products summed in int32, then its d_w d_x (and
// the min term's (-dmin) d_x) in float (packed.h).
template <class K, int TT>
void ktile(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  const int64_t nsb = cols / 256;
  Act a[TT];
  __m512 f[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    f[t] = _mm512_setzero_ps();
  }
  for (int64_t sb = 0; sb < nsb; ++sb) {
    __m512i is[TT];
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) is[t] = _mm512_setzero_si512();
    for (int64_t b = 8 * sb; b < 8 * sb + 8; ++b) {
      if (TT == 1) {
        const uint8_t* p = g + b * K::kBlockBytes + prefetch_distance<K>();
        for (int o = 0; o < K::kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
      }
      __m512i w[8];
      Scales s;
      K::unpack(g, b, w, s);
      if constexpr (K::kHalves) {
        // Each half (elements 0-15, 16-31) in its own sum, from corr / corr2 (the weights'
        // offset) where biased, times its int8 scale.
#pragma GCC unroll 8
        for (int t = 0; t < TT; ++t) {
          const int8_t* q = a[t].q + b * 32;
          __m512i lo = K::kCorr ? _mm512_set1_epi32(a[t].corr[b]) : _mm512_setzero_si512();
          __m512i hi = K::kCorr ? _mm512_set1_epi32(a[t].corr2[b]) : _mm512_setzero_si512();
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) {
            lo = _mm512_dpbusd_epi32(lo, w[k], bcast(q + 4 * k));
            hi = _mm512_dpbusd_epi32(hi, w[k + 4], bcast(q + 16 + 4 * k));
          }
          is[t] = _mm512_add_epi32(is[t], _mm512_add_epi32(_mm512_mullo_epi32(lo, s.sl), _mm512_mullo_epi32(hi, s.sh)));
        }
      } else {
        __m512i i[TT];
#pragma GCC unroll 8
        for (int t = 0; t < TT; ++t) i[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
#pragma GCC unroll 8
          for (int t = 0; t < TT; ++t) i[t] = _mm512_dpbusd_epi32(i[t], w[k], bcast(a[t].q + b * 32 + 4 * k));
        }
#pragma GCC unroll 8
        for (int t = 0; t < TT; ++t) is[t] = _mm512_add_epi32(is[t], _mm512_mullo_epi32(i[t], s.sc));
      }
    }
    const uint8_t* hd = g + sb * K::kUnit;
    const __m512 dw = load_ph16(hd);
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) {
      const __m512 dx = _mm512_set1_ps(a[t].d[8 * sb]);
      f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[t]), _mm512_mul_ps(dw, dx), f[t]);
      if constexpr (K::kMin) {
        const __m512i m = K::super_mins(g, sb, a[t]);
        f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(neg(load_ph16(hd + 32)), dx), f[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    alignas(64) float v[kGroupRows];
    _mm512_store_ps(v, f[t]);
    out.put(t0 + t, row0, v);
  }
}

template <class K, int TT>
void tile_for(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  if constexpr (requires { K::kUnit; }) {
    ktile<K, TT>(g, cols, act, t0, row0, out);
  } else {
    tile<K, TT>(g, cols, act, t0, row0, out);
  }
}

template <class K>
constexpr PackedGemmFn gemm_for = &gemm_groups<tile_for<K, 1>, tile_for<K, 2>, tile_for<K, 4>, tile_for<K, 8>>;

// Float weights (packed.h): one column of the group's 16 rows as one vector, times each token's
// value broadcast, into partial sum c % 4 (four independent chains per token even for one
// token), added (p0 + p1) + (p2 + p3) at the end.
template <GgmlType kT>
[[gnu::always_inline]] inline __m512 load_col(const uint8_t* g, int64_t c) {
  if constexpr (kT == GgmlType::F32) {
    return _mm512_loadu_ps(g + c * 64);
  } else if constexpr (kT == GgmlType::F16) {
    return load_ph16(g + c * 32);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + c * 32));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <GgmlType kT, int TT>
void float_tile(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  const float* x[TT];
  __m512 p[TT][4];
  for (int t = 0; t < TT; ++t) {
    x[t] = reinterpret_cast<const float*>(act) + (t0 + t) * cols;
    for (int u = 0; u < 4; ++u) p[t][u] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < cols; c += 4) {
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m512 w = load_col<kT>(g, c + u);
#pragma GCC unroll 4
      for (int t = 0; t < TT; ++t) p[t][u] = _mm512_fmadd_ps(w, _mm512_set1_ps(x[t][c + u]), p[t][u]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    alignas(64) float v[kGroupRows];
    _mm512_store_ps(v, _mm512_add_ps(_mm512_add_ps(p[t][0], p[t][1]), _mm512_add_ps(p[t][2], p[t][3])));
    out.put(t0 + t, row0, v);
  }
}

template <GgmlType kT>
void float_tile8(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  float_tile<kT, 4>(g, cols, act, t0, row0, out);
  float_tile<kT, 4>(g, cols, act, t0 + 4, row0, out);
}

template <GgmlType kT>
constexpr PackedGemmFn float_gemm = &gemm_groups<float_tile<kT, 1>, float_tile<kT, 2>, float_tile<kT, 4>, float_tile8<kT>>;

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
  if (t == GgmlType::Q2_K) return gemm_for<Q2_KG>;
  if (t == GgmlType::Q3_K) return gemm_for<Q3_KG>;
  if (t == GgmlType::F32) return float_gemm<GgmlType::F32>;
  if (t == GgmlType::F16) return float_gemm<GgmlType::F16>;
  if (t == GgmlType::BF16) return float_gemm<GgmlType::BF16>;
  return nullptr;
}

}  // namespace ranklm::kern
