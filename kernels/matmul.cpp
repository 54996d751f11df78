#include "matmul.h"

#include <algorithm>

#include "packed.h"
#include <stdexcept>
#include <string>

namespace ranklm::kern {

namespace {

const TypeTraits& checked_traits(const MatrixView& w) {
  const TypeTraits& t = traits(w.type);
  if (!t.supported) {
    throw std::invalid_argument(std::string("matmul: no kernel for weight type ") + t.name);
  }
  if (w.cols % t.block_size != 0) {
    throw std::invalid_argument(std::string("matmul: row length not a whole number of ") + t.name +
                                " blocks");
  }
  return t;
}

// Converts n_tok activation rows to the weight type's activation type; returns bytes per row.
size_t convert_activations(const TypeTraits& wt, const float* x, int64_t n_tok, int64_t cols,
                           std::vector<uint8_t>& out) {
  const TypeTraits& at = traits(wt.vec_dot_type);
  const size_t arow = row_bytes(at, cols);
  out.resize(arow * static_cast<size_t>(n_tok));
  for (int64_t t = 0; t < n_tok; ++t) at.quantize(x + t * cols, out.data() + t * arow, cols);
  return arow;
}

}  // namespace

MatrixView pack_matrix(const MatrixView& w, std::vector<uint8_t>& storage) {
  const TypeTraits& wt = checked_traits(w);
  if (w.packed || !packable(w.type, active_isa())) return w;
  storage.resize(row_bytes(wt, w.cols) * static_cast<size_t>(w.rows));
  pack_rows(w.type, w.data, storage.data(), w.rows, w.cols);
  MatrixView p = w;
  p.data = storage.data();
  p.packed = true;
  return p;
}

namespace {

void matmul_packed(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool,
                   std::vector<uint8_t>& scratch) {
  const PackedGemmFn fn = packed_gemm(w.type, active_isa());
  const int64_t cols = w.cols;
  const size_t arow = act_q8_bytes(cols);
  scratch.resize(arow * static_cast<size_t>(n_tok));
  const int bias = act_bias(w.type);
  uint8_t* act = scratch.data();
  pool.parallel_for(n_tok, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) quantize_act_q8(x + t * cols, cols, bias, act + t * arow);
  });
  const size_t wrow = row_bytes(traits(w.type), cols);
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const int64_t rows = w.rows;
  pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    fn(wbase, wrow, r0, r1, cols, act, n_tok, y, rows);
  });
}

}  // namespace

void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool,
            std::vector<uint8_t>& scratch) {
  const TypeTraits& wt = checked_traits(w);
  if (w.packed) return matmul_packed(w, x, n_tok, y, pool, scratch);
  const size_t arow = convert_activations(wt, x, n_tok, w.cols, scratch);
  const size_t wrow = row_bytes(wt, w.cols);
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  const uint8_t* abase = scratch.data();
  const VecDotFn dot = fast_vec_dot(w.type);
  const int64_t rows = w.rows;
  const int64_t cols = w.cols;
  pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    // Rows in tiles so a tile of weights stays in cache while every token passes over it.
    constexpr int64_t kTile = 16;
    for (int64_t rb = r0; rb < r1; rb += kTile) {
      const int64_t re = std::min(r1, rb + kTile);
      for (int64_t t = 0; t < n_tok; ++t) {
        const uint8_t* a = abase + static_cast<size_t>(t) * arow;
        float* yt = y + t * rows;
        for (int64_t r = rb; r < re; ++r) yt[r] = dot(cols, wbase + static_cast<size_t>(r) * wrow, a);
      }
    }
  });
}

void matmul_reference(const MatrixView& w, const float* x, int64_t n_tok, float* y) {
  const TypeTraits& wt = checked_traits(w);
  if (w.packed) throw std::invalid_argument("matmul_reference: takes the GGUF layout, not a packed view");
  std::vector<uint8_t> act;
  const size_t arow = convert_activations(wt, x, n_tok, w.cols, act);
  const size_t wrow = row_bytes(wt, w.cols);
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      y[t * w.rows + r] = static_cast<float>(
          vec_dot_reference(w.type, w.cols, wbase + r * wrow, act.data() + t * arow));
    }
  }
}

void get_row(const MatrixView& w, int64_t row, float* out) {
  const TypeTraits& wt = checked_traits(w);
  const size_t wrow = row_bytes(wt, w.cols);
  if (w.packed) {
    dequantize_packed_row(w.type, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row) * wrow,
                          out, w.cols);
    return;
  }
  wt.dequantize(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row) * wrow, out, w.cols);
}

}  // namespace ranklm::kern
