// AVX2 kernels for packed Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q2_K .. Q6_K weights (layouts in packed.h). Compiled
// with -mavx2 -mfma -mf16c and called only when the CPU has them. Like packed_avx512.cpp, this
// file calls no inline functions from ordinary shared headers (packed_tiles.h has internal
// linkage).
//
// A group's 16 rows go as two halves of 8 (an 8-lane vector each). Without VNNI, products of
// unsigned and signed bytes go through VPMADDUBSW (pairs into int16) and VPMADDWD (pairs into
// int32), with 4 activation bytes broadcast to every lane: 4-bit weights (0..15) are small
// enough for a block's eight pair sums to stay in int16; 5-bit ones (0..31) sum four at a
// time, Q6_K (0..63) two (and so Q2_K and Q3_K); Q8_0
// uses |w| and the activation with w's sign moved onto it. The integer block products and the
// float steps are those of the AVX-512 kernels and the scalar twin, so the bits are the same.
#include <immintrin.h>

#include "packed.h"
#include "packed_tiles.h"

namespace ranklm::kern {

namespace {

inline __m256i load(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256 load_ph8(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256i bcast(const int8_t* q) { return _mm256_set1_epi32(act4(q)); }
inline __m256i madd1(__m256i s16) { return _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); }

// Nibble plane, rows 8h..8h+7 -> w[m]: elements 4m..4m+3, w[m + 4]: elements 16+4m..16+4m+3.
[[gnu::always_inline]] inline void unpack_nibbles(const uint8_t* p, int h, __m256i (&w)[8]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int m = 0; m < 4; ++m) {
    const __m256i v = load(p + 64 * m + 32 * h);
    w[m] = _mm256_and_si256(v, m4);
    w[m + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
  }
}

// The same for a 5-bit block (high plane 256 bytes after the nibbles; see packed_avx512.cpp).
[[gnu::always_inline]] inline void unpack_5bit(const uint8_t* p, int h, __m256i (&w)[8]) {
  unpack_nibbles(p, h, w);
  const __m256i hb = load(p + 256 + 32 * h), b4 = _mm256_set1_epi8(0x10);
  for (int m = 0; m < 4; ++m) {
    w[m] = _mm256_or_si256(w[m], _mm256_and_si256(_mm256_slli_epi16(hb, 4 - m), b4));
    w[m + 4] = _mm256_or_si256(w[m + 4], _mm256_and_si256(_mm256_srli_epi16(hb, m), b4));
  }
}

struct Scales {
  __m256 dw, mw;
  __m256i sl, sh;  // the halves' integer scales (Q2_K, Q3_K, Q6_K)
  __m256i ml, mh;  // Q2_K: the halves' integer mins
  __m256i sc2;     // Q4_K, Q5_K: each row's scale twice (an int16 pair per lane)
  __m256i mn;      // Q4_K, Q5_K: each row's min
  __m256 mnf;      // the same as floats
};

// Values 0..3 of a 2-bit plane, rows 8h..8h+7 (p0, p1 its two vectors' halves).
inline __m256i two_bits(__m256i p0, __m256i p1, int m, bool hi) {
  return _mm256_and_si256(_mm256_srli_epi16(m < 2 ? p0 : p1, 4 * (m % 2) + (hi ? 2 : 0)), _mm256_set1_epi8(3));
}
inline __m256i load_i8_epi32(const uint8_t* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
inline __m256i load_u8_epi32(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }

// Each type's block b, half h of a group (as in packed_avx512.cpp; Q8_0 keeps signed weights).
enum class Kind { kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K };
constexpr bool halves(Kind k) { return k == Kind::kQ2_K || k == Kind::kQ3_K || k == Kind::kQ6_K; }
constexpr bool has_min(Kind k) { return k == Kind::kQ4_1 || k == Kind::kQ5_1; }
constexpr bool k_quant(Kind k) { return halves(k) || k == Kind::kQ4_K || k == Kind::kQ5_K; }
constexpr bool k_mins(Kind k) { return k == Kind::kQ2_K || k == Kind::kQ4_K || k == Kind::kQ5_K; }
constexpr bool five_bit(Kind k) { return k == Kind::kQ5_0 || k == Kind::kQ5_1 || k == Kind::kQ5_K; }

template <Kind K>
[[gnu::always_inline]] inline void unpack(const uint8_t* g, int64_t b, int h, __m256i (&w)[8], Scales& s) {
  if constexpr (K == Kind::kQ4_0 || K == Kind::kQ4_1) {
    const uint8_t* p = g + b * (K == Kind::kQ4_0 ? 288 : 320);
    unpack_nibbles(p, h, w);
    s.dw = load_ph8(p + 256 + 16 * h);
    if constexpr (K == Kind::kQ4_1) s.mw = load_ph8(p + 288 + 16 * h);
  } else if constexpr (K == Kind::kQ5_0 || K == Kind::kQ5_1) {
    const uint8_t* p = g + b * (K == Kind::kQ5_0 ? 352 : 384);
    unpack_5bit(p, h, w);
    s.dw = load_ph8(p + 320 + 16 * h);
    if constexpr (K == Kind::kQ5_1) s.mw = load_ph8(p + 352 + 16 * h);
  } else if constexpr (K == Kind::kQ3_K) {
    const uint8_t* hd = g + (b / 8) * 1824;
    const uint8_t* p = hd + 32 + 224 * (b % 8);
    const __m256i p0 = load(p + 32 * h), p1 = load(p + 64 + 32 * h), hb = load(p + 128 + 32 * h), b2 = _mm256_set1_epi8(4);
    for (int m = 0; m < 4; ++m) {
      const __m256i lo = m < 3 ? _mm256_slli_epi16(hb, 2 - m) : _mm256_srli_epi16(hb, 1);  // bit m -> bit 2
      w[m] = _mm256_or_si256(two_bits(p0, p1, m, false), _mm256_and_si256(lo, b2));
      w[m + 4] = _mm256_or_si256(two_bits(p0, p1, m, true), _mm256_and_si256(_mm256_srli_epi16(hb, 2 + m), b2));
    }
    s.sl = load_i8_epi32(p + 192 + 8 * h);
    s.sh = load_i8_epi32(p + 208 + 8 * h);
  } else if constexpr (K == Kind::kQ2_K) {
    const uint8_t* hd = g + (b / 8) * 1344;
    const uint8_t* p = hd + 64 + 160 * (b % 8);
    const __m256i p0 = load(p + 32 * h), p1 = load(p + 64 + 32 * h);
    for (int m = 0; m < 4; ++m) {
      w[m] = two_bits(p0, p1, m, false);
      w[m + 4] = two_bits(p0, p1, m, true);
    }
    const __m256i lo = load_u8_epi32(p + 128 + 8 * h), hi = load_u8_epi32(p + 144 + 8 * h), m4 = _mm256_set1_epi32(0x0F);
    s.sl = _mm256_and_si256(lo, m4);
    s.sh = _mm256_and_si256(hi, m4);
    s.ml = _mm256_srli_epi32(lo, 4);
    s.mh = _mm256_srli_epi32(hi, 4);
  } else if constexpr (K == Kind::kQ8_0) {
    const uint8_t* p = g + b * 544;
    for (int k = 0; k < 8; ++k) w[k] = load(p + 64 * k + 32 * h);
    s.dw = load_ph8(p + 512 + 16 * h);
  } else if constexpr (K == Kind::kQ4_K || K == Kind::kQ5_K) {
    constexpr bool k5 = K == Kind::kQ5_K;
    const uint8_t* hd = g + (b / 8) * (k5 ? 2880 : 2368);
    const uint8_t* p = hd + 64 + (k5 ? 352 : 288) * (b % 8);
    if constexpr (k5) {
      unpack_5bit(p, h, w);
    } else {
      unpack_nibbles(p, h, w);
    }
    const uint8_t* sc = p + (k5 ? 320 : 256);  // 16 scales, then 16 mins
    // Row 8h + j's scale into both int16 halves of lane j (bytes 4j and 4j + 2).
    const __m256i pairs = _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,  //
                                           4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1);
    const __m128i sc8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8 * h));
    s.sc2 = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(sc8), pairs);
    s.mn = load_u8_epi32(sc + 16 + 8 * h);
    s.mnf = _mm256_cvtepi32_ps(s.mn);
  } else {
    const uint8_t* hd = g + (b / 8) * 3360;
    const uint8_t* p = hd + 32 + 416 * (b % 8);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int m = 0; m < 4; ++m) {
      const __m256i v = load(p + 64 * m + 32 * h);
      const __m256i hb = load(p + 256 + 64 * (m / 2) + 32 * h);
      const __m256i hl = m % 2 == 0 ? _mm256_slli_epi16(hb, 4) : hb;
      const __m256i hh = m % 2 == 0 ? _mm256_slli_epi16(hb, 2) : _mm256_srli_epi16(hb, 2);
      w[m] = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(hl, m30));
      w[m + 4] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_and_si256(hh, m30));
    }
    s.sl = load_i8_epi32(p + 384 + 8 * h);
    s.sh = load_i8_epi32(p + 400 + 8 * h);
  }
}

