// Packed weight layouts for the SIMD matrix products, made once at load ("repacking"), and the
// activation layout they pair with.
//
// Rows go in groups of 16 ("row-interleaved"): lane j of a 16-lane int32 vector works on row j
// of the group, so one VPDPBUSD with 4 activation bytes broadcast to every lane adds 4 products
// to each of 16 rows, eight of them finish a block of 32 for 16 rows, and the per-row block
// scales are applied with one vector multiply-add. No horizontal sums anywhere: a group's 16
// results for a token are one vector store. Group g starts at byte g * 16 * packed_row_bytes; a
// matrix whose row count is not a multiple of 16 is padded with zero rows (packed_bytes).
//
// Inside a group, per block b of 32 elements (a "group block", 16 rows x 32 elements):
//   nibbles (256 B), shared by Q4_0, Q4_1, Q4_K and the low bits of Q6_K:
//         byte (m * 16 + j) * 4 + i (m 0..3, i 0..3) holds element 4m + i of row j in its low
//         nibble and element 16 + 4m + i in its high nibble.
//   Q4_0 (288 B = 16 x 18): [nibbles][d of the 16 rows, fp16]; nibbles 0..15 stand for -8..7.
//   Q4_1 (320 B = 16 x 20): [nibbles][d, fp16 x 16][m, fp16 x 16]; value d q + m.
//   Q8_0 (544 B = 16 x 34): [int8, 512 B: byte (k * 16 + j) * 4 + i = element 4k + i of row j]
//         [d, fp16 x 16].
//   5-bit blocks: [nibbles (the low 4 bits)][high plane, 64 B: byte 4j + i, bit m = bit 4 of
//         element 4m + i of row j, bit 4 + m = bit 4 of element 16 + 4m + i].
//   Q5_0 (352 B = 16 x 22): [5-bit block][d, fp16 x 16]; values 0..31 stand for -16..15.
//   Q5_1 (384 B = 16 x 24): [5-bit block][d, fp16 x 16][m, fp16 x 16]; value d q + m.
// Float weights (F32, F16, BF16) go by column: column c of the group's rows at c * 16 values,
// row j's value at j (so 16 rows' values of one column are one vector); their activations are
// float rows rounded to the weight's activation type (F16 or BF16 values), and each (row,
// token) sums column c into partial sum c % 4 (fused multiply-add), then (p0 + p1) + (p2 + p3).
// K-quants go by super-block (256 elements, 8 blocks), per group super-block:
//   Q4_K (2368 B = 16 x 148, 4 B per row more than GGUF: the scales unpacked):
//         [d, fp16 x 16][dmin, fp16 x 16], then per block [nibbles][sc: 16 x u8][mn: 16 x u8];
//         block b of row j stands for (d_j sc_j) q - dmin_j mn_j (both products exact in float).
//   2-bit plane (128 B, two 64-byte vectors): in vector p, byte 4j + i holds, from bit 0, the
//         2-bit values of elements 4m+i, 16+4m+i, 4(m+1)+i, 16+4(m+1)+i of row j, m = 2p.
//   1-bit plane (64 B): as the 5-bit blocks' high plane.
//   Q2_K (1344 B = 16 x 84, GGUF's size): [d, fp16 x 16][dmin, fp16 x 16], then per block
//         [2-bit plane][16 x (scale | min << 4) of elements 0-15][the same of 16-31]; value
//         (d sc) q - (dmin mn), per half block.
//   Q3_K (1824 B = 16 x 114, 4 B per row more than GGUF): [d, fp16 x 16], then per block
//         [2-bit plane: the low bits][1-bit plane: the high bit][sc_lo: 16 x int8][sc_hi]; weights
//         0..7 for d sc (q - 4): the activation's corr and corr2 start each half at -4 sum(x).
//   Q5_K (2880 B = 16 x 180, 4 B per row more than GGUF): as Q4_K with 5-bit blocks:
//         [d][dmin], then per block [5-bit block][sc: 16 x u8][mn: 16 x u8].
//   Q6_K (3360 B = 16 x 210, GGUF's size): [d, fp16 x 16], then per block [low 4 bits as
//         nibbles][high 2 bits as a 2-bit plane][sc_lo: 16 x int8 (elements 0-15)][sc_hi: 16 x
//         int8 (16-31)]; weights 0..63 for d sc (q - 32): the activation's corr and corr2 start
//         each half at -32 sum(x).
//
// Activations (ActQ8), per token row of `cols` elements (nb = cols / 32 blocks):
//   [q: cols x int8, natural order][corr: nb x int32][d: nb x float][s: nb x float][corr2: nb x int32]
// q and d are exactly Q8_0's (same rounding). corr[b] = -bias * (sum of block b's q), so an
// integer dot product of unsigned (biased) weights started at corr gives the signed result.
// bias is 8 for Q4_0 (nibbles 0..15 stand for -8..7), 16 for Q5_0, 128 for Q8_0 (weights offset
// by 128 to become unsigned for VNNI) and 0 for the types with mins. s[b] is the block's sum for
// the min term m_w * s of Q4_1 and Q5_1 products: Q8_1's d * sum(q) rounded to fp16, with
// d = amax / 127 before its own fp16 rounding (as llama.cpp pairs them with Q8_1). K-quants
// take q and d as Q8_K rounds them (one scale per 256 elements, as llama.cpp pairs K-quants with
// Q8_K; d is repeated for the 8 blocks of a super-block). For Q4_K and Q5_K, corr[b] is the
// block's integer sum of q (for the min term) and s[b] the same sum as a float; for Q6_K, corr and corr2 are -32 times the sums
// of each block's first and last 16 values, for Q3_K -4 times them, for Q2_K the sums
// themselves (its min term); corr2 is 0 otherwise (s is then d times the block's sum, unused).
//
// Every level (scalar twin, AVX2, AVX-512) computes a (row, token) result with the same integer
// products and the same float operations in the same order, so every level gives the same bits,
// whatever the batch, tile or thread split:
//   - legacy blocks (Q4_0 .. Q8_0), one block after another: acc = fma(float(dot), d_w * d_x,
//     acc), then acc = fma(m_w, s_x, acc) for Q4_1 and Q5_1;
//   - K-quants, one super-block after another (as llama.cpp's K-quant dot products): the scaled
//     block products summed in int32 over the super-block (Q4_K, Q5_K: sc_b dot_b; Q2_K, Q3_K,
//     Q6_K: sc_lo dot_lo + sc_hi dot_hi) and, for the types with mins, the min term's integer
//     sum m (Q4_K, Q5_K: mn_b sum_b; Q2_K: mn_lo sum_lo + mn_hi sum_hi); then
//     acc = fma(float(isum), d_w * d_x, acc) and acc = fma(float(m), (-dmin_w) * d_x, acc).
//     Every partial sum is exact in int32 (Q6_K's largest: 8 x 2 x 16 x 32 x 128 x 128 < 2^31).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu.h"
#include "types.h"

