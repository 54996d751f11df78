#include "ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_simd.h"
#include "cpu.h"
#include "fp16.h"

namespace ranklm::kern {

void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double sum = 0.0;
    // Squares in float, summed in double, as ggml does (the last bits decide activation roundings).
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(xr[i] * xr[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < n; ++i) o[i] = (xr[i] * scale) * w[i];
  }
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void silu_mul_inplace(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

namespace {

// ggml's GELU (tanh form) at every fp16 value, rounded to fp16: what its CPU backend looks up.
const std::vector<uint16_t>& gelu_fp16_table() {
  static const std::vector<uint16_t> table = [] {
    std::vector<uint16_t> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) {
      const float x = fp16_to_fp32(static_cast<uint16_t>(h));
      const float g = 0.5f * x * (1.0f + std::tanh(0.79788456080286535588f * x * (1.0f + 0.044715f * x * x)));
      t[h] = fp32_to_fp16(g);
    }
    return t;
  }();
  return table;
}

}  // namespace

void gelu_mul_inplace(float* gate, const float* up, int64_t n) {
  const std::vector<uint16_t>& table = gelu_fp16_table();
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    float g;
    if (x <= -10.0f) {
      g = 0.0f;
    } else if (x >= 10.0f) {
      g = x;
    } else {
      g = fp16_to_fp32(table[fp32_to_fp16(x)]);
    }
    gate[i] = g * up[i];
  }
}

void softmax_inplace(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void rope_inplace(float* x, int64_t n_tok, int n_heads, int head_dim, const int32_t* pos,
                  const RopeParams& p) {
  const int half = p.n_dims / 2;
  std::vector<float> cs(half), sn(half);
  // theta_i = pos * base^(-2i/n_dims), built by repeated multiplication as ggml does.
  const float theta_scale = std::pow(p.freq_base, -2.0f / static_cast<float>(p.n_dims));
  for (int64_t t = 0; t < n_tok; ++t) {
    float theta = static_cast<float>(pos[t]);
    for (int i = 0; i < half; ++i) {
      const float ff = p.freq_factors ? p.freq_factors[i] : 1.0f;
      const float th = p.freq_scale * (theta / ff);
      cs[i] = std::cos(th);
      sn[i] = std::sin(th);
      theta *= theta_scale;
    }
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * static_cast<int64_t>(head_dim);
      for (int i = 0; i < half; ++i) {
        const int a = p.neox ? i : 2 * i;
        const int b = p.neox ? i + half : 2 * i + 1;
        const float x0 = v[a];
        const float x1 = v[b];
        v[a] = x0 * cs[i] - x1 * sn[i];
        v[b] = x0 * sn[i] + x1 * cs[i];
      }
    }
  }
}