// Token a's integer dot products for one block of 8 rows.
template <Kind K>
[[gnu::always_inline]] inline __m256i block_dots(const __m256i (&w)[8], const Act& a, int64_t b, const Scales& s) {
  const int8_t* q = a.q + b * 32;
  if constexpr (K == Kind::kQ8_0) {
    __m256i i = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      i = _mm256_add_epi32(i, madd1(_mm256_maddubs_epi16(_mm256_sign_epi8(w[k], w[k]), _mm256_sign_epi8(bcast(q + 4 * k), w[k]))));
    }
    return i;
  } else if constexpr (halves(K)) {
    // Weights 0..63 (0..7, 0..3) times int8: two pair sums still fit int16. Q2_K's halves start
    // at 0 (unbiased weights; its corr, corr2 are the activation sums for the min term).
    auto two = [&](int k) {
      return madd1(_mm256_add_epi16(_mm256_maddubs_epi16(w[k], bcast(q + 4 * k)), _mm256_maddubs_epi16(w[k + 1], bcast(q + 4 * k + 4))));
    };
    const __m256i c1 = K == Kind::kQ2_K ? _mm256_setzero_si256() : _mm256_set1_epi32(a.corr[b]);
    const __m256i c2 = K == Kind::kQ2_K ? _mm256_setzero_si256() : _mm256_set1_epi32(a.corr2[b]);
    const __m256i lo = _mm256_add_epi32(_mm256_add_epi32(two(0), two(2)), c1);
    const __m256i hi = _mm256_add_epi32(_mm256_add_epi32(two(4), two(6)), c2);
    return _mm256_add_epi32(_mm256_mullo_epi32(lo, s.sl), _mm256_mullo_epi32(hi, s.sh));
  } else if constexpr (five_bit(K)) {
    // 5 bits (<= 31) times int8 (|x| <= 128): four pair sums stay below 2^15 in int16.
    auto four = [&](int k) {
      const __m256i a0 = _mm256_add_epi16(_mm256_maddubs_epi16(w[k], bcast(q + 4 * k)), _mm256_maddubs_epi16(w[k + 1], bcast(q + 4 * k + 4)));
      const __m256i a1 = _mm256_add_epi16(_mm256_maddubs_epi16(w[k + 2], bcast(q + 4 * k + 8)), _mm256_maddubs_epi16(w[k + 3], bcast(q + 4 * k + 12)));
      return madd1(_mm256_add_epi16(a0, a1));
    };
    const __m256i i = _mm256_add_epi32(four(0), four(4));
    return K == Kind::kQ5_0 ? _mm256_add_epi32(i, _mm256_set1_epi32(a.corr[b])) : i;
  } else {
    // Nibble (<= 15) times int8 (|x| <= 128): eight pair sums stay below 2^15 in int16.
    __m256i s16 = _mm256_maddubs_epi16(w[0], bcast(q));
    for (int k = 1; k < 8; ++k) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[k], bcast(q + 4 * k)));
    const __m256i i = madd1(s16);
    return K == Kind::kQ4_0 ? _mm256_add_epi32(i, _mm256_set1_epi32(a.corr[b])) : i;
  }
}

