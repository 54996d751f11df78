// Element-wise and attention operators on float activations. Shapes are given in comments as
// [rows, cols] with cols contiguous. None of these know about models, files or ranks.
#pragma once

#include <cstdint>

#include "attn_seq.h"
#include "threadpool.h"

namespace ranklm::kern {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]   for each of n_rows rows of n.
void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* out);

// x[i] += y[i]
void add_inplace(float* x, const float* y, int64_t n);

// gate[i] = silu(gate[i]) * up[i]
void silu_mul_inplace(float* gate, const float* up, int64_t n);

// In-place softmax of one row of n values.
void softmax_inplace(float* x, int64_t n);

struct RopeParams {
  int n_dims = 0;                        // rotated dimensions per head (<= head_dim)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;               // 1 / linear scaling factor
  bool neox = false;                     // pairs (i, i + n_dims/2) instead of (2i, 2i+1)
  const float* freq_factors = nullptr;   // [n_dims/2] divisors (Llama 3 scaling), or null
};

// Rotates every head of x: [n_tok, n_heads * head_dim], token t at position pos[t].
void rope_inplace(float* x, int64_t n_tok, int n_heads, int head_dim, const int32_t* pos,
                  const RopeParams& p);

// Causal attention for every sequence of a batch in one pass over the pool (the jobs of all
// sequences share it, so many one-token sequences cost one parallel section, not one each).
// Each output row is the same as attention() gives for that sequence alone. With window > 0 the
// query at position p sees only keys p - window + 1 .. p (sliding-window attention).
void attention_batch(const AttnSeq* seqs, int n_seq, int n_head, int n_head_kv, int head_dim, float scale,
                     ThreadPool& pool, int64_t window = 0);

// Causal multi-head attention with grouped KV heads over an fp16 cache.
//   q:   [n_tok, n_head * head_dim]      token t sits at position pos0 + t
//   k,v: [n_ctx, n_head_kv * head_dim]   fp16, positions 0 .. pos0 + n_tok - 1 filled
//   out: [n_tok, n_head * head_dim]
void attention(const float* q, const uint16_t* k, const uint16_t* v, int64_t n_tok, int64_t pos0,
               int n_head, int n_head_kv, int head_dim, float scale, float* out, ThreadPool& pool,
               int64_t window = 0);

// Reference twin of attention in float64.
void attention_reference(const float* q, const uint16_t* k, const uint16_t* v, int64_t n_tok,
                         int64_t pos0, int n_head, int n_head_kv, int head_dim, float scale,
                         float* out, int64_t window = 0);
// gate[i] = gelu(gate[i]) * up[i], GELU in its tanh form, evaluated as ggml's CPU backend does:
// on the input rounded to fp16, the result rounded to fp16 (exact beyond |x| >= 10).
void gelu_mul_inplace(float* gate, const float* up, int64_t n);

}  // namespace ranklm::kern
