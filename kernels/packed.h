// Packed weight layouts for the SIMD matrix products, made once at load ("repacking"), and the
// activation layout they pair with.
//
// A packed row has the same byte size as the GGUF row; only the order changes:
//
//   Q4_0: [groups of 4 blocks, 64 B each][tail blocks, 16 B each][d of every block, fp16]
//         Byte j of a group holds element j of the group in its low nibble and element 64 + j
//         in its high nibble, so one 64-byte load yields 128 consecutive elements as two
//         vectors. Tail blocks (when blocks per row is not a multiple of 4) keep GGUF's nibble
//         order (element i low, i + 16 high).
//   Q8_0: [quants of every block, 32 B each][d of every block, fp16]
//
// Activations (ActQ8), per token row of `cols` elements:
//   [q: cols x int8][corr: cols/4 x int32][dl: cols/4 x float]
// q and the per-block scale are exactly Q8_0's (same rounding); lane i covers elements
// 4i..4i+3: dl[i] is its block's scale and corr[i] = -bias * (q[4i] + .. + q[4i+3]), so an
// integer dot product of unsigned (biased) weights started at corr gives the signed result.
// bias is 8 for Q4_0 (nibbles 0..15 stand for -8..7) and 128 for Q8_0 (weights are offset by
// 128 to become unsigned for VNNI).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu.h"
#include "types.h"

namespace ranklm::kern {

// Whether `t` has a packed layout and SIMD kernels at level `isa`.
bool packable(GgmlType t, Isa isa);

// Packs `rows` rows of `cols` elements from GGUF layout into `dst` (same size as the source).
void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols);

// One packed row back to floats (embedding lookup on a packed table, and tests).
void dequantize_packed_row(GgmlType t, const void* src, float* dst, int64_t cols);

// Bytes of one ActQ8 row, and the conversion of one float row (cols a multiple of 32).
inline size_t act_q8_bytes(int64_t cols) { return static_cast<size_t>(cols) * 3; }
int act_bias(GgmlType t);
void quantize_act_q8(const float* x, int64_t cols, int bias, uint8_t* dst);

// y[t * ldy + r] = row r of the packed matrix . token t's activations, for r in [r0, r1) and
// t < n_tok. act holds n_tok ActQ8 rows of act_q8_bytes(cols) each.
using PackedGemmFn = void (*)(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1,
                              int64_t cols, const uint8_t* act, int64_t n_tok, float* y,
                              int64_t ldy);

// The kernel for a packed type at a level, or nullptr when there is none.
PackedGemmFn packed_gemm(GgmlType t, Isa isa);

// Per-ISA kernel tables (defined in packed_avx2.cpp / packed_avx512.cpp).
PackedGemmFn packed_gemm_avx2(GgmlType t);
PackedGemmFn packed_gemm_avx512(GgmlType t);

}  // namespace ranklm::kern
