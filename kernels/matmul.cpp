#include "matmul.h"

#include <algorithm>
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

void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool,
            std::vector<uint8_t>& scratch) {
  const TypeTraits& wt = checked_traits(w);
  const size_t arow = convert_activations(wt, x, n_tok, w.cols, scratch);
  const size_t wrow = row_bytes(wt, w.cols);
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  const uint8_t* abase = scratch.data();
  const VecDotFn dot = wt.vec_dot;
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
  wt.dequantize(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row) * wrow, out, w.cols);
}

}  // namespace ranklm::kern
