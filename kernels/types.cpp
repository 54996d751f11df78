#include "types.h"

#include "cpu.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fp16.h"

namespace ranklm::kern {

namespace {

std::vector<float> build_fp16_table() {
  std::vector<float> t(65536);
  for (uint32_t i = 0; i < 65536; ++i) t[i] = fp16_to_fp32_compute(static_cast<uint16_t>(i));
  return t;
}

}  // namespace

static const std::vector<float> k_fp16_table = build_fp16_table();
const float* const g_fp16_table = k_fp16_table.data();

namespace {

// ---------------------------------------------------------------------------------------------
// Every quantized block is described by one "unpacked" form: integer quants q[i] grouped in
// nsub sub-blocks of `sub` elements, each with an integer scale sc[j] and min mn[j], and two
// float super-scales:   x[i] = (d * sc[j]) * q[i] - (dmin * mn[j]),   j = i / sub.
// Dequantization and the integer dot products are both written against this form, so the
// bit layouts are decoded in exactly one place per type.
// ---------------------------------------------------------------------------------------------
struct Unpacked {
  int8_t q[QK_K];
  int32_t sc[QK_K / 16];
  int32_t mn[QK_K / 16];
  float d;
  float dmin;
  int nsub;
  int sub;
};

inline void legacy_header(Unpacked& u, float d, float m) {
  u.d = d;
  u.dmin = -m;  // x = d*q + m
  u.nsub = 1;
  u.sub = QK;
  u.sc[0] = 1;
  u.mn[0] = 1;
}

void unpack_q4_0(const BlockQ4_0& b, Unpacked& u) {
  legacy_header(u, fp16_to_fp32(b.d), 0.0f);
  for (int j = 0; j < QK / 2; ++j) {
    u.q[j] = static_cast<int8_t>((b.qs[j] & 0x0F) - 8);
    u.q[j + QK / 2] = static_cast<int8_t>((b.qs[j] >> 4) - 8);
  }
}

void unpack_q4_1(const BlockQ4_1& b, Unpacked& u) {
  legacy_header(u, fp16_to_fp32(b.d), fp16_to_fp32(b.m));
  for (int j = 0; j < QK / 2; ++j) {
    u.q[j] = static_cast<int8_t>(b.qs[j] & 0x0F);
    u.q[j + QK / 2] = static_cast<int8_t>(b.qs[j] >> 4);
  }
}

template <typename B>
void unpack_q5(const B& b, Unpacked& u, int offset) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < QK / 2; ++j) {
    const int h0 = ((qh >> j) << 4) & 0x10;
    const int h1 = (qh >> (j + 12)) & 0x10;
    u.q[j] = static_cast<int8_t>(((b.qs[j] & 0x0F) | h0) - offset);
    u.q[j + QK / 2] = static_cast<int8_t>(((b.qs[j] >> 4) | h1) - offset);
  }
}

void unpack_q5_0(const BlockQ5_0& b, Unpacked& u) {
  legacy_header(u, fp16_to_fp32(b.d), 0.0f);
  unpack_q5(b, u, 16);
}

void unpack_q5_1(const BlockQ5_1& b, Unpacked& u) {
  legacy_header(u, fp16_to_fp32(b.d), fp16_to_fp32(b.m));
  unpack_q5(b, u, 0);
}

void unpack_q8_0(const BlockQ8_0& b, Unpacked& u) {
  legacy_header(u, fp16_to_fp32(b.d), 0.0f);
  std::memcpy(u.q, b.qs, QK);
}

void unpack_q8_1(const BlockQ8_1& b, Unpacked& u) {
  legacy_header(u, fp16_to_fp32(b.d), 0.0f);
  std::memcpy(u.q, b.qs, QK);
}

void unpack_q8_k(const BlockQ8_K& b, Unpacked& u) {
  u.d = b.d;
  u.dmin = 0.0f;
  u.nsub = 1;
  u.sub = QK_K;
  u.sc[0] = 1;
  u.mn[0] = 0;
  std::memcpy(u.q, b.qs, QK_K);
}

