// The per-instruction-set attention kernels behind kern::attention (ops.h).
#pragma once

#include <cstdint>

namespace ranklm::kern {

struct AttnSeq;

struct AttentionArgs {
  const AttnSeq* seqs;
  const int64_t* job_begin;  // [n_seq + 1]: the first job of each sequence (and the total)
  int n_seq;
  int n_head, n_head_kv, head_dim;
  float scale;
  int64_t window;  // keys within `window` positions of the query (sliding window); 0: all
  // Work split, set by attention_batch(): a job takes one sequence, one KV head,
  // `heads_per_job` of its query heads (chunk `head_chunk` of n_head / n_head_kv) and
  // `tokens_per_job` consecutive tokens, so up to 8 query rows walk the same keys together.
  int heads_per_job, head_chunks, tokens_per_job;
};

// Largest head size the SIMD kernels take (they keep their rows on the stack); head sizes must
// also be a multiple of 8. Others use the portable kernel.
constexpr int kMaxSimdHeadDim = 256;

// Jobs [job0, job1); within a sequence, job = (token tile * n_head_kv + kv head) * head_chunks
// + head chunk.
// AVX2 + FMA + F16C.
void attention_jobs_avx2(const AttentionArgs& a, int64_t job0, int64_t job1);

}  // namespace ranklm::kern
