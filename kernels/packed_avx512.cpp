// AVX-512 VNNI kernels for packed Q4_0 / Q4_1 / Q4_K / Q6_K / Q8_0 weights (layouts in packed.h). Compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma -mf16c and called only when the CPU has
// them. It calls no inline functions from ordinary shared headers (the linker could keep this
// file's AVX-512 copy for the whole program); packed_tiles.h is built for that (internal linkage).
//
// One call covers rows [r0, r1) for all tokens, in tiles of up to 8 tokens per row. A chunk of
// 16 blocks (512 weights) is loaded and unpacked once per tile into eight vectors whose lane j
// holds 4 weights of block j; each token then runs eight VPDPBUSD into one accumulator started
// from its `corr` lanes (which makes the biased unsigned weights signed), so the accumulator
// ends with the 16 blocks' exact integer dot products, converted and scaled by d_w * d_x with
// one multiply and one fused multiply-add per 512 weights.
#include <immintrin.h>

#include "packed.h"
#include "packed_tiles.h"

namespace ranklm::kern {

namespace {

// Decode (one token) streams each weight once; prefetching this far ahead keeps more
// cache-line reads in flight than the hardware prefetcher alone does on one core.
constexpr int kPrefetch = 2048;

inline void prefetch_chunk(const uint8_t* p, int bytes) {
  for (int o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch + o), _MM_HINT_T0);
}

inline __m512i load(const void* p) { return _mm512_loadu_si512(p); }

// Token t's integer dot products for one chunk: 16 lanes, one per block, started from corr.
// k runs outside t so the TT accumulator chains are independent and interleave.
template <int TT, bool kCorr>
inline void chunk_dots(const __m512i (&w)[8], const Act (&a)[TT], int64_t c, __m512i (&i)[TT]) {
#pragma GCC unroll 8
  for (int t = 0; t < TT; ++t) i[t] = kCorr ? load(a[t].corr + c * 16) : _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) i[t] = _mm512_dpbusd_epi32(i[t], w[k], load(a[t].q + c * 512 + 64 * k));
  }
}

template <int TT>
inline void chunk_scale(const __m512i (&i)[TT], const Act (&a)[TT], int64_t c, __m512 dw, __m512 (&acc)[TT]) {
#pragma GCC unroll 8
  for (int t = 0; t < TT; ++t) {
    acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i[t]), _mm512_loadu_ps(a[t].d + c * 16)), dw, acc[t]);
  }
}

// How each type's 16-block chunk becomes eight unsigned-byte vectors (lane j: 4 weights of
// block j) plus where its scales sit, and its GGUF-block tail.
// kMin: the chunk carries mins (Q4_1, Q4_K: no bias, so no corr start, and a min term m_w s_x
// per block). scales() gives the 16 blocks' d_w (and m_w).
inline void unpack_nibbles(const uint8_t* p, __m512i (&w)[8]) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int m = 0; m < 4; ++m) {
    const __m512i v = load(p + 64 * m);
    w[m] = _mm512_and_si512(v, m4);                            // elements 4m..4m+3
    w[m + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);  // elements 16+4m..16+4m+3
  }
}

inline __m512 load_ph16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

struct Q4_0Chunk {
  static constexpr int kBytes = 288, kQuants = 256;
  static constexpr bool kMin = false;
  static void unpack(const uint8_t* p, __m512i (&w)[8]) { unpack_nibbles(p, w); }
  static void scales(const uint8_t* p, __m512& dw, __m512&) { dw = load_ph16(p + kQuants); }
  static float tail(const uint8_t* t, int64_t b0, int64_t nb, const Act& a) { return q4_0_tail(t, b0, nb, a); }
};

struct Q4_1Chunk {
  static constexpr int kBytes = 320, kQuants = 256;
  static constexpr bool kMin = true;
  static void unpack(const uint8_t* p, __m512i (&w)[8]) { unpack_nibbles(p, w); }
  static void scales(const uint8_t* p, __m512& dw, __m512& mw) {
    dw = load_ph16(p + kQuants);
    mw = load_ph16(p + kQuants + 32);
  }
  static float tail(const uint8_t* t, int64_t b0, int64_t nb, const Act& a) { return q4_1_tail(t, b0, nb, a); }
};

// Q4_K: d sc and -dmin mn of each block from the unpacked 6-bit values and the two
// super-blocks' fp16 d and dmin (lanes 0-7 the first super-block, 8-15 the second).
struct Q4_KChunk {
  static constexpr int kBytes = 296, kQuants = 256;
  static constexpr bool kMin = true;
  static void unpack(const uint8_t* p, __m512i (&w)[8]) { unpack_nibbles(p, w); }
  static void scales(const uint8_t* p, __m512& dw, __m512& mw) {
    const __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 256))));
    const __m512 mn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 272))));
    // [d0 d1 dmin0 dmin1] as fp16 -> lanes of d (0-7: d0, 8-15: d1) and of dmin.
    const __m128 h = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 288)));
    const __m512 d = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_mm_cvtss_f32(h)),
                                          _mm512_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(h, h, 1))));
    const __m512 dmin = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(h, h, 2))),
                                             _mm512_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(h, h, 3))));
    dw = _mm512_mul_ps(d, sc);
    mw = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(dmin, mn));
  }
  static float tail(const uint8_t* t, int64_t b0, int64_t nb, const Act& a) { return q4_k_tail(t, b0, nb, a); }
};

