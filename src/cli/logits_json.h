// The parity probe's output: logits at every prompt position from one batched prefill, then a
// greedy continuation with the top-5 logits of each step. Same schema as the reference fixtures.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/threadpool.h"
#include "model/model.h"

namespace ranklm {

struct LogitsReport {
  int64_t n_vocab = 0;
  std::vector<int32_t> prompt;
  std::vector<std::vector<float>> logits;                          // [n_prompt][n_vocab]
  std::vector<int32_t> greedy;                                     // [n_greedy]
  std::vector<std::vector<std::pair<int32_t, float>>> greedy_top5; // [n_greedy][5]
};

// forward(tokens, n_tok, pos0, n_out, logits): runs n_tok tokens at pos0.. of one sequence and
// writes logits [n_out, n_vocab] of the last n_out tokens (one model, or the executor).
using ForwardFn = std::function<void(const int32_t*, int64_t, int64_t, int64_t, float*)>;
LogitsReport compute_logits_report(int64_t n_vocab, const ForwardFn& forward, const std::vector<int32_t>& prompt,
                                   int n_greedy);
LogitsReport compute_logits_report(Model& model, const std::vector<int32_t>& prompt, int n_greedy,
                                   kern::ThreadPool& pool);
std::string logits_report_json(const LogitsReport& r);

}  // namespace ranklm
