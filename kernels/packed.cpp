#include "packed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "fp16.h"

namespace ranklm::kern {

bool packable(GgmlType t, Isa isa) {
  // Packing pays only where a SIMD kernel reads the layout; the scalar twin is for tests and
  // for a level lowered after packing.
  return isa != Isa::Scalar && packed_gemm(t, isa) != nullptr;
}

ActQ8Format act_format(GgmlType t) {
  if (t == GgmlType::Q4_1) return {0, true};
  if (t == GgmlType::Q4_K) return {0, false, true, false};
  if (t == GgmlType::Q6_K) return {0, false, true, true};
  return {t == GgmlType::Q4_0 ? 8 : 128, true};
}

namespace {

constexpr int64_t kChunk = kChunkBlocks;

// Byte offset of element e (0..31) of block j (0..15) inside an interleaved 512-byte chunk of
// int8 values (Q8_0 weights and activations).
inline int64_t chunk_pos(int64_t j, int e) { return ((e / 4) * kChunk + j) * 4 + e % 4; }

// One row into the chunk layout: quant byte (g * 16 + j) * 4 + i of a chunk is byte 4g + i of
// block j's qs (Q4_0: 16 bytes, g 0..3; Q8_0: 32 bytes, g 0..7), then the 16 scales; blocks past
// the last whole chunk are copied as they are.
template <typename Block>
void pack_row(const Block* src, uint8_t* dst, int64_t nb) {
  constexpr int kGroups = sizeof(src->qs) / 4;
  const int64_t nc = nb / kChunk;
  for (int64_t c = 0; c < nc; ++c) {
    const Block* b = src + c * kChunk;
    uint8_t* q = dst + c * kChunk * sizeof(Block);
    for (int g = 0; g < kGroups; ++g) {
      for (int64_t j = 0; j < kChunk; ++j) std::memcpy(q + (g * kChunk + j) * 4, b[j].qs + 4 * g, 4);
    }
    uint16_t* d = reinterpret_cast<uint16_t*>(q + kChunk * sizeof(src->qs));
    for (int64_t j = 0; j < kChunk; ++j) std::memcpy(d + j, &b[j].d, 2);
    if constexpr (std::is_same_v<Block, BlockQ4_1>) {
      for (int64_t j = 0; j < kChunk; ++j) std::memcpy(d + kChunk + j, &b[j].m, 2);
    }
  }
  std::memcpy(dst + nc * kChunk * sizeof(Block), src + nc * kChunk,
              static_cast<size_t>(nb - nc * kChunk) * sizeof(Block));
}

// The 32 nibbles of block j of a chunk in the Q4_0 quant order (Q4_0, Q4_1, Q4_K), minus off.
void chunk_nibbles(const uint8_t* chunk, int64_t j, int off, int8_t* out) {
  for (int e = 0; e < 16; ++e) {
    const uint8_t v = chunk[((e / 4) * kChunk + j) * 4 + e % 4];
    out[e] = static_cast<int8_t>((v & 0x0F) - off);
    out[e + 16] = static_cast<int8_t>((v >> 4) - off);
  }
}

// Element e (0..31) of sub-block s (0..7) of a GGUF Q4_K super-block: a nibble 0..15.
inline uint8_t q4k_nibble(const BlockQ4_K& b, int s, int e) {
  return static_cast<uint8_t>((b.qs[32 * (s / 2) + e] >> (4 * (s % 2))) & 0x0F);
}

// Q4_K rows: two super-blocks per chunk (layout in packed.h), an odd last one copied as it is.
void pack_row_q4k(const BlockQ4_K* src, uint8_t* dst, int64_t nsb) {
  const int64_t nc = nsb / 2;
  for (int64_t c = 0; c < nc; ++c) {
    uint8_t* q = dst + c * static_cast<int64_t>(kQ4KChunkBytes);
    for (int64_t j = 0; j < kChunk; ++j) {
      const BlockQ4_K& sb = src[2 * c + j / 8];
      const int s = static_cast<int>(j % 8);
      for (int m = 0; m < 4; ++m) {
        for (int i = 0; i < 4; ++i) {
          q[(m * kChunk + j) * 4 + i] =
              static_cast<uint8_t>(q4k_nibble(sb, s, 4 * m + i) | (q4k_nibble(sb, s, 16 + 4 * m + i) << 4));
        }
      }
      int32_t sc, mn;
      scale_min_k4(s, sb.scales, sc, mn);
      q[256 + j] = static_cast<uint8_t>(sc);
      q[272 + j] = static_cast<uint8_t>(mn);
    }
    std::memcpy(q + 288, &src[2 * c].d, 2);
    std::memcpy(q + 290, &src[2 * c + 1].d, 2);
    std::memcpy(q + 292, &src[2 * c].dmin, 2);
    std::memcpy(q + 294, &src[2 * c + 1].dmin, 2);
  }
  if (nsb % 2) std::memcpy(dst + nc * static_cast<int64_t>(kQ4KChunkBytes), src + 2 * nc, sizeof(BlockQ4_K));
}

// Sub-block b of a packed Q4_K row: nibbles 0..15, d sc (returned) and -dmin mn (in *m).
float unpack_q4k(const uint8_t* row, int64_t nb, int64_t b, int8_t* out, float* m) {
  const int64_t nc = nb / kChunk, c = b / kChunk, j = b % kChunk;
  uint16_t d, dmin;
  int32_t sc, mn;
  if (c < nc) {
    const uint8_t* chunk = row + c * static_cast<int64_t>(kQ4KChunkBytes);
    chunk_nibbles(chunk, j, 0, out);
    sc = chunk[256 + j];
    mn = chunk[272 + j];
    std::memcpy(&d, chunk + 288 + 2 * (j / 8), 2);
    std::memcpy(&dmin, chunk + 292 + 2 * (j / 8), 2);
  } else {
    BlockQ4_K blk;
    std::memcpy(&blk, row + nc * static_cast<int64_t>(kQ4KChunkBytes), sizeof blk);
    const int s = static_cast<int>((b - nc * kChunk) % 8);
    for (int e = 0; e < 32; ++e) out[e] = static_cast<int8_t>(q4k_nibble(blk, s, e));
    scale_min_k4(s, blk.scales, sc, mn);
    d = blk.d;
    dmin = blk.dmin;
  }
  if (m) *m = -(fp16_to_fp32(dmin) * static_cast<float>(mn));
  return fp16_to_fp32(d) * static_cast<float>(sc);
}

// Q6_K: element e (0..255) of a GGUF super-block as 0..63 (the value is d sc[e / 16] (q - 32)).
inline uint8_t q6k_value(const BlockQ6_K& b, int e) {
  const int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
  const uint8_t ql = b.ql[64 * h + l + 32 * (g % 2)];
  const int lo = g < 2 ? ql & 0x0F : ql >> 4;
  return static_cast<uint8_t>(lo | (((b.qh[32 * h + l] >> (2 * g)) & 3) << 4));
}

// Q6_K rows: two super-blocks per chunk (layout in packed.h), an odd last one copied as it is.
void pack_row_q6k(const BlockQ6_K* src, uint8_t* dst, int64_t nsb) {
  const int64_t nc = nsb / 2;
  for (int64_t c = 0; c < nc; ++c) {
    uint8_t* q = dst + c * static_cast<int64_t>(kQ6KChunkBytes);
    std::memset(q + 256, 0, 128);
    for (int64_t j = 0; j < kChunk; ++j) {
      const BlockQ6_K& sb = src[2 * c + j / 8];
      const int base = static_cast<int>(j % 8) * 32;  // the block's first element in its super-block
      for (int m = 0; m < 4; ++m) {
        for (int i = 0; i < 4; ++i) {
          const uint8_t a = q6k_value(sb, base + 4 * m + i), b = q6k_value(sb, base + 16 + 4 * m + i);
          const int64_t pos = (m * kChunk + j) * 4 + i;
          q[pos] = static_cast<uint8_t>((a & 0x0F) | ((b & 0x0F) << 4));
          q[256 + 64 * (m / 2) + (j * 4 + i)] |= static_cast<uint8_t>(((a >> 4) | ((b >> 4) << 2)) << (4 * (m % 2)));
        }
      }
      q[384 + j] = static_cast<uint8_t>(sb.scales[2 * (j % 8)]);
      q[400 + j] = static_cast<uint8_t>(sb.scales[2 * (j % 8) + 1]);
    }
    std::memcpy(q + 416, &src[2 * c].d, 2);
    std::memcpy(q + 418, &src[2 * c + 1].d, 2);
  }
  if (nsb % 2) std::memcpy(dst + nc * static_cast<int64_t>(kQ6KChunkBytes), src + 2 * nc, sizeof(BlockQ6_K));
}

// Block b of a packed Q6_K row: its 32 values q - 32 (-32..31), d, and the two halves' scales.
float unpack_q6k(const uint8_t* row, int64_t nb, int64_t b, int8_t* out, int& sc_lo, int& sc_hi) {
  const int64_t nc = nb / kChunk, c = b / kChunk, j = b % kChunk;
  uint16_t d;
  if (c < nc) {
    const uint8_t* chunk = row + c * static_cast<int64_t>(kQ6KChunkBytes);
    for (int e = 0; e < 16; ++e) {
      const int m = e / 4, i = e % 4;
      const uint8_t v = chunk[(m * kChunk + j) * 4 + i];
      const uint8_t h = static_cast<uint8_t>(chunk[256 + 64 * (m / 2) + j * 4 + i] >> (4 * (m % 2)));
      out[e] = static_cast<int8_t>(((v & 0x0F) | ((h & 3) << 4)) - 32);
      out[e + 16] = static_cast<int8_t>(((v >> 4) | (((h >> 2) & 3) << 4)) - 32);
    }
    sc_lo = static_cast<int8_t>(chunk[384 + j]);
    sc_hi = static_cast<int8_t>(chunk[400 + j]);
    std::memcpy(&d, chunk + 416 + 2 * (j / 8), 2);
  } else {
    BlockQ6_K blk;
    std::memcpy(&blk, row + nc * static_cast<int64_t>(kQ6KChunkBytes), sizeof blk);
    const int s = static_cast<int>((b - nc * kChunk) % 8);
    for (int e = 0; e < 32; ++e) out[e] = static_cast<int8_t>(q6k_value(blk, 32 * s + e) - 32);
    sc_lo = blk.scales[2 * s];
    sc_hi = blk.scales[2 * s + 1];
    d = blk.d;
  }
  return fp16_to_fp32(d);
}

// Block b of a packed row as integers and its scale d (and min m: Q4_1's d q + m; 0 for the
// others); the layouts' single decoder, used by the embedding lookup and the scalar kernel.
// Q4_0 comes back as -8..7, Q4_1 as 0..15, Q8_0 as stored.
float unpack_block(GgmlType t, const uint8_t* row, int64_t nb, int64_t b, int8_t* out, float* m = nullptr) {
  if (t == GgmlType::Q4_K) return unpack_q4k(row, nb, b, out, m);
  const int64_t c = b / kChunk, j = b % kChunk;
  if (m) *m = 0.0f;
  if (t == GgmlType::Q4_0 || t == GgmlType::Q4_1) {
    const bool q41 = t == GgmlType::Q4_1;
    const int off = q41 ? 0 : 8;
    const size_t bsz = q41 ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
    const uint8_t* chunk = row + c * kChunk * bsz;
    uint16_t d, mh = 0;
    if (c < nb / kChunk) {
      chunk_nibbles(chunk, j, off, out);
      std::memcpy(&d, chunk + kChunk * 16 + j * 2, 2);
      if (q41) std::memcpy(&mh, chunk + kChunk * 18 + j * 2, 2);
    } else {
      const uint8_t* blk = row + b * bsz;  // GGUF block: d, [m], 16 bytes of nibbles
      const uint8_t* qs = blk + (q41 ? 4 : 2);
      for (int e = 0; e < 16; ++e) {
        out[e] = static_cast<int8_t>((qs[e] & 0x0F) - off);
        out[e + 16] = static_cast<int8_t>((qs[e] >> 4) - off);
      }
      std::memcpy(&d, blk, 2);
      if (q41) std::memcpy(&mh, blk + 2, 2);
    }
    if (m && q41) *m = fp16_to_fp32(mh);
    return fp16_to_fp32(d);
  }
  const uint8_t* chunk = row + c * kChunk * sizeof(BlockQ8_0);
  if (c < nb / kChunk) {
    for (int e = 0; e < 32; ++e) out[e] = static_cast<int8_t>(chunk[chunk_pos(j, e)]);
    uint16_t d;
    std::memcpy(&d, chunk + kChunk * 32 + j * 2, 2);
    return fp16_to_fp32(d);
  }
  BlockQ8_0 blk;
  std::memcpy(&blk, row + b * sizeof(BlockQ8_0), sizeof blk);
  std::memcpy(out, blk.qs, 32);
  return fp16_to_fp32(blk.d);
}

void check_packed_type(GgmlType t, const char* what) {
  if (t != GgmlType::Q4_0 && t != GgmlType::Q4_1 && t != GgmlType::Q4_K && t != GgmlType::Q6_K && t != GgmlType::Q8_0) {
    throw std::invalid_argument(std::string(what) + ": type has no packed layout");
  }
}

}  // namespace

size_t packed_row_bytes(GgmlType t, int64_t cols) {
  if (t == GgmlType::Q4_K) {
    const int64_t nsb = cols / QK_K;
    return static_cast<size_t>(nsb / 2) * kQ4KChunkBytes + static_cast<size_t>(nsb % 2) * sizeof(BlockQ4_K);
  }
  if (t == GgmlType::Q6_K) {
    const int64_t nsb = cols / QK_K;
    return static_cast<size_t>(nsb / 2) * kQ6KChunkBytes + static_cast<size_t>(nsb % 2) * sizeof(BlockQ6_K);
  }
  return row_bytes(traits(t), cols);
}

void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols) {
  const int64_t nb = cols / QK;
  if (cols % traits(t).block_size != 0) throw std::invalid_argument("pack_rows: row length not a whole number of blocks");
  check_packed_type(t, "pack_rows");
  const auto* s = static_cast<const uint8_t*>(src);
  auto* o = static_cast<uint8_t*>(dst);
  const size_t rb = row_bytes(traits(t), cols), pb = packed_row_bytes(t, cols);
  for (int64_t r = 0; r < rows; ++r) {
    if (t == GgmlType::Q4_K) {
      pack_row_q4k(reinterpret_cast<const BlockQ4_K*>(s + r * rb), o + r * pb, cols / QK_K);
    } else if (t == GgmlType::Q6_K) {
      pack_row_q6k(reinterpret_cast<const BlockQ6_K*>(s + r * rb), o + r * pb, cols / QK_K);
    } else if (t == GgmlType::Q4_0) {
      pack_row(reinterpret_cast<const BlockQ4_0*>(s + r * rb), o + r * rb, nb);
    } else if (t == GgmlType::Q4_1) {
      pack_row(reinterpret_cast<const BlockQ4_1*>(s + r * rb), o + r * rb, nb);
    } else {
      pack_row(reinterpret_cast<const BlockQ8_0*>(s + r * rb), o + r * rb, nb);
    }
  }
}

