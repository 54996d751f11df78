#include "matmul.h"

#include <algorithm>

#include <cblas.h>

#include <stdexcept>
#include <string>

#include "cpu.h"
#include "packed.h"

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

// Float activations rounded to the weight type's activation type (F16 / BF16 values, as the
// vec_dot path rounds them), one float row per token in `scratch`.
float* rounded_activations(const TypeTraits& wt, const float* x, int64_t n_tok, int64_t cols, ThreadPool& pool,
                           std::vector<uint8_t>& scratch) {
  scratch.resize(static_cast<size_t>(n_tok * cols) * sizeof(float));
  float* xa = reinterpret_cast<float*>(scratch.data());
  const TypeTraits& at = traits(wt.vec_dot_type);
  pool.parallel_for(n_tok, [&](int64_t t0, int64_t t1, int) {
    std::vector<uint8_t> tmp(row_bytes(at, cols));
    for (int64_t t = t0; t < t1; ++t) {
      at.quantize(x + t * cols, tmp.data(), cols);
      at.dequantize(tmp.data(), xa + t * cols, cols);
    }
  });
  return xa;
}

}  // namespace

MatrixView pack_matrix(const MatrixView& w, std::vector<uint8_t>& storage) {
  checked_traits(w);
  if (w.packed || !packable(w.type, active_isa()) || !packable_cols(w.type, w.cols)) return w;
  storage.resize(packed_bytes(w.type, w.rows, w.cols));
  pack_rows(w.type, w.data, storage.data(), w.rows, w.cols);
  MatrixView p = w;
  p.data = storage.data();
  p.packed = true;
  return p;
}

namespace {

bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

void matmul_packed(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool,
                   std::vector<uint8_t>& scratch) {
  const PackedGemmFn fn = packed_gemm(w.type, active_isa());
  const int64_t cols = w.cols;
  uint8_t* act = nullptr;
  if (is_float_type(w.type)) {
    act = reinterpret_cast<uint8_t*>(rounded_activations(traits(w.type), x, n_tok, cols, pool, scratch));
  } else {
    const size_t arow = act_q8_bytes(cols);
    scratch.resize(arow * static_cast<size_t>(n_tok));
    const ActQ8Format af = act_format(w.type);
    act = scratch.data();
    pool.parallel_for(n_tok, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; ++t) quantize_act_q8(x + t * cols, cols, af, act + t * arow);
    });
  }
  const size_t wrow = packed_row_bytes(w.type, cols);
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  // Threads take whole row groups (a group cut in two would be computed twice).
  const int64_t rows = w.rows, first = w.row0, last = w.row0 + rows;
  const int64_t g0 = first / kGroupRows, g1 = (last + kGroupRows - 1) / kGroupRows;
  pool.parallel_for(g1 - g0, [&](int64_t a, int64_t b, int) {
    const int64_t r0 = std::max(first, (g0 + a) * kGroupRows), r1 = std::min(last, (g0 + b) * kGroupRows);
    if (r0 < r1) fn(wbase, wrow, r0, r1, cols, act, n_tok, y + (r0 - first), rows);
  });
}

