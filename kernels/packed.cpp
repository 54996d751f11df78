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
    case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, false, true, 0, true};
    case GgmlType::Q6_K: return {0, false, true, 32};
    case GgmlType::Q3_K: return {0, false, true, 4};
    case GgmlType::Q2_K: return {0, false, true, -1};
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
    case GgmlType::F32: return 4 * 16 * 4;  // float types: units of 4 columns
    case GgmlType::F16: case GgmlType::BF16: return 4 * 16 * 2;
    case GgmlType::Q2_K: return 1344;
    case GgmlType::Q3_K: return 1824;
    case GgmlType::Q4_K: return 2368;
    case GgmlType::Q5_K: return 2880;
    case GgmlType::Q6_K: return 3360;
    default: throw std::invalid_argument("packed layout: type has no packed layout");
  }
}
bool float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

int64_t group_unit_cols(GgmlType t) {
  if (float_type(t)) return 4;
  return t == GgmlType::Q2_K || t == GgmlType::Q3_K || t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K
             ? QK_K
             : QK;
}

// Row j's byte for elements (4m + i, 16 + 4m + i) in a nibble plane.
inline uint8_t& nibble_byte(uint8_t* plane, int64_t j, int m, int i) { return plane[(m * kG + j) * 4 + i]; }

// Row j's bits of a 1-bit plane (64 bytes; v[e] 0 or 1): byte 4j + i, bit m = element 4m + i,
// bit 4 + m = element 16 + 4m + i.
void place_1bit(uint8_t* plane, int64_t j, const uint8_t (&v)[QK]) {
  for (int i = 0; i < 4; ++i) {
    uint8_t b = 0;
    for (int m = 0; m < 4; ++m) b = static_cast<uint8_t>(b | (v[4 * m + i] << m) | (v[16 + 4 * m + i] << (4 + m)));
    plane[4 * j + i] = b;
  }
}

// Row j's values of a 2-bit plane (two 64-byte vectors; v[e] 0..3): in vector p, byte 4j + i
// holds, from bit 0, elements 4m+i, 16+4m+i, 4(m+1)+i, 16+4(m+1)+i, m = 2p.
void place_2bit(uint8_t* plane, int64_t j, const uint8_t (&v)[QK]) {
  for (int p = 0; p < 2; ++p) {
    for (int i = 0; i < 4; ++i) {
      uint8_t b = 0;
      for (int h = 0; h < 2; ++h) {
        const int m = 2 * p + h;
        b = static_cast<uint8_t>(b | ((v[4 * m + i] | (v[16 + 4 * m + i] << 2)) << (4 * h)));
      }
      plane[64 * p + 4 * j + i] = b;
    }
  }
}