// Bytes of one block of 16 rows (for K-quants, an eighth of a group super-block).
constexpr int block_bytes(Kind k) {
  switch (k) {
    case Kind::kQ4_0: return 288;
    case Kind::kQ4_1: return 320;
    case Kind::kQ5_0: return 352;
    case Kind::kQ5_1: return 384;
    case Kind::kQ8_0: return 544;
    case Kind::kQ2_K: return 168;
    case Kind::kQ3_K: return 228;
    case Kind::kQ4_K: return 296;
    case Kind::kQ5_K: return 360;
    default: return 420;
  }
}

// Token t's block b, half h, into f (legacy block types).
template <Kind K>
[[gnu::always_inline]] inline void block_step(const __m256i (&w)[8], const Scales& s, const Act& a, int64_t b, __m256& f) {
  const __m256i i = block_dots<K>(w, a, b, s);
  const __m256 dx = _mm256_set1_ps(a.d[b]);
  f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(s.dw, dx), f);
  if constexpr (has_min(K)) f = _mm256_fmadd_ps(s.mw, _mm256_set1_ps(a.s[b]), f);
}

// K-quants, block b, half h, token a: the block's scaled integer product (sc_b dot_b, or the
// halves' dots times their scales) and its min term (packed.h), both exact in int32.
template <Kind K>
[[gnu::always_inline]] inline __m256i kblock_int(const __m256i (&w)[8], const Act& a, int64_t b, const Scales& s) {
  const int8_t* q = a.q + b * 32;
  if constexpr (halves(K)) {
    return block_dots<K>(w, a, b, s);
  } else if constexpr (K == Kind::kQ5_K) {
    // 5 bits (<= 31) times int8: four pair sums stay in int16; VPMADDWD applies the scale.
    auto four = [&](int k) {
      const __m256i a0 = _mm256_add_epi16(_mm256_maddubs_epi16(w[k], bcast(q + 4 * k)), _mm256_maddubs_epi16(w[k + 1], bcast(q + 4 * k + 4)));
      const __m256i a1 = _mm256_add_epi16(_mm256_maddubs_epi16(w[k + 2], bcast(q + 4 * k + 8)), _mm256_maddubs_epi16(w[k + 3], bcast(q + 4 * k + 12)));
      return _mm256_madd_epi16(_mm256_add_epi16(a0, a1), s.sc2);
    };
    return _mm256_add_epi32(four(0), four(4));
  } else {
    __m256i s16 = _mm256_maddubs_epi16(w[0], bcast(q));
    for (int k = 1; k < 8; ++k) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[k], bcast(q + 4 * k)));
    return _mm256_madd_epi16(s16, s.sc2);
  }
}

