// The tensor type table: one row per GGML type id with its block layout, reference
// dequantizer, reference quantizer (for the types activations are quantized to), reference
// dot product (float64) and fast dot product, and the activation type each weight type pairs with.
//
// Block layouts are bit-compatible with GGUF files (static_asserted below).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ranklm::kern {

// GGML type ids as stored in GGUF tensor infos.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

constexpr int QK = 32;     // elements per block of the legacy quants
constexpr int QK_K = 256;  // elements per super-block of the K-quants

using half = uint16_t;

struct BlockQ4_0 { half d; uint8_t qs[QK / 2]; };
struct BlockQ4_1 { half d; half m; uint8_t qs[QK / 2]; };
struct BlockQ5_0 { half d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ5_1 { half d; half m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ8_0 { half d; int8_t qs[QK]; };
struct BlockQ8_1 { half d; half s; int8_t qs[QK]; };
struct BlockQ2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; half d; half dmin; };
struct BlockQ3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; half d; };
struct BlockQ4_K { half d; half dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct BlockQ5_K { half d; half dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; half d; };
struct BlockQ8_K { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);
using QuantizeFn = void (*)(const float* src, void* dst, int64_t n);
// Dot product of n elements: a weight row of this type with an activation row of vec_dot_type.
using VecDotFn = float (*)(int64_t n, const void* w, const void* a);

struct TypeTraits {
  GgmlType type;
  const char* name;
  int64_t block_size;      // elements per block
  size_t type_size;        // bytes per block
  bool supported;          // has kernels (dequantize + dot); others are only recognised
  DequantizeFn dequantize; // reference dequantizer (null when unsupported)
  QuantizeFn quantize;     // reference quantizer: only for types used as activations / F32, F16, BF16
  GgmlType vec_dot_type;   // the type activations are converted to before vec_dot
  VecDotFn vec_dot;        // fast dot product (integer where the pair is integer)
};

// Row of the table for a type id, or nullopt when the id is not a GGML type.
const TypeTraits* find_type(uint32_t id);
const TypeTraits& traits(GgmlType t);
std::string_view type_name(GgmlType t);
std::optional<GgmlType> type_from_name(std::string_view name);

inline size_t row_bytes(const TypeTraits& t, int64_t n) {
  return static_cast<size_t>(n / t.block_size) * t.type_size;
}

// Reference dot product in float64: dequantize both rows with the table's reference
// dequantizers, multiply and sum in double. The twin every fast vec_dot is tested against.
double vec_dot_reference(GgmlType wtype, int64_t n, const void* w, const void* a);

// 6-bit scale and min j (0..7) of the Q4_K / Q5_K 12-byte scale field.
void scale_min_k4(int j, const uint8_t* q, int32_t& d, int32_t& m);

// The fastest dot product for a weight type at the active instruction-set level (cpu.h):
// SIMD where there is one, else the table's portable vec_dot.
VecDotFn fast_vec_dot(GgmlType t);
VecDotFn vec_dot_avx2(GgmlType t);        // kquants_avx2.cpp; nullptr when none
// One weight row against 4 activation rows at once (weights unpacked once): out[t] = w . a[t].
using VecDot4Fn = void (*)(int64_t n, const void* w, const void* const* a, float* out);
VecDot4Fn vec_dot4_avx2(GgmlType t);      // kquants_avx2.cpp (Q4_1, Q4_K, Q6_K); nullptr when none
VecDotFn vec_dot_float_avx2(GgmlType t);  // float_avx2.cpp (F16, BF16); nullptr when none
// F16 / BF16 row to floats with F16C / shifts (float_avx2.cpp); exact, like the dequantizers.
void widen_row_avx2(GgmlType t, const void* src, float* dst, int64_t n);

}  // namespace ranklm::kern