// Row j of a block of values 0..(2^bits - 1) as a nibble plane of the low 4 bits and, above 4
// bits, the high bits in a 1-bit (5-bit values) or 2-bit (6-bit) plane right after it.
void place_bits(uint8_t* plane, int64_t j, const uint8_t (&v)[QK], int bits) {
  uint8_t high[QK];
  for (int m = 0; m < 4; ++m) {
    for (int i = 0; i < 4; ++i) {
      nibble_byte(plane, j, m, i) = static_cast<uint8_t>((v[4 * m + i] & 0x0F) | ((v[16 + 4 * m + i] & 0x0F) << 4));
    }
  }
  for (int e = 0; e < QK; ++e) high[e] = static_cast<uint8_t>(v[e] >> 4);
  if (bits == 5) place_1bit(plane + 256, j, high);
  if (bits == 6) place_2bit(plane + 256, j, high);
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
  if (float_type(t)) {  // column c of the 16 rows at c * 16 values: row j's value at j
    const int64_t es = t == GgmlType::F32 ? 4 : 2;
    for (int64_t c = 0; c < cols; ++c) std::memcpy(group + (c * kG + j) * es, src + c * es, static_cast<size_t>(es));
    return;
  }
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
      place_bits(g, j, v, 5);
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
        place_bits(blk, j, v, 5);
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
    } else if (t == GgmlType::Q3_K) {
      BlockQ3_K sb;
      std::memcpy(&sb, src + u * static_cast<int64_t>(sizeof sb), sizeof sb);
      std::memcpy(g + 2 * j, &sb.d, 2);
      for (int s = 0; s < 8; ++s) {
        uint8_t* blk = g + 32 + 224 * s;
        uint8_t lo[QK], hi[QK];
        for (int e = 0; e < QK; ++e) {
          const int v = 32 * s + e, n = v / 128, sh = (v % 128) / 32, l = v % 32;
          lo[e] = static_cast<uint8_t>((sb.qs[32 * n + l] >> (2 * sh)) & 3);
          hi[e] = static_cast<uint8_t>((sb.hmask[l] >> (4 * n + sh)) & 1);  // set: q = lo, clear: lo - 4
        }
        place_2bit(blk, j, lo);
        place_1bit(blk + 128, j, hi);
        for (int h = 0; h < 2; ++h) {
          const int k = 2 * s + h;  // the 6-bit scale of elements 16k..16k+15
          const int sl = k < 8 ? sb.scales[k] & 0x0F : sb.scales[k - 8] >> 4;
          const int sh = (sb.scales[8 + k % 4] >> (2 * (k / 4))) & 3;
          blk[192 + 16 * h + j] = static_cast<uint8_t>(static_cast<int8_t>((sl | (sh << 4)) - 32));
        }
      }
    } else if (t == GgmlType::Q2_K) {
      BlockQ2_K sb;
      std::memcpy(&sb, src + u * static_cast<int64_t>(sizeof sb), sizeof sb);
      std::memcpy(g + 2 * j, &sb.d, 2);
      std::memcpy(g + 32 + 2 * j, &sb.dmin, 2);
      for (int s = 0; s < 8; ++s) {
        uint8_t* blk = g + 64 + 160 * s;
        uint8_t v[QK];
        for (int e = 0; e < QK; ++e) {
          const int x = 32 * s + e;
          v[e] = static_cast<uint8_t>((sb.qs[32 * (x / 128) + x % 32] >> (2 * ((x % 128) / 32))) & 3);
        }
        place_2bit(blk, j, v);
        blk[128 + j] = sb.scales[2 * s];       // scale | min << 4 of elements 0-15
        blk[144 + j] = sb.scales[2 * s + 1];   // and of 16-31
      }
    } else {  // Q6_K
      BlockQ6_K sb;
      std::memcpy(&sb, src + u * static_cast<int64_t>(sizeof sb), sizeof sb);
      std::memcpy(g + 2 * j, &sb.d, 2);
      for (int s = 0; s < 8; ++s) {
        uint8_t* blk = g + 32 + 416 * s;
        uint8_t v[QK];
        for (int e = 0; e < QK; ++e) v[e] = q6k_value(sb, 32 * s + e);
        place_bits(blk, j, v, 6);
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
  float d = 0.0f, m = 0.0f;  // Q2_K: m is -dmin
  int sc_lo = 1, sc_hi = 1;  // Q4_K, Q5_K: sc_lo is the block's 6-bit scale
  int mn_lo = 0, mn_hi = 0;  // Q2_K; Q4_K, Q5_K: mn_lo is the block's 6-bit min
  float ds = 0.0f, dm = 0.0f;  // K-quants: the super-block's d and -dmin
};

// Element e (0..31) of row j in a nibble plane, a 1-bit plane and a 2-bit plane (packed.h).
inline int nibble_at(const uint8_t* plane, int64_t j, int e) {
  const uint8_t v = plane[((e % 16 / 4) * kG + j) * 4 + e % 4];
  return e < 16 ? v & 0x0F : v >> 4;
}
inline int bit_at(const uint8_t* plane, int64_t j, int e) {
  return (plane[4 * j + e % 4] >> (e < 16 ? e / 4 : 4 + (e - 16) / 4)) & 1;
}
inline int two_bits_at(const uint8_t* plane, int64_t j, int e) {
  const int m = e % 16 / 4;
  const uint8_t v = static_cast<uint8_t>(plane[64 * (m / 2) + 4 * j + e % 4] >> (4 * (m % 2)));
  return (e < 16 ? v : v >> 2) & 3;
}

void unpack_block(GgmlType t, const uint8_t* group, int64_t j, int64_t b, BlockInts& o) {
  const int64_t per = group_unit_cols(t) / QK;  // blocks per unit
  const uint8_t* g = group + (b / per) * group_unit_bytes(t);
  const int64_t s = b % per;
  auto half = [](const uint8_t* p, int64_t k) {
    uint16_t h;
    std::memcpy(&h, p + 2 * k, 2);
    return fp16_to_fp32(h);
  };
  // The block's values from a nibble plane (and the high bits' plane after it), minus off.
  auto values = [&](const uint8_t* plane, int bits, int off) {
    for (int e = 0; e < QK; ++e) {
      const int high = bits == 5 ? bit_at(plane + 256, j, e) : bits == 6 ? two_bits_at(plane + 256, j, e) : 0;
      o.q[e] = static_cast<int8_t>((nibble_at(plane, j, e) | (high << 4)) - off);
    }
  };
  o.m = 0.0f;
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool five = t == GgmlType::Q5_0 || t == GgmlType::Q5_1, min = t == GgmlType::Q4_1 || t == GgmlType::Q5_1;
      values(g, five ? 5 : 4, min ? 0 : five ? 16 : 8);
      const uint8_t* sc = g + (five ? 320 : 256);
      o.d = half(sc, j);
      if (min) o.m = half(sc + 32, j);
      return;
    }
    case GgmlType::Q8_0:
      for (int e = 0; e < QK; ++e) o.q[e] = static_cast<int8_t>(g[((e / 4) * kG + j) * 4 + e % 4]);
      o.d = half(g + 512, j);
      return;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const uint8_t* blk = g + 64 + (five ? 352 : 288) * s;
      values(blk, five ? 5 : 4, 0);
      const uint8_t* sc = blk + (five ? 320 : 256);
      o.ds = half(g, j);
      o.dm = -half(g + 32, j);
      o.sc_lo = sc[j];
      o.mn_lo = sc[16 + j];
      o.d = o.ds * static_cast<float>(o.sc_lo);
      o.m = -(half(g + 32, j) * static_cast<float>(o.mn_lo));
      return;
    }
    case GgmlType::Q2_K: {
      const uint8_t* blk = g + 64 + 160 * s;
      for (int e = 0; e < QK; ++e) o.q[e] = static_cast<int8_t>(two_bits_at(blk, j, e));
      o.sc_lo = blk[128 + j] & 0x0F;
      o.sc_hi = blk[144 + j] & 0x0F;
      o.mn_lo = blk[128 + j] >> 4;
      o.mn_hi = blk[144 + j] >> 4;
      o.d = o.ds = half(g, j);
      o.m = o.dm = -half(g + 32, j);
      return;
    }
    case GgmlType::Q3_K: {
      const uint8_t* blk = g + 32 + 224 * s;
      for (int e = 0; e < QK; ++e) o.q[e] = static_cast<int8_t>((two_bits_at(blk, j, e) | (bit_at(blk + 128, j, e) << 2)) - 4);
      o.sc_lo = static_cast<int8_t>(blk[192 + j]);
      o.sc_hi = static_cast<int8_t>(blk[208 + j]);
      o.d = o.ds = half(g, j);
      return;
    }
    default: {  // Q6_K
      const uint8_t* blk = g + 32 + 416 * s;
      values(blk, 6, 32);
      o.sc_lo = static_cast<int8_t>(blk[384 + j]);
      o.sc_hi = static_cast<int8_t>(blk[400 + j]);
      o.d = o.ds = half(g, j);
      return;
    }
  }
}

