// Token sampling: logit bias, repetition penalty (over the last tokens, prompt included),
// frequency and presence penalties (over the generated tokens, as OpenAI and vLLM apply them),
// then temperature, top-k, top-p, min-p; greedy when the temperature is 0. Seeded, so the same
// seed gives the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <unordered_map>
#include <utility>
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
  // OpenAI's terms: logit[t] -= count(t) * frequency_penalty + (count(t) > 0) * presence_penalty,
  // count over the tokens generated so far; 0: off.
  float frequency_penalty = 0.0f, presence_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logit of each token id
};


// What sample() returns for logits that hold NaN or +infinity (a damaged model).
constexpr int32_t kBadLogits = -1;

class Sampler {
 public:
  // n_prompt: how many of the history's first tokens are the prompt (not generated).
  explicit Sampler(const SamplingParams& p, size_t n_prompt = 0) : p_(p), rng_(p.seed), counted_(n_prompt) {}
  // Picks the next token from logits [n_vocab]; `history` (the prompt, then every token
  // generated so far) feeds the penalties. kBadLogits when a logit is NaN or +infinity.
  int32_t sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  size_t counted_;                               // history entries already in counts_
  std::unordered_map<int32_t, int64_t> counts_;  // generated tokens' counts
};

}  // namespace ranklm
