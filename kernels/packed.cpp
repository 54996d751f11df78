#include "packed.h"

#include <cstring>
#include <stdexcept>
#include <vector>

#include "fp16.h"

namespace ranklm::kern {

bool packable(GgmlType t, Isa isa) {
  // Packing pays only where a SIMD kernel reads the layout; the scalar twin is for tests and
  // for a level lowered after packing.
  return isa != Isa::Scalar && packed_gemm(t, isa) != nullptr;
}

int act_bias(GgmlType t) { return t == GgmlType::Q4_0 ? 8 : 128; }

namespace {

// Nibble e (0..31) of a GGUF Q4_0 block.
inline uint8_t q4_nibble(const BlockQ4_0& b, int e) {
  return e < 16 ? (b.qs[e] & 0x0F) : (b.qs[e - 16] >> 4);
}

void pack_q4_0_row(const BlockQ4_0* src, uint8_t* dst, int64_t nb) {
  const int64_t ng = nb / 4;
  uint8_t* qs = dst;
  for (int64_t g = 0; g < ng; ++g) {
    const BlockQ4_0* b = src + 4 * g;
    for (int j = 0; j < 64; ++j) {
      const int lo = j, hi = 64 + j;  // element indices within the group of 128
      qs[j] = static_cast<uint8_t>(q4_nibble(b[lo / 32], lo % 32) | (q4_nibble(b[hi / 32], hi % 32) << 4));
    }
    qs += 64;
  }
  for (int64_t b = 4 * ng; b < nb; ++b) {
    std::memcpy(qs, src[b].qs, 16);
    qs += 16;
  }
  uint16_t* d = reinterpret_cast<uint16_t*>(dst + nb * 16);
  for (int64_t b = 0; b < nb; ++b) std::memcpy(d + b, &src[b].d, 2);
}

void pack_q8_0_row(const BlockQ8_0* src, uint8_t* dst, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) std::memcpy(dst + b * 32, src[b].qs, 32);
  uint16_t* d = reinterpret_cast<uint16_t*>(dst + nb * 32);
  for (int64_t b = 0; b < nb; ++b) std::memcpy(d + b, &src[b].d, 2);
}

}  // namespace

void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols) {
  const int64_t nb = cols / QK;
  if (cols % QK != 0) throw std::invalid_argument("pack_rows: row length not a whole number of blocks");
  const auto* s = static_cast<const uint8_t*>(src);
  auto* o = static_cast<uint8_t*>(dst);
  if (t == GgmlType::Q4_0) {
    const size_t rb = static_cast<size_t>(nb) * sizeof(BlockQ4_0);
    for (int64_t r = 0; r < rows; ++r) {
      pack_q4_0_row(reinterpret_cast<const BlockQ4_0*>(s + r * rb), o + r * rb, nb);
    }
  } else if (t == GgmlType::Q8_0) {
    const size_t rb = static_cast<size_t>(nb) * sizeof(BlockQ8_0);
    for (int64_t r = 0; r < rows; ++r) {
      pack_q8_0_row(reinterpret_cast<const BlockQ8_0*>(s + r * rb), o + r * rb, nb);
    }
  } else {
    throw std::invalid_argument("pack_rows: type has no packed layout");
  }
}

void dequantize_packed_row(GgmlType t, const void* src, float* dst, int64_t cols) {
  const int64_t nb = cols / QK;
  const auto* s = static_cast<const uint8_t*>(src);
  if (t == GgmlType::Q4_0) {
    const uint16_t* d = reinterpret_cast<const uint16_t*>(s + nb * 16);
    const int64_t ng = nb / 4;
    for (int64_t g = 0; g < ng; ++g) {
      for (int j = 0; j < 64; ++j) {
        const uint8_t v = s[g * 64 + j];
        const int64_t lo = g * 128 + j, hi = g * 128 + 64 + j;
        dst[lo] = fp16_to_fp32(d[lo / 32]) * static_cast<float>((v & 0x0F) - 8);
        dst[hi] = fp16_to_fp32(d[hi / 32]) * static_cast<float>((v >> 4) - 8);
      }
    }
    for (int64_t b = 4 * ng; b < nb; ++b) {
      const uint8_t* q = s + ng * 64 + (b - 4 * ng) * 16;
      const float db = fp16_to_fp32(d[b]);
      for (int i = 0; i < 16; ++i) {
        dst[b * 32 + i] = db * static_cast<float>((q[i] & 0x0F) - 8);
        dst[b * 32 + 16 + i] = db * static_cast<float>((q[i] >> 4) - 8);
      }
    }
  } else if (t == GgmlType::Q8_0) {
    const uint16_t* d = reinterpret_cast<const uint16_t*>(s + nb * 32);
    const auto* q = reinterpret_cast<const int8_t*>(s);
    for (int64_t i = 0; i < cols; ++i) dst[i] = fp16_to_fp32(d[i / 32]) * static_cast<float>(q[i]);
  } else {
    throw std::invalid_argument("dequantize_packed_row: type has no packed layout");
  }
}

