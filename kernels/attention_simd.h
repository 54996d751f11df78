// The per-instruction-set attention kernels behind kern::attention (ops.h).
#pragma once

#include <cstdint>

namespace ranklm::kern {

struct AttentionArgs {
  const float* q;
  const uint16_t* k;
  const uint16_t* v;
  int64_t pos0;
  int n_head, n_head_kv, head_dim;
  float scale;
  float* out;
};

// Largest head size the SIMD kernels take (they keep one head on the stack); head sizes must
// also be a multiple of 8. Others use the portable kernel.
constexpr int kMaxSimdHeadDim = 512;

// Jobs [job0, job1) of attention, job = token * n_head + head. AVX2 + FMA + F16C.
void attention_jobs_avx2(const AttentionArgs& a, int64_t job0, int64_t job1);

}  // namespace ranklm::kern
