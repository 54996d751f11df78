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
  switch (t) {
    case GgmlType::Q4_1: case GgmlType::Q5_1: return {0, true};
    case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, false, true, false};
    case GgmlType::Q6_K: return {0, false, true, true};
    case GgmlType::Q4_0: return {8, true};
    case GgmlType::Q5_0: return {16, true};
    default: return {128, true};
  }
}

namespace {

constexpr int64_t kG = kGroupRows;

// Bytes of one group block (Q4_0, Q4_1, Q8_0: 16 rows x 32 elements) or group super-block
// (Q4_K, Q6_K: 16 rows x 256 elements), and the block size it covers.
int64_t group_unit_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return 288;
    case GgmlType::Q4_1: return 320;
    case GgmlType::Q5_0: return 352;
    case GgmlType::Q5_1: return 384;
    case GgmlType::Q8_0: return 544;
    case GgmlType::Q4_K: return 2368;
    case GgmlType::Q5_K: return 2880;
    case GgmlType::Q6_K: return 3360;
    default: throw std::invalid_argument("packed layout: type has no packed layout");
  }
}
int64_t group_unit_cols(GgmlType t) {
  return t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K ? QK_K : QK;
}

// Row j's byte for elements (4m + i, 16 + 4m + i) in a nibble plane.
inline uint8_t& nibble_byte(uint8_t* plane, int64_t j, int m, int i) { return plane[(m * kG + j) * 4 + i]; }

// Row j of a 5-bit block (values 0..31): low 4 bits into the nibble plane, the fifth bits into
// the high plane (64 bytes after it): byte 4j + i, bit m = element 4m + i, bit 4 + m = 16 + 4m + i.
void place_5bit(uint8_t* plane, int64_t j, const uint8_t (&v)[QK]) {
  uint8_t* high = plane + 256;
  for (int i = 0; i < 4; ++i) high[4 * j + i] = 0;
  for (int m = 0; m < 4; ++m) {
    for (int i = 0; i < 4; ++i) {
      const uint8_t lo = v[4 * m + i], hi = v[16 + 4 * m + i];
      nibble_byte(plane, j, m, i) = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      high[4 * j + i] |= static_cast<uint8_t>(((lo >> 4) << m) | ((hi >> 4) << (4 + m)));
    }
  }
}

// Element e (0..31) of sub-block s (0..7) of a GGUF Q4_K super-block: a nibble 0..15.
inline uint8_t q4k_nibble(const BlockQ4_K& b, int s, int e) {
  return static_cast<uint8_t>((b.qs[32 * (s / 2) + e] >> (4 * (s % 2))) & 0x0F);
}

// Q6_K: element e (0..255) of a GGUF super-block as 0..63 (the value is d sc[e / 16] (q - 32)).
inline uint8_t q6k_value(const BlockQ6_K& b, int e) {
  const int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
  const uint8_t ql = b.ql[64 * h + l + 32 * (g % 2)];
  const int lo = g < 2 ? ql & 0x0F : ql >> 4;
  return static_cast<uint8_t>(lo | (((b.qh[32 * h + l] >> (2 * g)) & 3) << 4));
}