void quantize_act_q8(const float* x, int64_t cols, int bias, uint8_t* dst) {
  const int64_t nb = cols / QK;
  auto* q = reinterpret_cast<int8_t*>(dst);
  auto* corr = reinterpret_cast<int32_t*>(dst + cols);
  auto* dl = reinterpret_cast<float*>(dst + 2 * cols);
  const TypeTraits& q8 = traits(GgmlType::Q8_0);
  BlockQ8_0 blk;
  for (int64_t b = 0; b < nb; ++b) {
    q8.quantize(x + b * QK, &blk, QK);  // the reference Q8_0 rounding, bit for bit
    std::memcpy(q + b * QK, blk.qs, QK);
    const float d = fp16_to_fp32(blk.d);
    for (int l = 0; l < QK / 4; ++l) {
      const int8_t* e = blk.qs + 4 * l;
      corr[b * 8 + l] = -bias * (e[0] + e[1] + e[2] + e[3]);
      dl[b * 8 + l] = d;
    }
  }
}

namespace {

// Portable kernel on the packed layouts: the twin of the SIMD kernels (same integer products,
// same per-block scales) and the fallback when the active level is lowered after packing.
void gemm_scalar(GgmlType type, const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1,
                 int64_t cols, const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  const int64_t nb = cols / QK, ng = nb / 4;
  std::vector<int8_t> wq(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = w + r * static_cast<int64_t>(row_bytes);
    const uint16_t* dw;
    if (type == GgmlType::Q4_0) {
      dw = reinterpret_cast<const uint16_t*>(wr + nb * 16);
      for (int64_t g = 0; g < ng; ++g) {
        for (int j = 0; j < 64; ++j) {
          wq[g * 128 + j] = static_cast<int8_t>((wr[g * 64 + j] & 0x0F) - 8);
          wq[g * 128 + 64 + j] = static_cast<int8_t>((wr[g * 64 + j] >> 4) - 8);
        }
      }
      for (int64_t b = 4 * ng; b < nb; ++b) {
        const uint8_t* q = wr + ng * 64 + (b - 4 * ng) * 16;
        for (int i = 0; i < 16; ++i) {
          wq[b * 32 + i] = static_cast<int8_t>((q[i] & 0x0F) - 8);
          wq[b * 32 + 16 + i] = static_cast<int8_t>((q[i] >> 4) - 8);
        }
      }
    } else {
      dw = reinterpret_cast<const uint16_t*>(wr + nb * 32);
      std::memcpy(wq.data(), wr, static_cast<size_t>(cols));
    }
    for (int64_t t = 0; t < n_tok; ++t) {
      const uint8_t* a = act + t * static_cast<int64_t>(act_q8_bytes(cols));
      const auto* aq = reinterpret_cast<const int8_t*>(a);
      const auto* dl = reinterpret_cast<const float*>(a + 2 * cols);
      float s = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t dot = 0;
        for (int i = 0; i < QK; ++i) dot += wq[b * QK + i] * aq[b * QK + i];
        s += fp16_to_fp32(dw[b]) * dl[b * 8] * static_cast<float>(dot);
      }
      y[t * ldy + r] = s;
    }
  }
}

void gemm_scalar_q4_0(const uint8_t* w, size_t rb, int64_t r0, int64_t r1, int64_t cols,
                      const uint8_t* act, int64_t n_tok, float* y, int64_t ldy) {
  gemm_scalar(GgmlType::Q4_0, w, rb, r0, r1, cols, act, n_tok, y, ldy);
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
      if (t == GgmlType::Q8_0) return &gemm_scalar_q8_0;
      return nullptr;
  }
  return nullptr;
}

}  // namespace ranklm::kern