// The block's min term. Decode (kInt) sums it in int32: VPMADDWD against each lane's (min, 0)
// pair (the activation sums fit an int16). Batched tiles sum it in float: every product and
// partial sum is an integer below 2^24 (Q4_K, Q5_K: 8 x 63 x 32 x 128; Q2_K: 16 x 15 x 16 x
// 128), so the float sum is the same exact integer, and the fused multiply-adds leave the
// integer multiplier (the scarce unit where 256-bit operations are split in two, as on Zen 1:
// 3% more batched Q4_K products there) to the weights' products.
template <Kind K, bool kInt>
[[gnu::always_inline]] inline void kblock_min(const Act& a, int64_t b, const Scales& s, __m256& m) {
  __m256i i;
  if constexpr (K == Kind::kQ2_K) {
    i = _mm256_add_epi32(_mm256_madd_epi16(s.ml, _mm256_set1_epi32(a.corr[b])), _mm256_madd_epi16(s.mh, _mm256_set1_epi32(a.corr2[b])));
  } else if constexpr (kInt) {
    i = _mm256_madd_epi16(s.mn, _mm256_set1_epi32(a.corr[b]));
  } else {
    m = _mm256_fmadd_ps(s.mnf, _mm256_set1_ps(a.s[b]), m);  // s: the block's sum, as a float
    return;
  }
  if constexpr (kInt) {
    m = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(m), i));  // an int32 sum until kfinish
  } else {
    m = _mm256_add_ps(m, _mm256_cvtepi32_ps(i));
  }
}