// Row j of a group from one GGUF row (layouts in packed.h).
void pack_group_row(GgmlType t, const uint8_t* src, uint8_t* group, int64_t j, int64_t cols) {
  const int64_t units = cols / group_unit_cols(t), ub = group_unit_bytes(t);
  for (int64_t u = 0; u < units; ++u) {
    uint8_t* g = group + u * ub;
    if (t == GgmlType::Q4_0 || t == GgmlType::Q4_1) {
      const bool q41 = t == GgmlType::Q4_1;
      const uint8_t* blk = src + u * (q41 ? 20 : 18);  // d, [m], 16 bytes of nibbles
      for (int m = 0; m < 4; ++m) std::memcpy(&nibble_byte(g, j, m, 0), blk + (q41 ? 4 : 2) + 4 * m, 4);
      std::memcpy(g + 256 + 2 * j, blk, 2);
      if (q41) std::memcpy(g + 288 + 2 * j, blk + 2, 2);
    } else if (t == GgmlType::Q5_0 || t == GgmlType::Q5_1) {
      const bool q51 = t == GgmlType::Q5_1;
      const uint8_t* blk = src + u * (q51 ? 24 : 22);  // d, [m], qh (32 fifth bits), 16 bytes of nibbles
      const uint8_t* qs = blk + (q51 ? 8 : 6);
      uint32_t qh;
      std::memcpy(&qh, blk + (q51 ? 4 : 2), 4);
      uint8_t v[QK];
      for (int e = 0; e < QK; ++e) {
        v[e] = static_cast<uint8_t>(((e < 16 ? qs[e] : qs[e - 16] >> 4) & 0x0F) | (((qh >> e) & 1) << 4));
      }
      place_5bit(g, j, v);
      std::memcpy(g + 320 + 2 * j, blk, 2);
      if (q51) std::memcpy(g + 352 + 2 * j, blk + 2, 2);
    } else if (t == GgmlType::Q5_K) {
      BlockQ5_K sb;
      std::memcpy(&sb, src + u * static_cast<int64_t>(sizeof sb), sizeof sb);
      std::memcpy(g + 2 * j, &sb.d, 2);
      std::memcpy(g + 32 + 2 * j, &sb.dmin, 2);
      for (int s = 0; s < 8; ++s) {
        uint8_t* blk = g + 64 + 352 * s;
        uint8_t v[QK];
        for (int e = 0; e < QK; ++e) {
          v[e] = static_cast<uint8_t>(((sb.qs[32 * (s / 2) + e] >> (4 * (s % 2))) & 0x0F) | (((sb.qh[e] >> s) & 1) << 4));
        }
        place_5bit(blk, j, v);
        int32_t sc, mn;
        scale_min_k4(s, sb.scales, sc, mn);
        blk[320 + j] = static_cast<uint8_t>(sc);
        blk[336 + j] = static_cast<uint8_t>(mn);
      }
    } else if (t == GgmlType::Q8_0) {
      const uint8_t* blk = src + u * 34;
      for (int k = 0; k < 8; ++k) std::memcpy(g + (k * kG + j) * 4, blk + 2 + 4 * k, 4);
      std::memcpy(g + 512 + 2 * j, blk, 2);
    } else if (t == GgmlType::Q4_K) {
      BlockQ4_K sb;
      std::memcpy(&sb, src + u * static_cast<int64_t>(sizeof sb), sizeof sb);
      std::memcpy(g + 2 * j, &sb.d, 2);
      std::memcpy(g + 32 + 2 * j, &sb.dmin, 2);
      for (int s = 0; s < 8; ++s) {
        uint8_t* blk = g + 64 + 288 * s;
        for (int m = 0; m < 4; ++m) {
          for (int i = 0; i < 4; ++i) {
            nibble_byte(blk, j, m, i) = static_cast<uint8_t>(q4k_nibble(sb, s, 4 * m + i) | (q4k_nibble(sb, s, 16 + 4 * m + i) << 4));
          }
        }
        int32_t sc, mn;
        scale_min_k4(s, sb.scales, sc, mn);
        blk[256 + j] = static_cast<uint8_t>(sc);
        blk[272 + j] = static_cast<uint8_t>(mn);
      }
    } else {  // Q6_K
      BlockQ6_K sb;
      std::memcpy(&sb, src + u * static_cast<int64_t>(sizeof sb), sizeof sb);
      std::memcpy(g + 2 * j, &sb.d, 2);
      for (int s = 0; s < 8; ++s) {
        uint8_t* blk = g + 32 + 416 * s;
        for (int p = 0; p < 2; ++p) std::memset(blk + 256 + 64 * p + 4 * j, 0, 4);
        for (int m = 0; m < 4; ++m) {
          for (int i = 0; i < 4; ++i) {
            const uint8_t lo = q6k_value(sb, 32 * s + 4 * m + i), hi = q6k_value(sb, 32 * s + 16 + 4 * m + i);
            nibble_byte(blk, j, m, i) = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
            blk[256 + 64 * (m / 2) + 4 * j + i] |= static_cast<uint8_t>(((lo >> 4) | ((hi >> 4) << 2)) << (4 * (m % 2)));
          }
        }
        blk[384 + j] = static_cast<uint8_t>(sb.scales[2 * s]);
        blk[400 + j] = static_cast<uint8_t>(sb.scales[2 * s + 1]);
      }
    }
  }
}

