// Token sampling: repetition penalty, then temperature, top-k, top-p, min-p; greedy when the
// temperature is 0. Seeded, so the same seed gives the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace ranklm {

struct SamplingParams {
  float temperature = 0.8f;   // 0: greedy
  int top_k = 40;             // 0: off
  float top_p = 0.95f;        // 1: off
  float min_p = 0.05f;        // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;
  uint64_t seed = 0;
};

// What sample() returns for logits that hold NaN or +infinity (a damaged model).
constexpr int32_t kBadLogits = -1;

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  // Picks the next token from logits [n_vocab]; `history` feeds the repetition penalty.
  // kBadLogits when a logit is NaN or +infinity.
  int32_t sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

}  // namespace ranklm