void dequantize_packed_row(GgmlType t, const void* src, float* dst, int64_t cols) {
  check_packed_type(t, "dequantize_packed_row");
  const int64_t nb = cols / QK;
  int8_t q[QK];
  if (t == GgmlType::Q6_K) {  // (d sc) (q - 32), one scale per 16 values, as the reference has it
    for (int64_t b = 0; b < nb; ++b) {
      int lo, hi;
      const float d = unpack_q6k(static_cast<const uint8_t*>(src), nb, b, q, lo, hi);
      for (int e = 0; e < QK; ++e) dst[b * QK + e] = d * static_cast<float>(e < 16 ? lo : hi) * static_cast<float>(q[e]);
    }
    return;
  }
  for (int64_t b = 0; b < nb; ++b) {
    float m = 0.0f;
    const float d = unpack_block(t, static_cast<const uint8_t*>(src), nb, b, q, &m);
    for (int e = 0; e < QK; ++e) dst[b * QK + e] = d * static_cast<float>(q[e]) + m;
  }
}

void quantize_act_q8(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  quantize_act_q8_at(active_isa(), x, cols, f, dst);
}

namespace {

// Int8 values of block b in their ActQ8 place (chunk order, or natural past the last chunk).
void place_block(int8_t* q, int64_t b, int64_t nc, const int8_t* qs) {
  const int64_t c = b / kChunk;
  if (c < nc) {
    int8_t* chunk = q + c * kChunk * QK;
    for (int k = 0; k < 8; ++k) std::memcpy(chunk + (k * kChunk + b % kChunk) * 4, qs + 4 * k, 4);
  } else {
    std::memcpy(q + b * QK, qs, QK);
  }
}

// The Q8_K rounding (the reference quantizer, bit for bit) in the ActQ8 layout; cols a
// multiple of 256. One implementation for every level.
void quantize_act_q8_k(const float* x, int64_t cols, bool q6, uint8_t* dst) {
  const int64_t nb = cols / QK, nc = nb / kChunk;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* corr = reinterpret_cast<int32_t*>(dst + cols);
  auto* dl = reinterpret_cast<float*>(dst + cols + 4 * nb);
  auto* sl = dl + nb;
  auto* corr2 = reinterpret_cast<int32_t*>(sl + nb);
  const TypeTraits& q8k = traits(GgmlType::Q8_K);
  BlockQ8_K blk;
  for (int64_t sb = 0; sb < cols / QK_K; ++sb) {
    q8k.quantize(x + sb * QK_K, &blk, QK_K);
    for (int j = 0; j < QK_K / QK; ++j) {
      const int64_t b = sb * (QK_K / QK) + j;
      place_block(q, b, nc, blk.qs + j * QK);
      corr[b] = q6 ? -32 * blk.bsums[2 * j] : 0;
      corr2[b] = q6 ? -32 * blk.bsums[2 * j + 1] : 0;
      dl[b] = blk.d;
      sl[b] = blk.d * static_cast<float>(blk.bsums[2 * j] + blk.bsums[2 * j + 1]);
    }
  }
}

}  // namespace

