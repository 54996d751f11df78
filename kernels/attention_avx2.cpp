// AVX2 + FMA + F16C attention over the fp16 KV cache: the same single-pass online softmax as
// the portable kernel in ops.cpp (Q rounded to fp16, running output rounded to fp16 after
// every update, rescaled when a new maximum appears), done for up to 8 query rows at once.
//
// The rows of a job share one KV head (query heads of a group, and consecutive tokens), so
// each key and value row is converted to float once and used by all of them, and the rows'
// online-softmax chains are independent: their scores, maxima, sums and exponentials live in
// the 8 lanes of one vector. A row that is past its causal end gets a score of -inf, which
// leaves its state untouched (weight exp(-inf) = 0, rescale exp(0) = 1).
//
// Differences from the portable kernel: the summation order of the dot product and a
// polynomial exp (within 2 ulp of expf); each can flip an fp16 rounding now and then.
//
// Compiled with -mavx2 -mfma -mf16c and called only when the CPU has them; it includes no
// standard-library headers with inline functions (see packed_tiles.h for why).
#include <immintrin.h>

#include "attention_simd.h"
#include "attn_seq.h"

namespace ranklm::kern {

namespace {

inline __m256 round_fp16(__m256 x) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

inline __m256 load_ph(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// exp(x) for 8 lanes: x = n ln2 + r, |r| <= ln2 / 2, degree-6 Taylor polynomial for e^r, then
// scaling by 2^n through the exponent bits. exp(0) is exactly 1; below -87.3 the result is 0.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3f)), lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // 2^n: n in [-126, 127] after the clamp; split in two factors so n = 128 cannot overflow.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
  return _mm256_andnot_ps(zero_mask, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}

// Sums of 8 vectors, one per lane.
inline __m256 hsum8(const __m256 (&s)[8]) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(s[4], s[5]), _mm256_hadd_ps(s[6], s[7]));
  // a = [r0 r1 r2 r3 | r0 r1 r2 r3] halves of rows 0-3, b the same for rows 4-7.
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

}  // namespace

void attention_jobs_avx2(const AttentionArgs& a, int64_t job0, int64_t job1) {
  const int hd = a.head_dim;
  const int group = a.n_head / a.n_head_kv;
  const int64_t kv_stride = static_cast<int64_t>(a.n_head_kv) * hd;
  const int64_t q_stride = static_cast<int64_t>(a.n_head) * hd;
  alignas(32) float qh[8][kMaxSimdHeadDim];
  alignas(32) float acc[8][kMaxSimdHeadDim];
  alignas(32) float kf[kMaxSimdHeadDim];
  alignas(32) float vf[kMaxSimdHeadDim];
  alignas(32) float ms_l[8], vs_l[8];
  int si = 0;
  while (a.job_begin[si + 1] <= job0) ++si;
  for (int64_t gjob = job0; gjob < job1; ++gjob) {
    while (a.job_begin[si + 1] <= gjob) ++si;
    const AttnSeq& sq = a.seqs[si];
    const int64_t job = gjob - a.job_begin[si];
    const int64_t n_tok = sq.n_tok, pos0 = sq.pos0, bl = sq.block_len;
    const int hc = static_cast<int>(job % a.head_chunks);
    const int kvh = static_cast<int>((job / a.head_chunks) % a.n_head_kv);
    // Tiles in zig-zag order (first, last, second, second to last, ...): causal rows get
    // dearer with the token, and the pool hands out contiguous job ranges.
    const int64_t n_tiles = (n_tok + a.tokens_per_job - 1) / a.tokens_per_job;
    const int64_t z = job / a.head_chunks / a.n_head_kv;
    const int64_t tile = z % 2 == 0 ? z / 2 : n_tiles - 1 - z / 2;
    // The job's rows: tokens t_r, heads h_r, last key index (causal) last_r.
    int nr = 0;
    int64_t row_t[8], row_last[8];
    int row_h[8];
    for (int ti = 0; ti < a.tokens_per_job; ++ti) {
      const int64_t t = tile * a.tokens_per_job + ti;
      if (t >= n_tok) break;
      for (int hi = 0; hi < a.heads_per_job; ++hi) {
        const int gi = hc * a.heads_per_job + hi;
        if (gi >= group) break;
        row_t[nr] = t;
        row_h[nr] = kvh * group + gi;
        row_last[nr] = pos0 + t;
        ++nr;
      }
    }
    // Each row's keys: first_r .. last_r (first_r > 0 only under a sliding window).
    alignas(32) float last_f[8], first_f[8];
    int64_t j0 = row_last[0];
    for (int r = 0; r < 8; ++r) {
      const int64_t first = r < nr && a.window > 0 && row_last[r] + 1 > a.window ? row_last[r] + 1 - a.window : 0;
      if (r < nr && first < j0) j0 = first;
      last_f[r] = r < nr ? static_cast<float>(row_last[r]) : -1.0f;
      first_f[r] = static_cast<float>(first);
    }
    const __m256 last_v = _mm256_load_ps(last_f), first_v = _mm256_load_ps(first_f);
    for (int r = 0; r < nr; ++r) {
      const float* qp = sq.q + row_t[r] * q_stride + static_cast<int64_t>(row_h[r]) * hd;
      for (int d = 0; d < hd; d += 8) {
        _mm256_store_ps(qh[r] + d, round_fp16(_mm256_loadu_ps(qp + d)));
        _mm256_store_ps(acc[r] + d, _mm256_setzero_ps());
      }
    }
    int64_t n_keys = 0;
    for (int r = 0; r < nr; ++r) n_keys = row_last[r] + 1 > n_keys ? row_last[r] + 1 : n_keys;
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    __m256 m = ninf, sum = _mm256_setzero_ps();
    const __m256 scale = _mm256_set1_ps(a.scale);
    for (int64_t j = j0; j < n_keys; ++j) {
      const int64_t in_block = (j % bl) * kv_stride + static_cast<int64_t>(kvh) * hd;
      const uint16_t* kp = sq.k_blocks[j / bl] + in_block;
      const uint16_t* vp = sq.v_blocks[j / bl] + in_block;
      for (int d = 0; d < hd; d += 8) {
        _mm256_store_ps(kf + d, load_ph(kp + d));
        _mm256_store_ps(vf + d, load_ph(vp + d));
      }
      __m256 dots[8];
      for (int r = 0; r < 8; ++r) dots[r] = _mm256_setzero_ps();
      for (int r = 0; r < nr; ++r) {
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int d = 0;
        for (; d + 16 <= hd; d += 16) {
          s0 = _mm256_fmadd_ps(_mm256_load_ps(qh[r] + d), _mm256_load_ps(kf + d), s0);
          s1 = _mm256_fmadd_ps(_mm256_load_ps(qh[r] + d + 8), _mm256_load_ps(kf + d + 8), s1);
        }
        if (d < hd) s0 = _mm256_fmadd_ps(_mm256_load_ps(qh[r] + d), _mm256_load_ps(kf + d), s0);
        dots[r] = _mm256_add_ps(s0, s1);
      }
      // Rows outside their keys (past the causal end, before the window, unused lanes) keep
      // their state: rescale 1, weight 0 (a row may not have seen a key yet, m = -inf).
      const __m256 jv = _mm256_set1_ps(static_cast<float>(j));
      const __m256 live = _mm256_and_ps(_mm256_cmp_ps(jv, last_v, _CMP_LE_OQ), _mm256_cmp_ps(jv, first_v, _CMP_GE_OQ));
      const __m256 s = _mm256_blendv_ps(ninf, _mm256_mul_ps(hsum8(dots), scale), live);
      const __m256 m_new = _mm256_max_ps(m, s);
      const __m256 one = _mm256_set1_ps(1.0f);
      const __m256 ms = _mm256_blendv_ps(one, exp8(_mm256_sub_ps(m, m_new)), live);  // 1 unless a new maximum
      const __m256 vs = _mm256_and_ps(exp8(_mm256_sub_ps(s, m_new)), live);          // 1 for a new maximum
      m = m_new;
      sum = _mm256_fmadd_ps(sum, ms, vs);
      const int rescale = _mm256_movemask_ps(_mm256_cmp_ps(ms, _mm256_set1_ps(1.0f), _CMP_NEQ_UQ));
      _mm256_store_ps(ms_l, ms);
      _mm256_store_ps(vs_l, vs);
      for (int r = 0; r < nr; ++r) {
        if (rescale & (1 << r)) {
          const __m256 f = _mm256_set1_ps(ms_l[r]);
          for (int d = 0; d < hd; d += 8) _mm256_store_ps(acc[r] + d, round_fp16(_mm256_mul_ps(_mm256_load_ps(acc[r] + d), f)));
        }
        if (vs_l[r] == 0.0f) continue;
        const __m256 f = _mm256_set1_ps(vs_l[r]);
        for (int d = 0; d < hd; d += 8) {
          _mm256_store_ps(acc[r] + d, round_fp16(_mm256_fmadd_ps(_mm256_load_ps(vf + d), f, _mm256_load_ps(acc[r] + d))));
        }
      }
    }
    alignas(32) float sum_l[8];
    _mm256_store_ps(sum_l, sum);
    for (int r = 0; r < nr; ++r) {
      float* o = sq.out + row_t[r] * q_stride + static_cast<int64_t>(row_h[r]) * hd;
      const __m256 inv = _mm256_set1_ps(1.0f / sum_l[r]);
      for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_load_ps(acc[r] + d), inv));
    }
  }
}

}  // namespace ranklm::kern
