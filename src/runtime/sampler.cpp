#include "runtime/sampler.h"

#include <algorithm>
#include <cstddef>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace ranklm {

int32_t Sampler::sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history) {
  for (int64_t i = 0; i < n_vocab; ++i) {
    // NaN or +inf: the weights or hyperparameters are damaged; no token can be picked honestly.
    if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity()) return kBadLogits;
  }
  std::vector<float> l(logits, logits + n_vocab);
  for (const auto& [t, b] : p_.logit_bias) {
    if (t >= 0 && t < n_vocab) l[static_cast<size_t>(t)] += b;
  }
  if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
    for (; counted_ < history.size(); ++counted_) ++counts_[history[counted_]];
    for (const auto& [t, n] : counts_) {
      if (t < 0 || t >= n_vocab) continue;
      l[static_cast<size_t>(t)] -= static_cast<float>(n) * p_.frequency_penalty + p_.presence_penalty;
    }
  }
  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n != 0) {
    const size_t n = p_.repeat_last_n < 0 ? history.size()
                                          : std::min(history.size(), static_cast<size_t>(p_.repeat_last_n));
    std::unordered_set<int32_t> seen(history.end() - static_cast<ptrdiff_t>(n), history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= n_vocab) continue;
      l[t] = l[t] > 0 ? l[t] / p_.repeat_penalty : l[t] * p_.repeat_penalty;
    }
  }
  if (p_.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  }
  std::vector<int32_t> idx(n_vocab);
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  int64_t keep = n_vocab;
  if (p_.top_k > 0 && p_.top_k < n_vocab) {
    keep = p_.top_k;
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
  } else {
    std::sort(idx.begin(), idx.end(), by_logit);
  }
  idx.resize(keep);
  // Softmax at temperature over the kept candidates (sorted, best first).
  std::vector<double> pr(keep);
  const double mx = l[idx[0]];
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += (pr[i] = std::exp((l[idx[i]] - mx) / p_.temperature));
  for (auto& v : pr) v /= sum;
  // min-p: drop tokens below min_p * p(best).
  if (p_.min_p > 0.0f) {
    int64_t k = 1;
    while (k < keep && pr[k] >= p_.min_p * pr[0]) ++k;
    keep = k;
  }
  // top-p: smallest prefix with cumulative probability >= top_p.
  if (p_.top_p < 1.0f) {
    double c = 0;
    int64_t k = 0;
    while (k < keep) {
      c += pr[k++];
      if (c >= p_.top_p) break;
    }
    keep = k;
  }
  std::discrete_distribution<int64_t> dist(pr.begin(), pr.begin() + keep);
  return idx[dist(rng_)];
}

}  // namespace ranklm
