// Packed weight layouts for the SIMD matrix products, made once at load ("repacking"), and the
// activation layout they pair with.
//
// A packed row has the same byte size as the GGUF row; only the order changes. Blocks go in
// chunks of 16 (512 elements), "interleaved" so that lane j of a 16-lane int32 vector works on
// block j of the chunk: one VPDPBUSD adds 4 products to each of 16 blocks, eight of them finish
// 16 whole blocks, and the per-block scales are then applied with one vector multiply.
//
//   Q4_0 chunk (288 B): [quants, 256 B][d of the 16 blocks, fp16, 32 B]
//         quant byte (m * 16 + j) * 4 + i = byte 4m + i of GGUF block j (m 0..3, i 0..3): its
//         low nibble is element 4m + i, its high nibble element 16 + 4m + i.
//   Q4_1 chunk (320 B): [quants, 256 B][d, fp16, 32 B][m, fp16, 32 B], quants as Q4_0's (the
//         nibbles 0..15 stand for d q + m, so no bias).
//   Q4_K chunk (296 B; two super-blocks, their 16 sub-blocks of 32 as the 16 blocks):
//         [quants, 256 B, as Q4_0's][sc: 16 x u8][mn: 16 x u8][d: 2 x fp16][dmin: 2 x fp16],
//         the 6-bit scales and mins unpacked; block j stands for (d[j/8] sc[j]) q - dmin[j/8] mn[j]
//         (both products exact in float). A row is 8 bytes per chunk longer than in GGUF
//         (packed_row_bytes); an odd last super-block stays a GGUF block.
//   Q6_K chunk (420 B, the size of two GGUF super-blocks; 16 blocks of 32 as for Q4_K):
//         [low 4 bits, 256 B, as Q4_0's nibbles][high 2 bits, 128 B: two 64-byte vectors; in
//         vector p, byte (j, i) = lane j's byte i holds, from bit 0, the high bits of elements
//         4m+i, 16+4m+i, 4(m+1)+i, 16+4(m+1)+i of block j, m = 2p][sc_lo: 16 x int8 (elements
//         0-15 of each block)][sc_hi: 16 x int8 (16-31)][d: 2 x fp16]; weights 0..63 for
//         d sc (q - 32): the activation's corr and corr2 start each half at -32 sum(x).
//   Q8_0 chunk (544 B): [quants, 512 B][d of the 16 blocks, fp16, 32 B]
//         quant byte (k * 16 + j) * 4 + i = element 4k + i of block j (k 0..7).
//   Blocks past the last whole chunk (blocks per row not a multiple of 16) stay GGUF blocks.
//
// Activations (ActQ8), per token row of `cols` elements (nb = cols / 32 blocks):
//   [q: cols x int8][corr: nb x int32][d: nb x float][s: nb x float][corr2: nb x int32]
// q and d are exactly Q8_0's (same rounding). q is ordered like the Q8_0 chunk above (element
// 4k + i of block j of a chunk at (k * 16 + j) * 4 + i), and natural in the blocks past the
// last chunk. corr[b] = -bias * (sum of block b's q), so an integer dot product of unsigned
// (biased) weights started at corr gives the signed result. bias is 8 for Q4_0 (nibbles 0..15
// stand for -8..7), 128 for Q8_0 (weights offset by 128 to become unsigned for VNNI) and 0 for
// Q4_1 and Q4_K. s[b] is the block's sum for the min term m_w * s of Q4_1 and Q4_K products:
// for Q4_1, Q8_1's d * sum(q) rounded to fp16, with d = amax / 127 before its own fp16 rounding
// (as llama.cpp pairs Q4_1 with Q8_1); for Q4_K, exactly the sum of the block's dequantized
// values (d times sum(q), exact in float), with q and d rounded as Q8_K rounds them (one scale
// per 256 elements, as llama.cpp pairs Q4_K with Q8_K). For Q6_K (Q8_K rounding too), corr and
// corr2 are -32 times the sums of each block's first and last 16 values; corr2 is 0 otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu.h"
#include "types.h"

namespace ranklm::kern {

// Whether `t` has a packed layout and SIMD kernels at level `isa`.
bool packable(GgmlType t, Isa isa);

// Bytes of one packed row (the GGUF row's size, except Q4_K's: 8 more per chunk).
size_t packed_row_bytes(GgmlType t, int64_t cols);
constexpr size_t kQ4KChunkBytes = 296;
constexpr size_t kQ6KChunkBytes = 420;

// Packs `rows` rows of `cols` elements from GGUF layout into `dst` (rows of packed_row_bytes).
void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols);

// One packed row back to floats (embedding lookup on a packed table, and tests).
void dequantize_packed_row(GgmlType t, const void* src, float* dst, int64_t cols);

// Bytes of one ActQ8 row, and the conversion of one float row (cols a multiple of 32).
inline size_t act_q8_bytes(int64_t cols) { return static_cast<size_t>(cols) + static_cast<size_t>(cols) / 2; }

constexpr int kChunkBlocks = 16;  // blocks per interleaved chunk
struct ActQ8Format {
  int bias = 0;         // corr = -bias * sum(q)
  bool s_fp16 = true;   // s as Q8_1 has it (Q4_1), else exact (Q4_K)
  // Q8_K's rounding (one float scale per 256 elements, as llama.cpp pairs K-quants with):
  // q and s are Q8_K's, d is its scale repeated for the 8 blocks of 32.
  bool q8_k = false;
  bool q6_k = false;    // corr, corr2: -32 x the sums of each block's halves (with q8_k)
};
ActQ8Format act_format(GgmlType t);
void quantize_act_q8(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst);
// The same at a given level (quantize_act_q8 uses the active one); every level writes the
// same bytes.
void quantize_act_q8_at(Isa isa, const float* x, int64_t cols, ActQ8Format f, uint8_t* dst);
void quantize_act_q8_avx2(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst);

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