// A K-quant super-block's end for half h: f += float(isum) d_w d_x, then float(msum) (-dmin) d_x.
template <Kind K, bool kIntMins>
[[gnu::always_inline]] inline void kfinish(const uint8_t* hd, int h, __m256i isum, __m256 msum, float dx, __m256& f) {
  const __m256 vdx = _mm256_set1_ps(dx);
  f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(load_ph8(hd + 16 * h), vdx), f);
  if constexpr (k_mins(K)) {
    const __m256 dm = _mm256_xor_ps(load_ph8(hd + 32 + 16 * h), _mm256_set1_ps(-0.0f));
    if constexpr (kIntMins) msum = _mm256_cvtepi32_ps(_mm256_castps_si256(msum));
    f = _mm256_fmadd_ps(msum, _mm256_mul_ps(dm, vdx), f);
  }
}

// TT tokens (at most 4: the eight weight vectors and TT accumulators stay in registers), the
// two halves one after the other. One token (decode) streams each weight once instead: both
// halves of a block in one pass, with a prefetch ahead (two passes would leave half of every
// cache line for a second trip).
template <Kind K, int TT>
void tile(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  const int64_t nb = cols / 32;
  Act a[TT];
  for (int t = 0; t < TT; ++t) a[t] = act_row(act, cols, t0 + t);
  auto put = [&](__m256 (&f)[TT], int h) {
    for (int t = 0; t < TT; ++t) {
      alignas(32) float v[8];
      _mm256_store_ps(v, f[t]);
      out.put(t0 + t, row0 + 8 * h, v, 8);
    }
  };
  if constexpr (TT == 1) {
    __m256 f[2][1] = {{_mm256_setzero_ps()}, {_mm256_setzero_ps()}};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* p = g + b * block_bytes(K) + 2048;
      for (int o = 0; o < block_bytes(K); o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
      for (int h = 0; h < 2; ++h) {
        __m256i w[8];
        Scales s;
        unpack<K>(g, b, h, w, s);
        block_step<K>(w, s, a[0], b, f[h][0]);
      }
    }
    put(f[0], 0);
    put(f[1], 1);
  } else {
    for (int h = 0; h < 2; ++h) {
      __m256 f[TT];
      for (int t = 0; t < TT; ++t) f[t] = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        __m256i w[8];
        Scales s;
        unpack<K>(g, b, h, w, s);
        for (int t = 0; t < TT; ++t) block_step<K>(w, s, a[t], b, f[t]);
      }
      put(f, h);
    }
  }
}

