#include "cli/logits_json.h"

#include <algorithm>
#include <numeric>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace ranklm {

LogitsReport compute_logits_report(Model& model, const std::vector<int32_t>& prompt, int n_greedy,
                                   kern::ThreadPool& pool) {
  KvCache cache = model.make_cache(static_cast<int64_t>(prompt.size()) + std::max(0, n_greedy));
  return compute_logits_report(
      model.hparams().n_vocab,
      [&](const int32_t* tok, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits) {
        model.forward(tok, n_tok, pos0, cache, n_out == n_tok, logits, pool);
      },
      prompt, n_greedy);
}

LogitsReport compute_logits_report(int64_t nv, const ForwardFn& forward, const std::vector<int32_t>& prompt,
                                   int n_greedy) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  if (n == 0) fail("logits: --tokens is empty");
  LogitsReport r;
  r.n_vocab = nv;
  r.prompt = prompt;
  std::vector<float> all(n * nv);
  forward(prompt.data(), n, 0, n, all.data());
  for (int64_t t = 0; t < n; ++t) r.logits.emplace_back(all.begin() + t * nv, all.begin() + (t + 1) * nv);
  std::vector<float> last(r.logits.back());
  std::vector<int32_t> idx(nv);
  for (int step = 0; step < n_greedy; ++step) {
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + std::min<int64_t>(5, nv), idx.end(),
                      [&](int32_t a, int32_t b) { return last[a] > last[b] || (last[a] == last[b] && a < b); });
    std::vector<std::pair<int32_t, float>> top;
    for (int k = 0; k < std::min<int64_t>(5, nv); ++k) top.emplace_back(idx[k], last[idx[k]]);
    r.greedy_top5.push_back(top);
    const int32_t tok = idx[0];
    r.greedy.push_back(tok);
    if (step + 1 < n_greedy) forward(&tok, 1, n + step, 1, last.data());
  }
  return r;
}

std::string logits_report_json(const LogitsReport& r) {
  nlohmann::ordered_json j;
  j["n_vocab"] = r.n_vocab;
  j["prompt"] = r.prompt;
  j["logits"] = r.logits;
  j["greedy"] = r.greedy;
  nlohmann::json top = nlohmann::json::array();
  for (const auto& step : r.greedy_top5) {
    nlohmann::json s = nlohmann::json::array();
    for (const auto& [id, v] : step) s.push_back({id, v});
    top.push_back(s);
  }
  j["greedy_top5"] = top;
  return j.dump();
}

}  // namespace ranklm
