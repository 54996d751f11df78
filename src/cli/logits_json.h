// The parity probe's output: logits at every prompt position from one batched prefill, then a
// greedy continuation with the top-5 logits of each step. Same schema as the reference fixtures.
#pragma once

#include <cstdint>
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

LogitsReport compute_logits_report(Model& model, const std::vector<int32_t>& prompt, int n_greedy,
                                   kern::ThreadPool& pool);
std::string logits_report_json(const LogitsReport& r);

}  // namespace ranklm