// Float weights (F32 / F16 / BF16) against a batch: blocks of rows widened to float and handed
// to OpenBLAS sgemm, one block per call on each pool thread (OpenBLAS itself single-threaded).
// Activations are rounded to the weight's activation type first, as the vec_dot path does, so
// the two differ only in summation order.
void matmul_float_gemm(const MatrixView& w, const TypeTraits& wt, const float* x, int64_t n_tok,
                       float* y, ThreadPool& pool, std::vector<uint8_t>& scratch) {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
  const int64_t cols = w.cols, rows = w.rows;
  const float* xa = rounded_activations(wt, x, n_tok, cols, pool, scratch);
  const size_t wrow = row_bytes(wt, cols);
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const bool simd = active_isa() >= Isa::Avx2;
  pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    constexpr int64_t kBlock = 64;
    std::vector<float> wf;
    if (w.type != GgmlType::F32) wf.resize(static_cast<size_t>(kBlock * cols));
    for (int64_t rb = r0; rb < r1; rb += kBlock) {
      const int64_t nr = std::min(kBlock, r1 - rb);
      const float* wp = reinterpret_cast<const float*>(wbase + rb * wrow);
      if (w.type != GgmlType::F32) {
        for (int64_t r = 0; r < nr; ++r) {
          const void* src = wbase + (rb + r) * wrow;
          if (simd) {
            widen_row_avx2(w.type, src, wf.data() + r * cols, cols);
          } else {
            wt.dequantize(src, wf.data() + r * cols, cols);
          }
        }
        wp = wf.data();
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_tok), static_cast<int>(nr),
                  static_cast<int>(cols), 1.0f, xa, static_cast<int>(cols), wp, static_cast<int>(cols), 0.0f,
                  y + rb, static_cast<int>(rows));
    }
  });
}

}  // namespace

// Batches from this size on take the sgemm path for float weights (measured in
// docs/PERFORMANCE.md: below it the widening of each weight block costs more than it saves).
constexpr int64_t kGemmMinTokens = 16;

void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool,
            std::vector<uint8_t>& scratch) {
  const TypeTraits& wt = checked_traits(w);
  if (w.packed) return matmul_packed(w, x, n_tok, y, pool, scratch);
  if (is_float_type(w.type) && n_tok >= kGemmMinTokens) return matmul_float_gemm(w, wt, x, n_tok, y, pool, scratch);
  const size_t arow = convert_activations(wt, x, n_tok, w.cols, scratch);
  const size_t wrow = row_bytes(wt, w.cols);
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  const uint8_t* abase = scratch.data();
  const VecDotFn dot = fast_vec_dot(w.type);
  const VecDot4Fn dot4 = active_isa() >= Isa::Avx2 ? vec_dot4_avx2(w.type) : nullptr;
  const int64_t rows = w.rows;
  const int64_t cols = w.cols;
  pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    // Rows in tiles so a tile of weights stays in cache while every token passes over it;
    // with a 4-token kernel, tokens go 4 at a time.
    constexpr int64_t kTile = 16;
    for (int64_t rb = r0; rb < r1; rb += kTile) {
      const int64_t re = std::min(r1, rb + kTile);
      int64_t t0 = 0;
      if (dot4) {
        for (; t0 + 4 <= n_tok; t0 += 4) {
          const void* a4[4];
          for (int i = 0; i < 4; ++i) a4[i] = abase + static_cast<size_t>(t0 + i) * arow;
          for (int64_t r = rb; r < re; ++r) {
            float o[4];
            dot4(cols, wbase + static_cast<size_t>(r) * wrow, a4, o);
            for (int i = 0; i < 4; ++i) y[(t0 + i) * rows + r] = o[i];
          }
        }
      }
      for (int64_t t = t0; t < n_tok; ++t) {
        const uint8_t* a = abase + static_cast<size_t>(t) * arow;
        float* yt = y + t * rows;
        for (int64_t r = rb; r < re; ++r) yt[r] = dot(cols, wbase + static_cast<size_t>(r) * wrow, a);
      }
    }
  });
}