struct Q8_0Chunk {
  static constexpr int kBytes = 544, kQuants = 512;
  static constexpr bool kMin = false;
  static void scales(const uint8_t* p, __m512& dw, __m512&) { dw = load_ph16(p + kQuants); }
  static void unpack(const uint8_t* p, __m512i (&w)[8]) {
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; ++k) w[k] = _mm512_xor_si512(load(p + 64 * k), bias);  // w + 128
  }
  static float tail(const uint8_t* t, int64_t b0, int64_t nb, const Act& a) { return q8_0_tail(t, b0, nb, a); }
};

template <class Chunk, int TT>
void tile(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y, int64_t ldy,
          int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  Act a[TT];
  __m512 acc[TT];
  tile_start(act, cols, t0, a, acc, _mm512_setzero_ps());
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p = wr + c * Chunk::kBytes;
    if (TT == 1) prefetch_chunk(p, Chunk::kBytes);
    __m512i w[8];
    Chunk::unpack(p, w);
    __m512 dw, mw = _mm512_setzero_ps();
    Chunk::scales(p, dw, mw);
    __m512i i[TT];
    chunk_dots<TT, !Chunk::kMin>(w, a, c, i);
    chunk_scale<TT>(i, a, c, dw, acc);
    if constexpr (Chunk::kMin) {
#pragma GCC unroll 8
      for (int t = 0; t < TT; ++t) acc[t] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(a[t].s + c * 16), acc[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = _mm512_reduce_add_ps(acc[t]);
    if (nb > 16 * nc) s += Chunk::tail(wr + nc * Chunk::kBytes, 16 * nc, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

// Q6_K (layout in packed.h): six-bit weights 0..63 from the nibbles and the high-bit vectors;
// each token's two halves (elements 0-15 and 16-31 of every block) go to their own
// accumulators, started from corr and corr2 (-32 sum(x): the weights' offset), are multiplied
// by their int8 scales in int32 (exact) and added, then scaled by d_w d_x.
inline void unpack_q6(const uint8_t* p, __m512i (&w)[8]) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  const __m512i h0 = load(p + 256), h1 = load(p + 320);
  for (int m = 0; m < 4; ++m) {
    const __m512i v = load(p + 64 * m);
    const __m512i h = m < 2 ? h0 : h1;
    const __m512i hl = m % 2 == 0 ? _mm512_slli_epi16(h, 4) : h;                     // bits 0-1 (4-5) -> 4-5
    const __m512i hh = m % 2 == 0 ? _mm512_slli_epi16(h, 2) : _mm512_srli_epi16(h, 2);  // bits 2-3 (6-7) -> 4-5
    w[m] = _mm512_or_si512(_mm512_and_si512(v, m4), _mm512_and_si512(hl, m30));
    w[m + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), _mm512_and_si512(hh, m30));
  }
}

template <int TT>
void tile_q6k(const uint8_t* wr, int64_t cols, const uint8_t* act, int64_t t0, float* y, int64_t ldy, int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  Act a[TT];
  __m512 acc[TT];
  tile_start(act, cols, t0, a, acc, _mm512_setzero_ps());
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p = wr + c * 420;
    if (TT == 1) prefetch_chunk(p, 420);
    __m512i w[8];
    unpack_q6(p, w);
    const __m512i sl = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 384)));
    const __m512i sh = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 400)));
    const __m128 h = _mm_cvtph_ps(_mm_loadu_si32(p + 416));  // d0 d1
    const __m512 dw = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_mm_cvtss_f32(h)),
                                           _mm512_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(h, h, 1))));
    __m512i lo[TT], hi[TT];
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) {
      lo[t] = load(a[t].corr + c * 16);
      hi[t] = load(a[t].corr2 + c * 16);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 8
      for (int t = 0; t < TT; ++t) {
        lo[t] = _mm512_dpbusd_epi32(lo[t], w[k], load(a[t].q + c * 512 + 64 * k));
        hi[t] = _mm512_dpbusd_epi32(hi[t], w[k + 4], load(a[t].q + c * 512 + 64 * (k + 4)));
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) {
      const __m512i i = _mm512_add_epi32(_mm512_mullo_epi32(lo[t], sl), _mm512_mullo_epi32(hi[t], sh));
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i), _mm512_loadu_ps(a[t].d + c * 16)), dw, acc[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s = _mm512_reduce_add_ps(acc[t]);
    if (nb > 16 * nc) s += q6_k_tail(wr + nc * 420, 16 * nc, nb, a[t]);
    y[(t0 + t) * ldy + r] = s;
  }
}