void check_packed_type(GgmlType t, const char* what) {
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: return;
    default:
    throw std::invalid_argument(std::string(what) + ": type has no packed layout");
  }
}

}  // namespace

bool packable_cols(GgmlType t, int64_t cols) {
  check_packed_type(t, "packable_cols");
  return cols > 0 && cols % group_unit_cols(t) == 0;
}

size_t packed_row_bytes(GgmlType t, int64_t cols) {
  check_packed_type(t, "packed_row_bytes");
  return static_cast<size_t>(cols / group_unit_cols(t) * group_unit_bytes(t) / kG);
}

size_t packed_bytes(GgmlType t, int64_t rows, int64_t cols) {
  return packed_row_bytes(t, cols) * static_cast<size_t>((rows + kG - 1) / kG * kG);
}

void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols) {
  check_packed_type(t, "pack_rows");
  if (!packable_cols(t, cols)) throw std::invalid_argument("pack_rows: row length not a whole number of blocks");
  const auto* s = static_cast<const uint8_t*>(src);
  auto* o = static_cast<uint8_t*>(dst);
  const size_t rb = row_bytes(traits(t), cols), gb = packed_row_bytes(t, cols) * kG;
  std::memset(o, 0, packed_bytes(t, rows, cols));  // padding rows: zero weights, zero scales
  for (int64_t r = 0; r < rows; ++r) pack_group_row(t, s + r * rb, o + (r / kG) * gb, r % kG, cols);
}