// One block of row j of a group, decoded: its 32 integer weights (Q4_0 as -8..7, Q4_1 and Q4_K
// as 0..15, Q8_0 as stored, Q6_K as q - 32), its scale d_w (returned; Q4_K: d sc) and min m_w
// (Q4_1: m, Q4_K: -dmin mn, else 0); for Q6_K the halves' int8 scales. The layouts' one decoder,
// used by the embedding lookup and the scalar kernel.
struct BlockInts {
  int8_t q[QK];
  float d = 0.0f, m = 0.0f;
  int sc_lo = 1, sc_hi = 1;
};

void unpack_block(GgmlType t, const uint8_t* group, int64_t j, int64_t b, BlockInts& o) {
  const int64_t per = group_unit_cols(t) / QK;  // blocks per unit
  const uint8_t* g = group + (b / per) * group_unit_bytes(t);
  const int64_t s = b % per;
  auto half = [](const uint8_t* p, int64_t k) {
    uint16_t h;
    std::memcpy(&h, p + 2 * k, 2);
    return fp16_to_fp32(h);
  };
  auto nibbles = [&](const uint8_t* plane, int off) {
    for (int e = 0; e < 16; ++e) {
      const uint8_t v = nibble_byte(const_cast<uint8_t*>(plane), j, e / 4, e % 4);
      o.q[e] = static_cast<int8_t>((v & 0x0F) - off);
      o.q[e + 16] = static_cast<int8_t>((v >> 4) - off);
    }
  };
  auto fifth = [&](const uint8_t* plane, int off) {  // a 5-bit block: nibbles, then the high plane
    nibbles(plane, 0);
    for (int e = 0; e < 16; ++e) {
      const uint8_t h = plane[256 + 4 * j + e % 4];
      o.q[e] = static_cast<int8_t>(o.q[e] + (((h >> (e / 4)) & 1) << 4) - off);
      o.q[e + 16] = static_cast<int8_t>(o.q[e + 16] + (((h >> (4 + e / 4)) & 1) << 4) - off);
    }
  };
  o.m = 0.0f;
  switch (t) {
    case GgmlType::Q5_0:
      fifth(g, 16);
      o.d = half(g + 320, j);
      return;
    case GgmlType::Q5_1:
      fifth(g, 0);
      o.d = half(g + 320, j);
      o.m = half(g + 352, j);
      return;
    case GgmlType::Q5_K: {
      const uint8_t* blk = g + 64 + 352 * s;
      fifth(blk, 0);
      o.d = half(g, j) * static_cast<float>(blk[320 + j]);
      o.m = -(half(g + 32, j) * static_cast<float>(blk[336 + j]));
      return;
    }
    case GgmlType::Q4_0:
      nibbles(g, 8);
      o.d = half(g + 256, j);
      return;
    case GgmlType::Q4_1:
      nibbles(g, 0);
      o.d = half(g + 256, j);
      o.m = half(g + 288, j);
      return;
    case GgmlType::Q8_0:
      for (int e = 0; e < QK; ++e) o.q[e] = static_cast<int8_t>(g[((e / 4) * kG + j) * 4 + e % 4]);
      o.d = half(g + 512, j);
      return;
    case GgmlType::Q4_K: {
      const uint8_t* blk = g + 64 + 288 * s;
      nibbles(blk, 0);
      o.d = half(g, j) * static_cast<float>(blk[256 + j]);
      o.m = -(half(g + 32, j) * static_cast<float>(blk[272 + j]));
      return;
    }
    default: {  // Q6_K
      const uint8_t* blk = g + 32 + 416 * s;
      for (int e = 0; e < 16; ++e) {
        const int m = e / 4, i = e % 4;
        const uint8_t v = blk[(m * kG + j) * 4 + i];
        const uint8_t h = static_cast<uint8_t>(blk[256 + 64 * (m / 2) + 4 * j + i] >> (4 * (m % 2)));
        o.q[e] = static_cast<int8_t>(((v & 0x0F) | ((h & 3) << 4)) - 32);
        o.q[e + 16] = static_cast<int8_t>(((v >> 4) | (((h >> 2) & 3) << 4)) - 32);
      }
      o.sc_lo = static_cast<int8_t>(blk[384 + j]);
      o.sc_hi = static_cast<int8_t>(blk[400 + j]);
      o.d = half(g, j);
      return;
    }
  }
}