// Two rows at once (rows r and r + 1, row_bytes apart) for TT tokens: each activation vector
// loaded feeds both rows' VPDPBUSD, halving the loads per product of the one-row tile.
template <class Chunk, int TT>
void tile2(const uint8_t* wr, size_t row_bytes, int64_t cols, const uint8_t* act, int64_t t0, float* y, int64_t ldy,
           int64_t r) {
  const int64_t nb = cols / 32, nc = nb / 16;
  Act a[TT];
  __m512 acc0[TT], acc1[TT];
  for (int t = 0; t < TT; ++t) {
    a[t] = act_row(act, cols, t0 + t);
    acc0[t] = _mm512_setzero_ps();
    acc1[t] = _mm512_setzero_ps();
  }
  const uint8_t* wr1 = wr + row_bytes;
  for (int64_t c = 0; c < nc; ++c) {
    const uint8_t* p0 = wr + c * Chunk::kBytes;
    const uint8_t* p1 = wr1 + c * Chunk::kBytes;
    __m512i w0[8], w1[8];
    Chunk::unpack(p0, w0);
    Chunk::unpack(p1, w1);
    __m512 dw0, dw1, mw0 = _mm512_setzero_ps(), mw1 = _mm512_setzero_ps();
    Chunk::scales(p0, dw0, mw0);
    Chunk::scales(p1, dw1, mw1);
    for (int t = 0; t < TT; ++t) {
      __m512i i0 = Chunk::kMin ? _mm512_setzero_si512() : load(a[t].corr + c * 16);
      __m512i i1 = i0;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i x = load(a[t].q + c * 512 + 64 * k);
        i0 = _mm512_dpbusd_epi32(i0, w0[k], x);
        i1 = _mm512_dpbusd_epi32(i1, w1[k], x);
      }
      const __m512 dx = _mm512_loadu_ps(a[t].d + c * 16);
      acc0[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i0), dx), dw0, acc0[t]);
      acc1[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i1), dx), dw1, acc1[t]);
      if constexpr (Chunk::kMin) {
        const __m512 sx = _mm512_loadu_ps(a[t].s + c * 16);
        acc0[t] = _mm512_fmadd_ps(mw0, sx, acc0[t]);
        acc1[t] = _mm512_fmadd_ps(mw1, sx, acc1[t]);
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    float s0 = _mm512_reduce_add_ps(acc0[t]), s1 = _mm512_reduce_add_ps(acc1[t]);
    if (nb > 16 * nc) {
      s0 += Chunk::tail(wr + nc * Chunk::kBytes, 16 * nc, nb, a[t]);
      s1 += Chunk::tail(wr1 + nc * Chunk::kBytes, 16 * nc, nb, a[t]);
    }
    y[(t0 + t) * ldy + r] = s0;
    y[(t0 + t) * ldy + r + 1] = s1;
  }
}

// Rows [r0, r1) x all tokens, blocked as gemm_tiles does; batches of 4 or more tokens take rows in
// pairs (tile2), one sequence the one-row tile (it streams weights; loads are not its limit).
template <class Chunk>
void gemm_pairs(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols, const uint8_t* act,
                int64_t n_tok, float* y, int64_t ldy) {
  if (n_tok < 4) {
    return gemm_tiles<tile<Chunk, 1>, tile<Chunk, 2>, tile<Chunk, 4>, tile<Chunk, 8>>(w, row_bytes, r0, r1, cols, act,
                                                                                        n_tok, y, ldy);
  }
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = r1 < rb + kRowBlock ? r1 : rb + kRowBlock;
    int64_t t = 0;
    auto pass = [&](auto f2, auto f1, int64_t tt) {
      for (; t + tt <= n_tok; t += tt) {
        int64_t r = rb;
        for (; r + 2 <= re; r += 2) f2(w + r * static_cast<int64_t>(row_bytes), row_bytes, cols, act, t, y, ldy, r);
        if (r < re) f1(w + r * static_cast<int64_t>(row_bytes), cols, act, t, y, ldy, r);
      }
    };
    pass(tile2<Chunk, 4>, tile<Chunk, 4>, 4);
    pass(tile2<Chunk, 2>, tile<Chunk, 2>, 2);
    pass(tile2<Chunk, 1>, tile<Chunk, 1>, 1);
  }
}

template <class Chunk>
constexpr PackedGemmFn gemm_for = &gemm_pairs<Chunk>;

}  // namespace

PackedGemmFn packed_gemm_avx512(GgmlType t) {
  if (t == GgmlType::Q4_0) return gemm_for<Q4_0Chunk>;
  if (t == GgmlType::Q4_1) return gemm_for<Q4_1Chunk>;
  if (t == GgmlType::Q4_K) return gemm_for<Q4_KChunk>;
  if (t == GgmlType::Q6_K) return &gemm_tiles<tile_q6k<1>, tile_q6k<2>, tile_q6k<4>, tile_q6k<8>>;
  if (t == GgmlType::Q8_0) return gemm_for<Q8_0Chunk>;
  return nullptr;
}

}  // namespace ranklm::kern