void unpack_q2_k(const BlockQ2_K& b, Unpacked& u) {
  u.d = fp16_to_fp32(b.d);
  u.dmin = fp16_to_fp32(b.dmin);
  u.nsub = 16;
  u.sub = 16;
  for (int j = 0; j < 16; ++j) {
    u.sc[j] = b.scales[j] & 0x0F;
    u.mn[j] = b.scales[j] >> 4;
  }
  // Two halves of 128; each byte of a 32-byte group holds four 2-bit quants at shifts 0,2,4,6.
  int8_t* y = u.q;
  for (int n = 0; n < 2; ++n) {
    const uint8_t* q = b.qs + 32 * n;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int l = 0; l < 32; ++l) *y++ = static_cast<int8_t>((q[l] >> shift) & 3);
    }
  }
}

void unpack_q3_k(const BlockQ3_K& b, Unpacked& u) {
  u.d = fp16_to_fp32(b.d);
  u.dmin = 0.0f;
  u.nsub = 16;
  u.sub = 16;
  // 16 signed 6-bit scales: low 4 bits in scales[0..7] (two per byte), high 2 bits in scales[8..11].
  for (int j = 0; j < 16; ++j) {
    const int lo = (j < 8) ? (b.scales[j] & 0x0F) : (b.scales[j - 8] >> 4);
    const int hi = (b.scales[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    u.sc[j] = (lo | (hi << 4)) - 32;
    u.mn[j] = 0;
  }
  int8_t* y = u.q;
  uint8_t m = 1;
  for (int n = 0; n < 2; ++n) {
    const uint8_t* q = b.qs + 32 * n;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4);
        *y++ = static_cast<int8_t>(v);
      }
      m = static_cast<uint8_t>(m << 1);
    }
  }
}

void unpack_q4_k(const BlockQ4_K& b, Unpacked& u) {
  u.d = fp16_to_fp32(b.d);
  u.dmin = fp16_to_fp32(b.dmin);
  u.nsub = 8;
  u.sub = 32;
  for (int j = 0; j < 8; ++j) scale_min_k4(j, b.scales, u.sc[j], u.mn[j]);
  for (int n = 0; n < 4; ++n) {
    const uint8_t* q = b.qs + 32 * n;
    for (int l = 0; l < 32; ++l) {
      u.q[64 * n + l] = static_cast<int8_t>(q[l] & 0x0F);
      u.q[64 * n + 32 + l] = static_cast<int8_t>(q[l] >> 4);
    }
  }
}