void attention_batch(const AttnSeq* seqs, int n_seq, int n_head, int n_head_kv, int head_dim, float scale,
                     ThreadPool& pool, int64_t window) {
  // Single-pass ("flash") attention with an online softmax. Rounding follows llama.cpp's CPU
  // kernel for an fp16 cache: Q is rounded to fp16, the running output is kept in fp16, and it
  // is rescaled whenever a new maximum score appears. This keeps results within float noise of
  // llama.cpp, which matters because the next matmul re-quantizes its input.
  if (n_seq <= 0) return;
  const int group = n_head / n_head_kv;
  std::vector<int64_t> job_begin(static_cast<size_t>(n_seq) + 1, 0);
  if (active_isa() >= Isa::Avx2 && head_dim % 8 == 0 && head_dim <= kMaxSimdHeadDim) {
    AttentionArgs args{seqs, job_begin.data(), n_seq, n_head, n_head_kv, head_dim, scale, window, 0, 0, 0};
    args.heads_per_job = std::min(group, 8);
    args.head_chunks = (group + args.heads_per_job - 1) / args.heads_per_job;
    args.tokens_per_job = 8 / args.heads_per_job;
    for (int i = 0; i < n_seq; ++i) {
      const int64_t tiles = (seqs[i].n_tok + args.tokens_per_job - 1) / args.tokens_per_job;
      job_begin[i + 1] = job_begin[i] + tiles * n_head_kv * args.head_chunks;
    }
    pool.parallel_for(job_begin[n_seq], [&](int64_t b, int64_t e, int) { attention_jobs_avx2(args, b, e); });
    return;
  }
  const int64_t kv_stride = static_cast<int64_t>(n_head_kv) * head_dim;
  const int64_t q_stride = static_cast<int64_t>(n_head) * head_dim;
  for (int i = 0; i < n_seq; ++i) job_begin[i + 1] = job_begin[i] + seqs[i].n_tok * n_head;
  pool.parallel_for(job_begin[n_seq], [&](int64_t b, int64_t e, int) {
    std::vector<float> qh(head_dim);
    std::vector<uint16_t> acc(head_dim);  // fp16 running output
    int si = 0;
    for (int64_t gjob = b; gjob < e; ++gjob) {
      while (job_begin[si + 1] <= gjob) ++si;
      const AttnSeq& sq = seqs[si];
      const int64_t job = gjob - job_begin[si];
      const int64_t t = job / n_head;
      const int h = static_cast<int>(job % n_head);
      const int kvh = h / group;
      const int64_t n_keys = sq.pos0 + t + 1;  // causal: keys 0 .. pos0 + t
      const int64_t first = window > 0 ? std::max<int64_t>(0, n_keys - window) : 0;
      const float* qp = sq.q + t * q_stride + static_cast<int64_t>(h) * head_dim;
      for (int d = 0; d < head_dim; ++d) qh[d] = fp16_to_fp32(fp32_to_fp16(qp[d]));
      std::fill(acc.begin(), acc.end(), 0);
      float m = -INFINITY;
      float sum = 0.0f;
      for (int64_t j = first; j < n_keys; ++j) {
        const int64_t in_block = (j % sq.block_len) * kv_stride + static_cast<int64_t>(kvh) * head_dim;
        const uint16_t* kp = sq.k_blocks[j / sq.block_len] + in_block;
        const uint16_t* vp = sq.v_blocks[j / sq.block_len] + in_block;
        float s = 0.0f;
        for (int d = 0; d < head_dim; ++d) s += qh[d] * fp16_to_fp32(kp[d]);
        s *= scale;
        float ms = 1.0f;
        float vs = 1.0f;
        if (s > m) {
          const float m_old = m;
          m = s;
          ms = std::exp(m_old - m);
          for (int d = 0; d < head_dim; ++d) acc[d] = fp32_to_fp16(fp16_to_fp32(acc[d]) * ms);
        } else {
          vs = std::exp(s - m);
        }
        for (int d = 0; d < head_dim; ++d) {
          acc[d] = fp32_to_fp16(std::fma(fp16_to_fp32(vp[d]), vs, fp16_to_fp32(acc[d])));
        }
        sum = sum * ms + vs;
      }
      float* o = sq.out + t * q_stride + static_cast<int64_t>(h) * head_dim;
      const float inv = 1.0f / sum;
      for (int d = 0; d < head_dim; ++d) o[d] = fp16_to_fp32(acc[d]) * inv;
    }
  });
}

void attention(const float* q, const uint16_t* k, const uint16_t* v, int64_t n_tok, int64_t pos0,
               int n_head, int n_head_kv, int head_dim, float scale, float* out, ThreadPool& pool,
               int64_t window) {
  const AttnSeq one{q, out, &k, &v, pos0 + n_tok, n_tok, pos0};
  attention_batch(&one, 1, n_head, n_head_kv, head_dim, scale, pool, window);
}

void attention_reference(const float* q, const uint16_t* k, const uint16_t* v, int64_t n_tok,
                         int64_t pos0, int n_head, int n_head_kv, int head_dim, float scale,
                         float* out, int64_t window) {
  const int group = n_head / n_head_kv;
  const int64_t kv_stride = static_cast<int64_t>(n_head_kv) * head_dim;
  const int64_t q_stride = static_cast<int64_t>(n_head) * head_dim;
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int h = 0; h < n_head; ++h) {
      const int kvh = h / group;
      const int64_t n_keys = pos0 + t + 1;
      const int64_t first = window > 0 ? std::max<int64_t>(0, n_keys - window) : 0;
      std::vector<double> s(n_keys, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = first; j < n_keys; ++j) {
        double acc = 0.0;
        for (int d = 0; d < head_dim; ++d) {
          acc += static_cast<double>(q[t * q_stride + h * head_dim + d]) *
                 fp16_to_fp32(k[j * kv_stride + kvh * head_dim + d]);
        }
        s[j] = acc * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0.0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int d = 0; d < head_dim; ++d) {
        double acc = 0.0;
        for (int64_t j = first; j < n_keys; ++j) {
          acc += s[j] / sum * fp16_to_fp32(v[j * kv_stride + kvh * head_dim + d]);
        }
        out[t * q_stride + h * head_dim + d] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace ranklm::kern