// K-quants: the same passes, summing each super-block in integers (packed.h).
template <Kind K, int TT>
void ktile(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  const int64_t nsb = cols / 256;
  constexpr int64_t kUnit = 8 * block_bytes(K);
  Act a[TT];
  for (int t = 0; t < TT; ++t) a[t] = act_row(act, cols, t0 + t);
  auto put = [&](__m256 (&f)[TT], int h) {
    for (int t = 0; t < TT; ++t) {
      alignas(32) float v[8];
      _mm256_store_ps(v, f[t]);
      out.put(t0 + t, row0 + 8 * h, v, 8);
    }
  };
  if constexpr (TT == 1) {
    __m256 f[2][1] = {{_mm256_setzero_ps()}, {_mm256_setzero_ps()}};
    for (int64_t sb = 0; sb < nsb; ++sb) {
      __m256i is[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      __m256 ms[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t b = 8 * sb; b < 8 * sb + 8; ++b) {
        const uint8_t* p = g + b * block_bytes(K) + 2048;
        for (int o = 0; o < block_bytes(K); o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
        for (int h = 0; h < 2; ++h) {
          __m256i w[8];
          Scales s;
          unpack<K>(g, b, h, w, s);
          is[h] = _mm256_add_epi32(is[h], kblock_int<K>(w, a[0], b, s));
          if constexpr (k_mins(K)) kblock_min<K, true>(a[0], b, s, ms[h]);
        }
      }
      for (int h = 0; h < 2; ++h) kfinish<K, true>(g + sb * kUnit, h, is[h], ms[h], a[0].d[8 * sb], f[h][0]);
    }
    put(f[0], 0);
    put(f[1], 1);
  } else {
    for (int h = 0; h < 2; ++h) {
      __m256 f[TT];
      for (int t = 0; t < TT; ++t) f[t] = _mm256_setzero_ps();
      for (int64_t sb = 0; sb < nsb; ++sb) {
        __m256i is[TT];
        __m256 ms[TT];
        for (int t = 0; t < TT; ++t) is[t] = _mm256_setzero_si256(), ms[t] = _mm256_setzero_ps();
        for (int64_t b = 8 * sb; b < 8 * sb + 8; ++b) {
          __m256i w[8];
          Scales s;
          unpack<K>(g, b, h, w, s);
          for (int t = 0; t < TT; ++t) {
            is[t] = _mm256_add_epi32(is[t], kblock_int<K>(w, a[t], b, s));
            if constexpr (k_mins(K)) kblock_min<K, false>(a[t], b, s, ms[t]);
          }
        }
        for (int t = 0; t < TT; ++t) kfinish<K, false>(g + sb * kUnit, h, is[t], ms[t], a[t].d[8 * sb], f[t]);
      }
      put(f, h);
    }
  }
}

template <Kind K, int TT>
constexpr TileFn tile_for = k_quant(K) ? &ktile<K, TT> : &tile<K, TT>;

template <Kind K>
void tile8(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  tile_for<K, 4>(g, cols, act, t0, row0, out);
  tile_for<K, 4>(g, cols, act, t0 + 4, row0, out);
}

template <Kind K>
constexpr PackedGemmFn gemm_for = &gemm_groups<tile_for<K, 1>, tile_for<K, 2>, tile_for<K, 4>, tile8<K>>;

// Float weights, as in packed_avx512.cpp, on 8-row halves; up to 2 tokens per pass (their 4
// partial sums each stay in registers).
template <GgmlType kT>
[[gnu::always_inline]] inline __m256 load_col(const uint8_t* g, int64_t c, int h) {
  if constexpr (kT == GgmlType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(g + c * 64 + 32 * h));
  } else {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + c * 32 + 16 * h));
    if constexpr (kT == GgmlType::F16) return _mm256_cvtph_ps(v);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
}

