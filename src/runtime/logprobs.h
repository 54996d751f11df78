// Log-probabilities of the model's own distribution (before logit bias, penalties, temperature
// and the other samplers, as the OpenAI API and vLLM report them): log_softmax of a logits row.
// Computed on the head rank, so only the chosen numbers cross the wire: for a generated token,
// its log-probability and the k most likely tokens; for a prompt token (scoring), the same for
// the prompt's next token, from the row of the position before it.
#pragma once

#include <cstdint>
#include <vector>

namespace ranklm::runtime {

constexpr int kMaxTopLogprobs = 20;  // OpenAI's bound on top_logprobs (vLLM's default max_logprobs)

struct TopLogprob {
  int32_t token;
  float logprob;
  bool operator==(const TopLogprob&) const = default;
};

// One token's entry: the token (generated, or the prompt's next), its log-probability, and the
// `top` most likely tokens of that position, most likely first (ties: lower id first).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<TopLogprob> top;
  bool operator==(const TokenLogprob&) const = default;
};

// What a request asks for: -1 nothing; 0..kMaxTopLogprobs the token's own log-probability and
// that many alternatives. `generated`: the tokens it generates; `prompt`: its prompt tokens
// after the first (scoring).
struct LogprobAsk {
  int generated = -1, prompt = -1;
  bool any() const { return generated >= 0 || prompt >= 0; }
};

// Whether the logits row of position `pos` of a sequence with an n_prompt-token prompt is a
// prompt row (it scores prompt token pos + 1) rather than a sampling row, and whether `ask`
// wants an entry for it. The head rank and rank 0 use the same rule.
inline bool is_prompt_row(int64_t pos, int64_t n_prompt) { return pos + 1 < n_prompt; }
inline bool wants_entry(const LogprobAsk& ask, int64_t pos, int64_t n_prompt) {
  return is_prompt_row(pos, n_prompt) ? ask.prompt >= 0 : ask.generated >= 0;
}

// log(sum(exp(l[i]))) over l[0..n), in a fixed order (the same bits on every rank layout).
double log_sum_exp(const float* l, int64_t n);
// The entry of `token` from a logits row of n_vocab values, with the k most likely tokens.
TokenLogprob token_logprob(const float* l, int64_t n_vocab, int32_t token, int k);

// On the wire (head rank -> rank 0), one fixed-size record per entry.
struct LogprobWire {
  int32_t token;
  float logprob;
  int32_t n_top;
  int32_t reserved;
  TopLogprob top[kMaxTopLogprobs];
};
static_assert(sizeof(LogprobWire) == 16 + 8 * kMaxTopLogprobs, "log-probability record layout");
LogprobWire to_wire(const TokenLogprob& e);
// Checks the record (counts, token ids below n_vocab) as untrusted input.
TokenLogprob from_wire(const LogprobWire& w, int64_t n_vocab);

}  // namespace ranklm::runtime