void quantize_act_q8_at(Isa isa, const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  if (f.q8_k) return quantize_act_q8_k(x, cols, f.q6_k, dst);
  if (isa >= Isa::Avx2) return quantize_act_q8_avx2(x, cols, f, dst);
  const int64_t nb = cols / QK, nc = nb / kChunk;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* corr = reinterpret_cast<int32_t*>(dst + cols);
  auto* dl = reinterpret_cast<float*>(dst + cols + 4 * nb);
  auto* sl = dl + nb;
  std::memset(sl + nb, 0, static_cast<size_t>(nb) * 4);  // corr2
  const TypeTraits& q8 = traits(GgmlType::Q8_0);
  BlockQ8_0 blk;
  for (int64_t b = 0; b < nb; ++b) {
    q8.quantize(x + b * QK, &blk, QK);  // the reference Q8_0 rounding, bit for bit
    float amax = 0.0f;
    for (int e = 0; e < QK; ++e) amax = std::max(amax, std::fabs(x[b * QK + e]));
    place_block(q, b, nc, blk.qs);
    int32_t sum = 0;
    for (int e = 0; e < QK; ++e) sum += blk.qs[e];
    corr[b] = -f.bias * sum;
    dl[b] = fp16_to_fp32(blk.d);
    sl[b] = f.s_fp16 ? fp16_to_fp32(fp32_to_fp16(amax / 127.0f * static_cast<float>(sum))) : dl[b] * static_cast<float>(sum);
  }
}