void matmul_grouped(const MatmulJob* jobs, int n_jobs, ThreadPool& pool, std::vector<uint8_t>& scratch) {
  // Packed quantized jobs go together; the others one by one.
  struct Packed {
    const MatmulJob* job;
    PackedGemmFn fn;
    size_t act;          // offset of its activations in scratch
    int64_t g0, groups;  // its row groups
  };
  std::vector<Packed> packed;
  std::vector<uint8_t> own;  // the one-by-one jobs' scratch
  size_t act_bytes = 0;
  for (int j = 0; j < n_jobs; ++j) {
    const MatmulJob& job = jobs[j];
    if (job.n_tok <= 0) continue;
    if (!job.w.packed || is_float_type(job.w.type)) {
      matmul(job.w, job.x, job.n_tok, job.y, pool, own);
      continue;
    }
    const int64_t first = job.w.row0, last = job.w.row0 + job.w.rows;
    const int64_t g0 = first / kGroupRows, g1 = (last + kGroupRows - 1) / kGroupRows;
    size_t act = act_bytes;
    for (const Packed& p : packed) {  // the same activations in the same format: shared
      if (p.job->x == job.x && p.job->n_tok == job.n_tok && p.job->w.cols == job.w.cols && p.job->w.type == job.w.type) {
        act = p.act;
        break;
      }
    }
    if (act == act_bytes) act_bytes += act_q8_bytes(job.w.cols) * static_cast<size_t>(job.n_tok);
    packed.push_back({&job, packed_gemm(job.w.type, active_isa()), act, g0, g1 - g0});
  }
  if (packed.empty()) return;
  scratch.resize(act_bytes);
  // Activations: every (job, token) row not shared with an earlier job.
  std::vector<std::pair<int, int64_t>> rows;  // (packed index, token)
  for (size_t i = 0; i < packed.size(); ++i) {
    bool first = true;
    for (size_t k = 0; k < i && first; ++k) first = packed[k].act != packed[i].act;
    if (first) {
      for (int64_t t = 0; t < packed[i].job->n_tok; ++t) rows.emplace_back(static_cast<int>(i), t);
    }
  }
  pool.parallel_for(static_cast<int64_t>(rows.size()), [&](int64_t a, int64_t b, int) {
    for (int64_t i = a; i < b; ++i) {
      const Packed& p = packed[static_cast<size_t>(rows[static_cast<size_t>(i)].first)];
      const int64_t t = rows[static_cast<size_t>(i)].second, cols = p.job->w.cols;
      quantize_act_q8(p.job->x + t * cols, cols, act_format(p.job->w.type),
                      scratch.data() + p.act + act_q8_bytes(cols) * static_cast<size_t>(t));
    }
  });
  // Row groups of every job, as one index space.
  std::vector<int64_t> start(packed.size() + 1, 0);
  for (size_t i = 0; i < packed.size(); ++i) start[i + 1] = start[i] + packed[i].groups;
  pool.parallel_for(start.back(), [&](int64_t a, int64_t b, int) {
    size_t i = static_cast<size_t>(std::upper_bound(start.begin(), start.end(), a) - start.begin()) - 1;
    for (int64_t g = a; g < b;) {
      while (g >= start[i + 1]) ++i;
      const Packed& p = packed[i];
      const MatrixView& w = p.job->w;
      const int64_t ge = std::min(b, start[i + 1]);  // this job's groups in [g, ge)
      const int64_t first = w.row0, last = w.row0 + w.rows;
      const int64_t r0 = std::max(first, (p.g0 + g - start[i]) * kGroupRows);
      const int64_t r1 = std::min(last, (p.g0 + ge - start[i]) * kGroupRows);
      if (r0 < r1) {
        p.fn(static_cast<const uint8_t*>(w.data), packed_row_bytes(w.type, w.cols), r0, r1, w.cols,
             scratch.data() + p.act, p.job->n_tok, p.job->y + (r0 - first), w.rows);
      }
      g = ge;
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

MatrixView row_range(const MatrixView& w, int64_t begin, int64_t end) {
  if (begin < 0 || begin > end || end > w.rows) throw std::invalid_argument("row_range: rows out of the matrix");
  MatrixView v = w;
  v.rows = end - begin;
  if (w.packed) {
    v.row0 = w.row0 + begin;
  } else {
    v.data = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(begin) * row_bytes(traits(w.type), w.cols);
  }
  return v;
}

void get_row(const MatrixView& w, int64_t row, float* out) {
  const TypeTraits& wt = checked_traits(w);
  if (w.packed) return dequantize_packed_row(w.type, w.data, w.row0 + row, out, w.cols);
  const size_t wrow = row_bytes(wt, w.cols);
  wt.dequantize(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row) * wrow, out, w.cols);
}

}  // namespace ranklm::kern