void unpack_q5_k(const BlockQ5_K& b, Unpacked& u) {
  u.d = fp16_to_fp32(b.d);
  u.dmin = fp16_to_fp32(b.dmin);
  u.nsub = 8;
  u.sub = 32;
  for (int j = 0; j < 8; ++j) scale_min_k4(j, b.scales, u.sc[j], u.mn[j]);
  for (int n = 0; n < 4; ++n) {
    const uint8_t* q = b.qs + 32 * n;
    const uint8_t u1 = static_cast<uint8_t>(1u << (2 * n));
    const uint8_t u2 = static_cast<uint8_t>(2u << (2 * n));
    for (int l = 0; l < 32; ++l) {
      u.q[64 * n + l] = static_cast<int8_t>((q[l] & 0x0F) + ((b.qh[l] & u1) ? 16 : 0));
      u.q[64 * n + 32 + l] = static_cast<int8_t>((q[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0));
    }
  }
}

void unpack_q6_k(const BlockQ6_K& b, Unpacked& u) {
  u.d = fp16_to_fp32(b.d);
  u.dmin = 0.0f;
  u.nsub = 16;
  u.sub = 16;
  for (int j = 0; j < 16; ++j) {
    u.sc[j] = b.scales[j];
    u.mn[j] = 0;
  }
  for (int n = 0; n < 2; ++n) {
    const uint8_t* ql = b.ql + 64 * n;
    const uint8_t* qh = b.qh + 32 * n;
    int8_t* y = u.q + 128 * n;
    for (int l = 0; l < 32; ++l) {
      y[l + 0] = static_cast<int8_t>(((ql[l + 0] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32);
      y[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
      y[l + 64] = static_cast<int8_t>(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      y[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

template <typename B, void (*Unpack)(const B&, Unpacked&)>
void dequantize_blocks(const void* src, float* dst, int64_t n) {
  const B* blocks = static_cast<const B*>(src);
  Unpacked u;
  Unpack(blocks[0], u);  // learn the block geometry
  const int64_t per_block = static_cast<int64_t>(u.nsub) * u.sub;
  for (int64_t b = 0; b < n / per_block; ++b) {
    Unpack(blocks[b], u);
    for (int j = 0; j < u.nsub; ++j) {
      const float d1 = u.d * static_cast<float>(u.sc[j]);
      const float m1 = u.dmin * static_cast<float>(u.mn[j]);
      for (int i = 0; i < u.sub; ++i) *dst++ = d1 * static_cast<float>(u.q[j * u.sub + i]) - m1;
    }
  }
}

// Activation blocks: Q8_0 and Q8_1 (fp16 scale) and Q8_K (fp32 scale), all with int8 quants.
inline float act_scale(const BlockQ8_0& b) { return fp16_to_fp32(b.d); }
inline float act_scale(const BlockQ8_1& b) { return fp16_to_fp32(b.d); }
inline float act_scale(const BlockQ8_K& b) { return b.d; }

// Integer dot product of a quantized weight row with a Q8 activation row:
//   sum_b  d_w*d_a * sum_j sc_j * (q . a)_j  -  dmin_w*d_a * sum_j mn_j * (sum a)_j
template <typename B, void (*Unpack)(const B&, Unpacked&), typename A>
float vec_dot_quant(int64_t n, const void* w, const void* a) {
  const B* wb = static_cast<const B*>(w);
  const A* ab = static_cast<const A*>(a);
  constexpr int64_t per_block = sizeof(A::qs);
  float sum = 0.0f;
  Unpacked u;
  for (int64_t b = 0; b < n / per_block; ++b) {
    Unpack(wb[b], u);
    const int8_t* aq = ab[b].qs;
    int32_t isum = 0;
    int32_t msum = 0;
    for (int j = 0; j < u.nsub; ++j) {
      int32_t dot = 0;
      int32_t asum = 0;
      const int8_t* qj = u.q + j * u.sub;
      const int8_t* aj = aq + j * u.sub;
      for (int i = 0; i < u.sub; ++i) {
        dot += static_cast<int32_t>(qj[i]) * aj[i];
        asum += aj[i];
      }
      isum += dot * u.sc[j];
      msum += asum * u.mn[j];
    }
    const float da = act_scale(ab[b]);
    if constexpr (std::is_same_v<A, BlockQ8_1>) {
      // Q8_1 carries s = d_a * sum(a) rounded to fp16 (as llama.cpp pairs it with Q4_1 and
      // Q5_1); the min term uses that stored value. Legacy blocks have one sub-block, mn = 1.
      sum += (u.d * da) * static_cast<float>(isum) - u.dmin * fp16_to_fp32(ab[b].s) * static_cast<float>(u.mn[0]);
    } else {
      sum += (u.d * da) * static_cast<float>(isum) - (u.dmin * da) * static_cast<float>(msum);
    }
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Float types
// ---------------------------------------------------------------------------------------------
void dequantize_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, n * 4); }
void dequantize_f16(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
}
void dequantize_bf16(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
}
void quantize_f32(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, n * 4); }
void quantize_f16(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
}
void quantize_bf16(const float* src, void* dst, int64_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
}

// Float weight rows against activations of the same type (F16 and BF16 activations are rounded
// as llama.cpp rounds them); products summed in float with 8 independent partial sums so the compiler can
// vectorize without reassociating.
template <float (*LoadW)(const void*, int64_t), float (*LoadA)(const void*, int64_t)>
float vec_dot_float(int64_t n, const void* w, const void* a) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += LoadW(w, i + k) * LoadA(a, i + k);
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += LoadW(w, i) * LoadA(a, i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}
inline float load_f32(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
inline float load_f16(const void* p, int64_t i) { return fp16_to_fp32(static_cast<const uint16_t*>(p)[i]); }
inline float load_bf16(const void* p, int64_t i) { return bf16_to_fp32(static_cast<const uint16_t*>(p)[i]); }

// ---------------------------------------------------------------------------------------------
// Reference quantizers for the activation types (the same arithmetic as ggml's *_ref versions,
// so activations round exactly as in llama.cpp).
// ---------------------------------------------------------------------------------------------
// Rounds one 32-element block to int8 with inverse scale id; returns the sum of the quants.
int32_t round_block_q8(const float* x, float id, int8_t* qs) {
  int32_t sum = 0;
  for (int j = 0; j < QK; ++j) {
    qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
    sum += qs[j];
  }
  return sum;
}

float block_amax(const float* x) {
  float amax = 0.0f;
  for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

void quantize_q8_0(const float* x, void* dst, int64_t n) {
  BlockQ8_0* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / QK; ++b) {
    const float d = block_amax(x + b * QK) / 127.0f;
    y[b].d = fp32_to_fp16(d);
    round_block_q8(x + b * QK, d != 0.0f ? 1.0f / d : 0.0f, y[b].qs);
  }
}

// Q8_1: as Q8_0, plus s = d * sum(q) in fp16 for the min term of Q4_1/Q5_1 products.
void quantize_q8_1(const float* x, void* dst, int64_t n) {
  BlockQ8_1* y = static_cast<BlockQ8_1*>(dst);
  for (int64_t b = 0; b < n / QK; ++b) {
    const float amax = block_amax(x + b * QK);
    const float d = amax / 127.0f;
    y[b].d = fp32_to_fp16(d);
    const int32_t sum = round_block_q8(x + b * QK, amax != 0.0f ? 127.0f / amax : 0.0f, y[b].qs);
    y[b].s = fp32_to_fp16(d * static_cast<float>(sum));
  }
}

void quantize_q8_k(const float* x, void* dst, int64_t n) {
  BlockQ8_K* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float* xb = x + b * QK_K;
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < QK_K; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&y[b], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * xb[j]));
      y[b].qs[j] = static_cast<int8_t>(std::min(127, v));
    }
    for (int j = 0; j < QK_K / 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += y[b].qs[16 * j + i];
      y[b].bsums[j] = static_cast<int16_t>(s);
    }
    y[b].d = 1.0f / iscale;
  }
}

#define RL_QUANT_ROW(T, BLOCK, UNPACK, NB, ACT, ACTBLOCK, QUANT)                                  \
  TypeTraits {                                                                                    \
    GgmlType::T, #T, NB, sizeof(BLOCK), true, &dequantize_blocks<BLOCK, UNPACK>, QUANT,           \
        GgmlType::ACT, &vec_dot_quant<BLOCK, UNPACK, ACTBLOCK>                                    \
  }

#define RL_KNOWN_ROW(T, NAME, NB, SIZE) \
  TypeTraits { GgmlType::T, NAME, NB, SIZE, false, nullptr, nullptr, GgmlType::T, nullptr }

const std::array<TypeTraits, 32> k_table = {{
    {GgmlType::F32, "F32", 1, 4, true, &dequantize_f32, &quantize_f32, GgmlType::F32, &vec_dot_float<load_f32, load_f32>},
    {GgmlType::F16, "F16", 1, 2, true, &dequantize_f16, &quantize_f16, GgmlType::F16, &vec_dot_float<load_f16, load_f16>},
    {GgmlType::BF16, "BF16", 1, 2, true, &dequantize_bf16, &quantize_bf16, GgmlType::BF16, &vec_dot_float<load_bf16, load_bf16>},
    RL_QUANT_ROW(Q4_0, BlockQ4_0, unpack_q4_0, QK, Q8_0, BlockQ8_0, nullptr),
    RL_QUANT_ROW(Q4_1, BlockQ4_1, unpack_q4_1, QK, Q8_1, BlockQ8_1, nullptr),
    RL_QUANT_ROW(Q5_0, BlockQ5_0, unpack_q5_0, QK, Q8_0, BlockQ8_0, nullptr),
    RL_QUANT_ROW(Q5_1, BlockQ5_1, unpack_q5_1, QK, Q8_1, BlockQ8_1, nullptr),
    RL_QUANT_ROW(Q8_0, BlockQ8_0, unpack_q8_0, QK, Q8_0, BlockQ8_0, &quantize_q8_0),
    RL_QUANT_ROW(Q2_K, BlockQ2_K, unpack_q2_k, QK_K, Q8_K, BlockQ8_K, nullptr),
    RL_QUANT_ROW(Q3_K, BlockQ3_K, unpack_q3_k, QK_K, Q8_K, BlockQ8_K, nullptr),
    RL_QUANT_ROW(Q4_K, BlockQ4_K, unpack_q4_k, QK_K, Q8_K, BlockQ8_K, nullptr),
    RL_QUANT_ROW(Q5_K, BlockQ5_K, unpack_q5_k, QK_K, Q8_K, BlockQ8_K, nullptr),
    RL_QUANT_ROW(Q6_K, BlockQ6_K, unpack_q6_k, QK_K, Q8_K, BlockQ8_K, nullptr),
    RL_QUANT_ROW(Q8_K, BlockQ8_K, unpack_q8_k, QK_K, Q8_K, BlockQ8_K, &quantize_q8_k),
    RL_QUANT_ROW(Q8_1, BlockQ8_1, unpack_q8_1, QK, Q8_1, BlockQ8_1, &quantize_q8_1),
    // Recognised so files holding them parse and report clearly; no kernels yet.
    RL_KNOWN_ROW(IQ2_XXS, "IQ2_XXS", 256, 66),
    RL_KNOWN_ROW(IQ2_XS, "IQ2_XS", 256, 74),
    RL_KNOWN_ROW(IQ3_XXS, "IQ3_XXS", 256, 98),
    RL_KNOWN_ROW(IQ1_S, "IQ1_S", 256, 50),
    RL_KNOWN_ROW(IQ4_NL, "IQ4_NL", 32, 18),
    RL_KNOWN_ROW(IQ3_S, "IQ3_S", 256, 110),
    RL_KNOWN_ROW(IQ2_S, "IQ2_S", 256, 82),
    RL_KNOWN_ROW(IQ4_XS, "IQ4_XS", 256, 136),
    RL_KNOWN_ROW(I8, "I8", 1, 1),
    RL_KNOWN_ROW(I16, "I16", 1, 2),
    RL_KNOWN_ROW(I32, "I32", 1, 4),
    RL_KNOWN_ROW(I64, "I64", 1, 8),
    RL_KNOWN_ROW(F64, "F64", 1, 8),
    RL_KNOWN_ROW(IQ1_M, "IQ1_M", 256, 56),
    RL_KNOWN_ROW(TQ1_0, "TQ1_0", 256, 54),
    RL_KNOWN_ROW(TQ2_0, "TQ2_0", 256, 66),
    RL_KNOWN_ROW(MXFP4, "MXFP4", 32, 17),
}};

#undef RL_QUANT_ROW
#undef RL_KNOWN_ROW

}  // namespace

const TypeTraits* find_type(uint32_t id) {
  for (const auto& t : k_table) {
    if (static_cast<uint32_t>(t.type) == id) return &t;
  }
  return nullptr;
}

const TypeTraits& traits(GgmlType t) { return *find_type(static_cast<uint32_t>(t)); }

std::string_view type_name(GgmlType t) {
  const TypeTraits* tt = find_type(static_cast<uint32_t>(t));
  return tt ? tt->name : "unknown";
}

std::optional<GgmlType> type_from_name(std::string_view name) {
  for (const auto& t : k_table) {
    std::string_view n = t.name;
    if (n.size() == name.size() &&
        std::equal(n.begin(), n.end(), name.begin(),
                   [](char a, char b) { return std::toupper(a) == std::toupper(b); })) {
      return t.type;
    }
  }
  return std::nullopt;
}

double vec_dot_reference(GgmlType wtype, int64_t n, const void* w, const void* a) {
  const TypeTraits& wt = traits(wtype);
  const TypeTraits& at = traits(wt.vec_dot_type);
  std::vector<float> wf(n), af(n);
  wt.dequantize(w, wf.data(), n);
  at.dequantize(a, af.data(), n);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(wf[i]) * static_cast<double>(af[i]);
  if (at.type == GgmlType::Q8_1 && (wtype == GgmlType::Q4_1 || wtype == GgmlType::Q5_1)) {
    // The defined product uses the activation block's stored s (fp16 of d * sum(q)) for the min
    // term m * sum(a): swap the exact sum for it, block by block.
    const auto* ab = static_cast<const BlockQ8_1*>(a);
    for (int64_t b = 0; b < n / QK; ++b) {
      const float m = wtype == GgmlType::Q4_1 ? fp16_to_fp32(static_cast<const BlockQ4_1*>(w)[b].m)
                                              : fp16_to_fp32(static_cast<const BlockQ5_1*>(w)[b].m);
      double exact = 0.0;
      for (int i = 0; i < QK; ++i) exact += af[b * QK + i];
      s += static_cast<double>(m) * (static_cast<double>(fp16_to_fp32(ab[b].s)) - exact);
    }
  }
  return s;
}

VecDotFn fast_vec_dot(GgmlType t) {
  if (active_isa() >= Isa::Avx2) {
    if (VecDotFn f = vec_dot_avx2(t)) return f;
    if (VecDotFn f = vec_dot_float_avx2(t)) return f;
  }
  return traits(t).vec_dot;
}

void scale_min_k4(int j, const uint8_t* q, int32_t& d, int32_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace ranklm::kern