void dequantize_packed_row(GgmlType t, const void* base, int64_t row, float* dst, int64_t cols) {
  check_packed_type(t, "dequantize_packed_row");
  const uint8_t* group = static_cast<const uint8_t*>(base) + (row / kG) * kG * packed_row_bytes(t, cols);
  if (float_type(t)) {
    const TypeTraits& ft = traits(t);
    const int64_t es = static_cast<int64_t>(ft.type_size);
    for (int64_t c = 0; c < cols; ++c) ft.dequantize(group + (c * kG + row % kG) * es, dst + c, 1);
    return;
  }
  BlockInts blk;
  for (int64_t b = 0; b < cols / QK; ++b) {
    unpack_block(t, group, row % kG, b, blk);
    const bool halves = t == GgmlType::Q2_K || t == GgmlType::Q3_K || t == GgmlType::Q6_K;
    for (int e = 0; e < QK; ++e) {
      // Each type's GGUF dequantization, bit for bit: (d sc) q - (dmin mn) with a scale (and for
      // Q2_K a min) per half block, or d q + m per block.
      const float q = static_cast<float>(blk.q[e]);
      if (!halves) {
        dst[b * QK + e] = blk.d * q + blk.m;
      } else {
        const float v = blk.d * static_cast<float>(e < 16 ? blk.sc_lo : blk.sc_hi) * q;
        dst[b * QK + e] = t == GgmlType::Q2_K ? v + blk.m * static_cast<float>(e < 16 ? blk.mn_lo : blk.mn_hi) : v;
      }
    }
  }
}

void quantize_act_q8(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  quantize_act_q8_at(active_isa(), x, cols, f, dst);
}

namespace {

// The Q8_K rounding (the reference quantizer, bit for bit) in the ActQ8 layout; cols a
// multiple of 256. One implementation for every level.
void quantize_act_q8_k(const float* x, int64_t cols, int half_bias, bool block_sums, uint8_t* dst) {
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
      corr[b] = block_sums ? blk.bsums[2 * j] + blk.bsums[2 * j + 1] : -half_bias * blk.bsums[2 * j];
      corr2[b] = block_sums ? 0 : -half_bias * blk.bsums[2 * j + 1];
      dl[b] = blk.d;
      const int32_t sum = blk.bsums[2 * j] + blk.bsums[2 * j + 1];
      sl[b] = block_sums ? static_cast<float>(sum) : blk.d * static_cast<float>(sum);
    }
  }
}

}  // namespace