void check_packed_type(GgmlType t, const char* what) {
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K: return;
    default:
    throw std::invalid_argument(std::string(what) + ": type has no packed layout");
  }
}

}  // namespace

size_t packed_row_bytes(GgmlType t, int64_t cols) {
  check_packed_type(t, "packed_row_bytes");
  return static_cast<size_t>(cols / group_unit_cols(t) * group_unit_bytes(t) / kG);
}

size_t packed_bytes(GgmlType t, int64_t rows, int64_t cols) {
  return packed_row_bytes(t, cols) * static_cast<size_t>((rows + kG - 1) / kG * kG);
}

void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols) {
  check_packed_type(t, "pack_rows");
  if (cols % group_unit_cols(t) != 0) throw std::invalid_argument("pack_rows: row length not a whole number of blocks");
  const auto* s = static_cast<const uint8_t*>(src);
  auto* o = static_cast<uint8_t*>(dst);
  const size_t rb = row_bytes(traits(t), cols), gb = packed_row_bytes(t, cols) * kG;
  std::memset(o, 0, packed_bytes(t, rows, cols));  // padding rows: zero weights, zero scales
  for (int64_t r = 0; r < rows; ++r) pack_group_row(t, s + r * rb, o + (r / kG) * gb, r % kG, cols);
}

void dequantize_packed_row(GgmlType t, const void* base, int64_t row, float* dst, int64_t cols) {
  check_packed_type(t, "dequantize_packed_row");
  const uint8_t* group = static_cast<const uint8_t*>(base) + (row / kG) * kG * packed_row_bytes(t, cols);
  BlockInts blk;
  for (int64_t b = 0; b < cols / QK; ++b) {
    unpack_block(t, group, row % kG, b, blk);
    for (int e = 0; e < QK; ++e) {
      // Each type's GGUF dequantization, bit for bit: Q6_K as d sc q, the others as d q + m.
      dst[b * QK + e] = t == GgmlType::Q6_K ? blk.d * static_cast<float>(e < 16 ? blk.sc_lo : blk.sc_hi) * static_cast<float>(blk.q[e])
                                            : blk.d * static_cast<float>(blk.q[e]) + blk.m;
    }
  }
}

void quantize_act_q8(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  quantize_act_q8_at(active_isa(), x, cols, f, dst);
}