namespace {

// Portable kernel on the packed layouts: the twin of the SIMD kernels (same integer products,
// same per-block scales) and the fallback when the active level is lowered after packing.
void gemm_scalar(GgmlType type, const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1,
                 int64_t cols, const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  const int64_t nb = cols / QK, nc = nb / kChunk;
  std::vector<int8_t> wq(static_cast<size_t>(cols));
  std::vector<float> dw(static_cast<size_t>(nb));
  std::vector<float> mw(static_cast<size_t>(nb));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = w + r * static_cast<int64_t>(row_bytes);
    for (int64_t b = 0; b < nb; ++b) dw[b] = unpack_block(type, wr, nb, b, wq.data() + b * QK, &mw[b]);
    for (int64_t t = 0; t < n_tok; ++t) {
      const uint8_t* a = act + t * static_cast<int64_t>(act_q8_bytes(cols));
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      const auto* dl = reinterpret_cast<const float*>(a + cols + 4 * nb);
      const float* sl = dl + nb;
      float s = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t c = b / kChunk, j = b % kChunk;
        int32_t dot = 0;
        for (int e = 0; e < QK; ++e) {
          const int8_t x = c < nc ? aq[c * kChunk * QK + chunk_pos(j, e)] : aq[b * QK + e];
          dot += wq[b * QK + e] * x;
        }
        s += dw[b] * dl[b] * static_cast<float>(dot) + mw[b] * sl[b];
      }
      y[t * ldy + r] = s;
    }
  }
}