void quantize_act_q8_at(Isa isa, const float* x, int64_t cols, ActQ8Format f, uint8_t* dst) {
  if (f.q8_k) return quantize_act_q8_k(x, cols, f.half_bias, f.block_sums, dst);
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
constexpr bool k_quant(GgmlType t) {
  return t == GgmlType::Q2_K || t == GgmlType::Q3_K || t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K;
}

// One (row, token) product of a K-quant row (its nb blocks decoded) with a Q8_K-rounded
// activation, super-block by super-block in integers (packed.h).
template <GgmlType kType>
float super_blocks_dot(const BlockInts* blocks, const int8_t* aq, const int32_t* corr, const int32_t* corr2,
                       const float* dl, int64_t nb) {
  constexpr bool kHalves = kType == GgmlType::Q2_K || kType == GgmlType::Q3_K || kType == GgmlType::Q6_K;
  constexpr bool kMins = kType == GgmlType::Q2_K || kType == GgmlType::Q4_K || kType == GgmlType::Q5_K;
  constexpr int64_t kPer = QK_K / QK;
  float acc = 0.0f;
  for (int64_t b0 = 0; b0 < nb; b0 += kPer) {
    int32_t isum = 0, msum = 0;
    for (int64_t b = b0; b < b0 + kPer; ++b) {
      const BlockInts& blk = blocks[b];
      int32_t dot[2] = {0, 0};
      for (int e = 0; e < QK; ++e) dot[e / 16] += blk.q[e] * aq[b * QK + e];
      if constexpr (kHalves) {
        isum += dot[0] * blk.sc_lo + dot[1] * blk.sc_hi;
      } else {
        isum += (dot[0] + dot[1]) * blk.sc_lo;
      }
      if constexpr (kType == GgmlType::Q2_K) msum += corr[b] * blk.mn_lo + corr2[b] * blk.mn_hi;
      if constexpr (kType == GgmlType::Q4_K || kType == GgmlType::Q5_K) msum += corr[b] * blk.mn_lo;
    }
    const BlockInts& head = blocks[b0];
    acc = std::fma(static_cast<float>(isum), head.ds * dl[b0], acc);
    if constexpr (kMins) acc = std::fma(static_cast<float>(msum), head.dm * dl[b0], acc);
  }
  return acc;
}

template <GgmlType kType>
void gemm_scalar(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols, const uint8_t* act,
                 int64_t n_tok, float* y, int64_t ldy) {
  constexpr bool kMin = kType == GgmlType::Q4_1 || kType == GgmlType::Q5_1;
  const int64_t nb = cols / QK;
  std::vector<BlockInts> blocks(static_cast<size_t>(nb));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* group = w + (r / kG) * kG * static_cast<int64_t>(row_bytes);
    for (int64_t b = 0; b < nb; ++b) unpack_block(kType, group, r % kG, b, blocks[static_cast<size_t>(b)]);
    for (int64_t t = 0; t < n_tok; ++t) {
      const uint8_t* a = act + t * static_cast<int64_t>(act_q8_bytes(cols));
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      const auto* corr = reinterpret_cast<const int32_t*>(a + cols);
      const auto* dl = reinterpret_cast<const float*>(a + cols + 4 * nb);
      const float* sl = dl + nb;
      const auto* corr2 = reinterpret_cast<const int32_t*>(sl + nb);
      float acc = 0.0f;
      if constexpr (k_quant(kType)) {
        acc = super_blocks_dot<kType>(blocks.data(), aq, corr, corr2, dl, nb);
      } else {
        for (int64_t b = 0; b < nb; ++b) {
          const BlockInts& blk = blocks[static_cast<size_t>(b)];
          int32_t dot = 0;
          for (int e = 0; e < QK; ++e) dot += blk.q[e] * aq[b * QK + e];
          acc = std::fma(static_cast<float>(dot), blk.d * dl[b], acc);
          if constexpr (kMin) acc = std::fma(blk.m, sl[b], acc);
        }
      }
      y[t * ldy + (r - r0)] = acc;
    }
  }
}

// Float weights: activations are float rows already rounded to the weight's activation type;
// each (row, token) sums column c into partial sum c % 4 with a fused multiply-add, then
// (p0 + p1) + (p2 + p3), as the SIMD kernels do lane by lane.
template <GgmlType kType>
void gemm_scalar_float(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1, int64_t cols, const uint8_t* act,
                       int64_t n_tok, float* y, int64_t ldy) {
  const TypeTraits& ft = traits(kType);
  const int64_t es = static_cast<int64_t>(ft.type_size);
  std::vector<float> wr(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* group = w + (r / kG) * kG * static_cast<int64_t>(row_bytes);
    for (int64_t c = 0; c < cols; ++c) ft.dequantize(group + (c * kG + r % kG) * es, &wr[static_cast<size_t>(c)], 1);
    for (int64_t t = 0; t < n_tok; ++t) {
      const float* x = reinterpret_cast<const float*>(act) + t * cols;
      float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t c = 0; c < cols; ++c) p[c % 4] = std::fma(wr[static_cast<size_t>(c)], x[c], p[c % 4]);
      y[t * ldy + (r - r0)] = (p[0] + p[1]) + (p[2] + p[3]);
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
      if (t == GgmlType::Q2_K) return &gemm_scalar<GgmlType::Q2_K>;
      if (t == GgmlType::Q3_K) return &gemm_scalar<GgmlType::Q3_K>;
      if (t == GgmlType::F32) return &gemm_scalar_float<GgmlType::F32>;
      if (t == GgmlType::F16) return &gemm_scalar_float<GgmlType::F16>;
      if (t == GgmlType::BF16) return &gemm_scalar_float<GgmlType::BF16>;
      return nullptr;
  }
  return nullptr;
}

}  // namespace ranklm::kern