namespace ranklm::kern {

// Whether `t` has a packed layout and SIMD kernels at level `isa`.
bool packable(GgmlType t, Isa isa);

constexpr int64_t kGroupRows = 16;  // rows per interleaved group

// Whether rows of `cols` elements of type `t` can be packed (whole blocks; float types: whole
// units of 4 columns).
bool packable_cols(GgmlType t, int64_t cols);

// Bytes per row in the packed layout (the GGUF row's size, except Q4_K's: 4 more per 256
// elements), and of a whole packed matrix (rows padded to a multiple of kGroupRows).
size_t packed_row_bytes(GgmlType t, int64_t cols);
size_t packed_bytes(GgmlType t, int64_t rows, int64_t cols);

// Packs `rows` rows of `cols` elements from GGUF layout into `dst` (packed_bytes of them).
void pack_rows(GgmlType t, const void* src, void* dst, int64_t rows, int64_t cols);

// Row `row` of a packed matrix (starting at `base`) back to floats (embedding lookup on a
// packed table, and tests): exactly the GGUF dequantization.
void dequantize_packed_row(GgmlType t, const void* base, int64_t row, float* dst, int64_t cols);

// Bytes of one ActQ8 row, and the conversion of one float row (cols a multiple of 32).
inline size_t act_q8_bytes(int64_t cols) { return static_cast<size_t>(cols) + static_cast<size_t>(cols) / 2; }

struct ActQ8Format {
  int bias = 0;         // corr = -bias * sum(q)
  bool s_fp16 = true;   // s as Q8_1 has it (Q4_1), else exact (Q4_K)
  // Q8_K's rounding (one float scale per 256 elements, as llama.cpp pairs K-quants with):
  // q and s are Q8_K's, d is its scale repeated for the 8 blocks of 32.
  bool q8_k = false;
  // With q8_k: corr, corr2 = -half_bias x the sums of each block's halves (Q6_K 32, Q3_K 4;
  // Q2_K -1: the halves' sums themselves, for its per-half min term).
  int half_bias = 0;
  // With q8_k: corr = the block's sum, corr2 = 0 (Q4_K, Q5_K: their min term).
  bool block_sums = false;
};
ActQ8Format act_format(GgmlType t);
void quantize_act_q8(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst);
// The same at a given level (quantize_act_q8 uses the active one); every level writes the
// same bytes.
void quantize_act_q8_at(Isa isa, const float* x, int64_t cols, ActQ8Format f, uint8_t* dst);
void quantize_act_q8_avx2(const float* x, int64_t cols, ActQ8Format f, uint8_t* dst);

// y[t * ldy + (r - r0)] = row r of the packed matrix at w . token t's activations, for r in
// [r0, r1) and t < n_tok (r0, r1 need not be group-aligned; the groups they cut are computed
// whole and only their rows in range stored). act holds n_tok ActQ8 rows of act_q8_bytes(cols).
using PackedGemmFn = void (*)(const uint8_t* w, size_t row_bytes, int64_t r0, int64_t r1,
                              int64_t cols, const uint8_t* act, int64_t n_tok, float* y,
                              int64_t ldy);

// The kernel for a packed type at a level, or nullptr when there is none.
PackedGemmFn packed_gemm(GgmlType t, Isa isa);

// Per-ISA kernel tables (defined in packed_avx2.cpp / packed_avx512.cpp).
PackedGemmFn packed_gemm_avx2(GgmlType t);
PackedGemmFn packed_gemm_avx512(GgmlType t);

}  // namespace ranklm::kern