// Q6_K: per block, the two halves' integer dot products times their scales, then d_w d_x.
void gemm_scalar_q6_k(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t cols,
                      const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  const int64_t nb = cols / QK, nc = nb / kChunk;
  std::vector<int8_t> wq(static_cast<size_t>(cols));
  std::vector<float> dw(static_cast<size_t>(nb));
  std::vector<int> lo(static_cast<size_t>(nb)), hi(static_cast<size_t>(nb));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = w + r * static_cast<int64_t>(rb);
    for (int64_t b = 0; b < nb; ++b) dw[b] = unpack_q6k(wr, nb, b, wq.data() + b * QK, lo[b], hi[b]);
    for (int64_t t = 0; t < n_tok; ++t) {
      const uint8_t* a = act + t * static_cast<int64_t>(act_q8_bytes(cols));
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      const auto* dl = reinterpret_cast<const float*>(a + cols + 4 * nb);
      float s = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t c = b / kChunk, j = b % kChunk;
        int32_t dot[2] = {0, 0};
        for (int e = 0; e < QK; ++e) {
          const int8_t x = c < nc ? aq[c * kChunk * QK + chunk_pos(j, e)] : aq[b * QK + e];
          dot[e / 16] += wq[b * QK + e] * x;
        }
        s += dw[b] * dl[b] * static_cast<float>(dot[0] * lo[b] + dot[1] * hi[b]);
      }
      y[t * ldy + r] = s;
    }
  }
}

