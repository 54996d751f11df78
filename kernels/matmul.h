// Matrix products of a weight matrix in any supported type with float activations.
// Activations are first converted to the weight type's vec_dot_type (Q8_0 / Q8_K / F32), then
// every output is one vec_dot over a weight row: the weight never exists as a float copy.
#pragma once

#include <cstdint>
#include <vector>

#include "threadpool.h"
#include "types.h"

namespace ranklm::kern {

// A row-major matrix as stored in GGUF: `rows` rows of `cols` elements (GGUF ne = [cols, rows]).
struct MatrixView {
  GgmlType type;
  const void* data;
  int64_t rows;
  int64_t cols;
  bool packed = false;  // data is in the packed layout of packed.h (see pack_matrix)
  // Packed views: the view's first row inside the packed matrix at `data` (row groups cannot be
  // cut by moving `data`; see row_range).
  int64_t row0 = 0;
};

// Packs `w` into `storage` for the active instruction set when the type has a packed layout
// (every quantized type but Q8_1 / Q8_K, on AVX2 / AVX-512) and returns the view to use;
// otherwise returns `w` unchanged. The storage holds whole groups of 16 rows (packed_bytes).
MatrixView pack_matrix(const MatrixView& w, std::vector<uint8_t>& storage);

// y[t, r] = sum_c W[r, c] * x[t, c] for t < n_tok.   x: [n_tok, cols]  y: [n_tok, rows]
// `scratch` holds the converted activations between calls (grown as needed).
void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool,
            std::vector<uint8_t>& scratch);

// One product of a grouped call: y [n_tok, w.rows] = x [n_tok, w.cols] x W^T.
struct MatmulJob {
  MatrixView w;
  const float* x;
  int64_t n_tok;
  float* y;
};
// Several products at once (an MoE layer's experts, llama.cpp's mul_mat_id): the activations
// of every job converted first (once per distinct x and format), then the row groups of all
// the jobs split over the pool in one pass, so small products do not each wait for the pool.
// Every output gets the same bits as kern::matmul gives it. Jobs whose weights are not packed
// run one after another through kern::matmul.
void matmul_grouped(const MatmulJob* jobs, int n_jobs, ThreadPool& pool, std::vector<uint8_t>& scratch);

// Reference twin: float64 dot of dequantized rows (same activation conversion).
void matmul_reference(const MatrixView& w, const float* x, int64_t n_tok, float* y);

// Rows [begin, end) of `w` as a view of their own (packed or not).
MatrixView row_range(const MatrixView& w, int64_t begin, int64_t end);

// One row of an embedding table (any supported type) as floats.   out: [cols]
void get_row(const MatrixView& w, int64_t row, float* out);

}  // namespace ranklm::kern