namespace {

// The Q8_K rounding (the reference quantizer, bit for bit) in the ActQ8 layout; cols a
// multiple of 256. One implementation for every level.
void quantize_act_q8_k(const float* x, int64_t cols, bool q6, uint8_t* dst) {
  const int64_t nb = cols / QK;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* corr = reinterpret_cast<int32_t*>(dst + cols);
  auto* dl = reinterpret_cast<float*>(dst + cols + 4 * nb);
  auto* sl = dl + nb;
  auto* corr2 = reinterpret_cast<int32_t*>(sl + nb);
  const TypeTraits& q8k = traits(GgmlType::Q8_K);
  BlockQ8_K blk;
  for (int64_t sb = 0; sb < cols / QK_K; ++sb) {
    q8k.quantize(x + sb * QK_K, &blk, QK_K);
    std::memcpy(q + sb * QK_K, blk.qs, QK_K);
    for (int j = 0; j < QK_K / QK; ++j) {
      const int64_t b = sb * (QK_K / QK) + j;
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
  const int64_t nb = cols / QK;
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
    std::memcpy(q + b * QK, blk.qs, QK);
    int32_t sum = 0;
    for (int e = 0; e < QK; ++e) sum += blk.qs[e];
    corr[b] = -f.bias * sum;
    dl[b] = fp16_to_fp32(blk.d);
    sl[b] = f.s_fp16 ? fp16_to_fp32(fp32_to_fp16(amax / 127.0f * static_cast<float>(sum))) : dl[b] * static_cast<float>(sum);
  }
}

namespace {

// Portable kernel on the packed layouts: the twin of the SIMD kernels (the same integer block
// products and float operations in the same order, so the same bits) and the fallback when
// the active level is lowered after packing.
template <GgmlType kType>
void gemm_scalar(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols, const uint8_t* act,
                 int64_t n_tok, float* y, int64_t ldy) {
  constexpr bool kMin = kType == GgmlType::Q4_1 || kType == GgmlType::Q5_1 || kType == GgmlType::Q4_K || kType == GgmlType::Q5_K;
  const int64_t nb = cols / QK;
  std::vector<BlockInts> blocks(static_cast<size_t>(nb));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* group = w + (r / kG) * kG * static_cast<int64_t>(row_bytes);
    for (int64_t b = 0; b < nb; ++b) unpack_block(kType, group, r % kG, b, blocks[static_cast<size_t>(b)]);
    for (int64_t t = 0; t < n_tok; ++t) {
      const uint8_t* a = act + t * static_cast<int64_t>(act_q8_bytes(cols));
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      const auto* dl = reinterpret_cast<const float*>(a + cols + 4 * nb);
      const float* sl = dl + nb;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const BlockInts& blk = blocks[static_cast<size_t>(b)];
        int32_t dot[2] = {0, 0};
        for (int e = 0; e < QK; ++e) dot[e / 16] += blk.q[e] * aq[b * QK + e];
        const int32_t i = kType == GgmlType::Q6_K ? dot[0] * blk.sc_lo + dot[1] * blk.sc_hi : dot[0] + dot[1];
        acc = std::fma(static_cast<float>(i), blk.d * dl[b], acc);
        if constexpr (kMin) acc = std::fma(blk.m, sl[b], acc);
      }
      y[t * ldy + (r - r0)] = acc;
    }
  }
}

}  // namespace

PackedGemmFn packed_gemm(GgmlType t, Isa isa) {
  switch (isa) {
    case Isa::Avx512: return packed_gemm_avx512(t);
    case Isa::Avx2: return packed_gemm_avx2(t);
    case Isa::Scalar:
      if (t == GgmlType::Q4_0) return &gemm_scalar<GgmlType::Q4_0>;
      if (t == GgmlType::Q4_1) return &gemm_scalar<GgmlType::Q4_1>;
      if (t == GgmlType::Q4_K) return &gemm_scalar<GgmlType::Q4_K>;
      if (t == GgmlType::Q6_K) return &gemm_scalar<GgmlType::Q6_K>;
      if (t == GgmlType::Q8_0) return &gemm_scalar<GgmlType::Q8_0>;
      if (t == GgmlType::Q5_0) return &gemm_scalar<GgmlType::Q5_0>;
      if (t == GgmlType::Q5_1) return &gemm_scalar<GgmlType::Q5_1>;
      if (t == GgmlType::Q5_K) return &gemm_scalar<GgmlType::Q5_K>;
      return nullptr;
  }
  return nullptr;
}

}  // namespace ranklm::kern