template <GgmlType kT, int TT>
void float_pass(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  const float* x[TT];
  for (int t = 0; t < TT; ++t) x[t] = reinterpret_cast<const float*>(act) + (t0 + t) * cols;
  for (int h = 0; h < 2; ++h) {
    __m256 p[TT][4];
    for (int t = 0; t < TT; ++t) {
      for (int u = 0; u < 4; ++u) p[t][u] = _mm256_setzero_ps();
    }
    for (int64_t c = 0; c < cols; c += 4) {
      for (int u = 0; u < 4; ++u) {
        const __m256 w = load_col<kT>(g, c + u, h);
        for (int t = 0; t < TT; ++t) p[t][u] = _mm256_fmadd_ps(w, _mm256_set1_ps(x[t][c + u]), p[t][u]);
      }
    }
    for (int t = 0; t < TT; ++t) {
      alignas(32) float v[8];
      _mm256_store_ps(v, _mm256_add_ps(_mm256_add_ps(p[t][0], p[t][1]), _mm256_add_ps(p[t][2], p[t][3])));
      out.put(t0 + t, row0 + 8 * h, v, 8);
    }
  }
}

template <GgmlType kT, int TT>
void float_tile(const uint8_t* g, int64_t cols, const uint8_t* act, int64_t t0, int64_t row0, const Out& out) {
  if constexpr (TT <= 2) {
    float_pass<kT, TT>(g, cols, act, t0, row0, out);
  } else {
    for (int t = 0; t < TT; t += 2) float_pass<kT, 2>(g, cols, act, t0 + t, row0, out);
  }
}

template <GgmlType kT>
constexpr PackedGemmFn float_gemm = &gemm_groups<float_tile<kT, 1>, float_tile<kT, 2>, float_tile<kT, 4>, float_tile<kT, 8>>;

}  // namespace

void quantize_act_q8_avx2(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  // Bit for bit the scalar conversion: the same amax, d = amax / 127, fp16 d, 1/d and
  // round-half-to-even of x / d (VROUNDPS in the default rounding mode, like nearbyint).
  const int64_t nb = cols / 32;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* corr = reinterpret_cast<int32_t*>(dst + cols);
  auto* dl = reinterpret_cast<float*>(dst + cols + 4 * nb);
  auto* sl = dl + nb;
  auto* corr2 = reinterpret_cast<int32_t*>(sl + nb);
  for (int64_t b = 0; b < nb; ++b) corr2[b] = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    __m256 v[4];
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) {
      i32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // int32 -> int8 in element order (the packs work per 128-bit lane; the permute restores it).
    const __m256i i16 = _mm256_packs_epi32(i32[0], i32[1]), j16 = _mm256_packs_epi32(i32[2], i32[3]);
    const __m256i i8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i16, j16), order);
    const __m256i s16 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), i8), _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    const int32_t sum = _mm_cvtsi128_si32(s4);
    corr[b] = -f.bias * sum;
    dl[b] = _cvtsh_ss(dh);
    sl[b] = f.s_fp16 ? _cvtsh_ss(_cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT))
                     : dl[b] * static_cast<float>(sum);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * 32), i8);
  }
}

PackedGemmFn packed_gemm_avx2(GgmlType t) {
  if (t == GgmlType::Q4_0) return gemm_for<Kind::kQ4_0>;
  if (t == GgmlType::Q4_1) return gemm_for<Kind::kQ4_1>;
  if (t == GgmlType::Q4_K) return gemm_for<Kind::kQ4_K>;
  if (t == GgmlType::Q6_K) return gemm_for<Kind::kQ6_K>;
  if (t == GgmlType::Q8_0) return gemm_for<Kind::kQ8_0>;
  if (t == GgmlType::Q5_0) return gemm_for<Kind::kQ5_0>;
  if (t == GgmlType::Q5_1) return gemm_for<Kind::kQ5_1>;
  if (t == GgmlType::Q5_K) return gemm_for<Kind::kQ5_K>;
  if (t == GgmlType::Q2_K) return gemm_for<Kind::kQ2_K>;
  if (t == GgmlType::Q3_K) return gemm_for<Kind::kQ3_K>;
  if (t == GgmlType::F32) return float_gemm<GgmlType::F32>;
  if (t == GgmlType::F16) return float_gemm<GgmlType::F16>;
  if (t == GgmlType::BF16) return float_gemm<GgmlType::BF16>;
  return nullptr;
}

}  // namespace ranklm::kern
