// The CPU implementation of BlockOps (model/block.h): weight products through kern::matmul on
// the rank's thread pool, element-wise steps split over tokens, the TP group's collectives.
#include <algorithm>

#include "kernels/ops.h"
#include "model/block.h"
#include "util/error.h"

namespace ranklm {

bool per_token_exact(const kern::MatrixView& w) {
  return w.packed || (w.type != kern::GgmlType::F32 && w.type != kern::GgmlType::F16 && w.type != kern::GgmlType::BF16);
}

bool all_per_token_exact(std::initializer_list<const kern::MatrixView*> ws) {
  return std::all_of(ws.begin(), ws.end(), [](const kern::MatrixView* w) { return per_token_exact(*w); });
}

float* BlockOps::buf(Buf b, int64_t n) {
  std::vector<float>& v = bufs_[b];
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

std::vector<int32_t>& BlockOps::ints(int slot, int64_t n) {
  std::vector<int32_t>& v = ints_[slot];
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v;
}

void BlockOps::product(const kern::MatrixView& w, const float* in, float* out, const Step& s) {
  if (per_token_exact(w) || s.n_seq == 1) return kern::matmul(w, in, s.n_tok, out, s.pool, scratch_);
  int64_t row = 0;
  for (int i = 0; i < s.n_seq; row += s.seqs[i].n_tok, ++i) {
    kern::matmul(w, in + row * w.cols, s.seqs[i].n_tok, out + row * w.rows, s.pool, scratch_);
  }
}

void BlockOps::products(const std::vector<kern::MatmulJob>& jobs, kern::ThreadPool& pool) {
  kern::matmul_grouped(jobs.data(), static_cast<int>(jobs.size()), pool, scratch_);
}

void BlockOps::product_per_token(const kern::MatrixView& w, const float* in, int64_t n, float* out,
                                 kern::ThreadPool& pool) {
  if (per_token_exact(w)) return kern::matmul(w, in, n, out, pool, scratch_);
  constexpr int64_t kGroup = 8;  // under kern::matmul's blocked-product threshold for float weights
  for (int64_t t = 0; t < n; t += kGroup) {
    kern::matmul(w, in + t * w.cols, std::min(kGroup, n - t), out + t * w.rows, pool, scratch_);
  }
}

void BlockOps::out_product(const kern::MatrixView& w, const float* in, bool reduce, const Step& s, float* out) {
  if (pt_.out_rows > 0) {
    float* rows = buf(kRows, s.n_tok * pt_.out_rows);
    product(w, in, rows, s);
    tp_.gather(rows, s.n_tok, TpGather::kRows, out);
    return;
  }
  product(w, in, out, s);
  // An expert-parallel group (no member shares) holds attention and dense FFNs whole: no sum.
  if (tp_.allreduce && reduce && !pt_.member_heads.empty()) tp_.allreduce(out, s.n_tok * hp_.n_embd);
}

void BlockOps::per_token(const Step& s, const std::function<void(int64_t, int64_t)>& f) {
  s.pool.parallel_for(s.n_tok, [&](int64_t t0, int64_t t1, int) { f(t0, t1); });
}

void BlockOps::norm(const Step& s, const float* in, const std::vector<float>& w, int64_t n_per_tok, int64_t width,
                    float* out) {
  per_token(s, [&](int64_t t0, int64_t t1) {
    const int64_t o = t0 * n_per_tok * width;
    kern::rms_norm(in + o, w.data(), (t1 - t0) * n_per_tok, width, hp_.rms_eps, out + o);
  });
}

void BlockOps::add_residual(const Step& s, float* x, const float* y) {
  const int64_t n_embd = hp_.n_embd;
  per_token(s, [&](int64_t t0, int64_t t1) { kern::add_inplace(x + t0 * n_embd, y + t0 * n_embd, (t1 - t0) * n_embd); });
}

void BlockOps::add_bias(const Step& s, float* y, const std::vector<float>& b) {
  if (b.empty()) return;
  const int64_t n = static_cast<int64_t>(b.size());
  for (int64_t t = 0; t < s.n_tok; ++t) kern::add_inplace(y + t * n, b.data(), n);
}

void BlockOps::rope(const Step& s, float* x, int64_t n_head, int64_t head_dim, const kern::RopeParams& rp, float scale) {
  const int64_t width = n_head * head_dim;
  per_token(s, [&](int64_t t0, int64_t t1) {
    kern::rope_inplace(x + t0 * width, t1 - t0, static_cast<int>(n_head), static_cast<int>(head_dim), s.pos + t0, rp);
    if (scale != 0) {
      for (int64_t i = t0 * width; i < t1 * width; ++i) x[i] *= scale;
    }
  });
}

void BlockOps::gate(kern::ThreadPool& pool, float* g, const float* u, int64_t n, int64_t width, FfnAct act) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    if (act == FfnAct::kGeluTanh) {
      kern::gelu_mul_inplace(g + b * width, u + b * width, (e - b) * width);
    } else {
      kern::silu_mul_inplace(g + b * width, u + b * width, (e - b) * width);
    }
  });
}

void BlockOps::attention(const kern::AttnSeq* seqs, int n_seq, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                         float scale, kern::ThreadPool& pool, int64_t window) {
  kern::attention_batch(seqs, n_seq, static_cast<int>(n_head), static_cast<int>(n_head_kv), static_cast<int>(head_dim),
                        scale, pool, window);
}

kern::MatrixView matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
  const gguf::TensorInfo& t = f.tensor(name);
  if (t.ne.size() != 2 || t.ne[0] != cols || t.ne[1] != rows) {
    fail("{}: tensor '{}': shape {} does not match the metadata (expected [{}, {}])", f.path(),
         name, t.shape_string(), cols, rows);
  }
  if (!kern::traits(t.type).supported) {
    fail("{}: tensor '{}': type {} has no kernels in ranklm (supported: F32, F16, BF16, Q4_0, "
         "Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); requantize the model",
         f.path(), name, kern::type_name(t.type));
  }
  return kern::MatrixView{t.type, t.data, rows, cols};
}

std::vector<float> vector_f32(const gguf::File& f, const std::string& name, int64_t n) {
  const gguf::TensorInfo& t = f.tensor(name);
  if (t.n_elements() != n) {
    fail("{}: tensor '{}': {} elements {} (expected {})", f.path(), name, t.n_elements(),
         t.shape_string(), n);
  }
  const kern::TypeTraits& tt = kern::traits(t.type);
  if (!tt.supported) fail("{}: tensor '{}': type {} not supported", f.path(), name, tt.name);
  std::vector<float> out(static_cast<size_t>(n));
  tt.dequantize(t.data, out.data(), n);
  return out;
}

}  // namespace ranklm