void gemm_scalar_q4_0(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t cols,
                      const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  gemm_scalar(GgmlType::Q4_0, w, rb, r0, r1, cols, act, n_tok, y, ldy);
}
void gemm_scalar_q4_1(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t cols,
                      const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  gemm_scalar(GgmlType::Q4_1, w, rb, r0, r1, cols, act, n_tok, y, ldy);
}
void gemm_scalar_q4_k(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t cols,
                      const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  gemm_scalar(GgmlType::Q4_K, w, rb, r0, r1, cols, act, n_tok, y, ldy);
}
void gemm_scalar_q8_0(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t cols,
                      const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  gemm_scalar(GgmlType::Q8_0, w, rb, r0, r1, cols, act, n_tok, y, ldy);
}

}  // namespace

PackedGemmFn packed_gemm(GgmlType t, Isa isa) {
  switch (isa) {
    case Isa::Avx512: return packed_gemm_avx512(t);
    case Isa::Avx2: return packed_gemm_avx2(t);
    case Isa::Scalar:
      if (t == GgmlType::Q4_0) return &gemm_scalar_q4_0;
      if (t == GgmlType::Q4_1) return &gemm_scalar_q4_1;
      if (t == GgmlType::Q4_K) return &gemm_scalar_q4_k;
      if (t == GgmlType::Q6_K) return &gemm_scalar_q6_k;
      if (t == GgmlType::Q8_0) return &gemm_scalar_q8_0;
      return nullptr;
  }
  return nullptr;
}

}  // namespace ranklm::kern
