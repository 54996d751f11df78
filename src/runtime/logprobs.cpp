#include "runtime/logprobs.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace ranklm::runtime {

namespace {

// exp(x) for x <= 0 in float, written so the compiler vectorizes the loop below: 2^(x log2 e)
// split into an integer power (built in the exponent bits) and the degree-6 Taylor polynomial of
// 2^f on [-0.5, 0.5] (relative error below 1e-7; far below what a log-probability shows).
inline float exp_nonpos(float x) {
  x = std::max(x, -87.0f);
  const float t = x * 1.44269504088896341f;
  const float k = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23), without a libm call
  const float f = t - k;  // [-0.5, 0.5]
  float p = 1.5403530e-4f;
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022652e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const int32_t e = (static_cast<int32_t>(k) + 127) << 23;
  return p * std::bit_cast<float>(e);
}

}  // namespace

double log_sum_exp(const float* l, int64_t n) {
  if (n <= 0) return -INFINITY;
  float mx = l[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, l[i]);
  if (!std::isfinite(mx)) return mx;
  // 16 partial sums in float (a fixed order, vectorizable), summed in double at the end.
  constexpr int kLanes = 16;
  float part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) part[j] += exp_nonpos(l[i + j] - mx);
  }
  double sum = 0;
  for (int j = 0; j < kLanes; ++j) sum += part[j];
  for (; i < n; ++i) sum += exp_nonpos(l[i] - mx);
  return static_cast<double>(mx) + std::log(sum);
}

TokenLogprob token_logprob(const float* l, int64_t n_vocab, int32_t token, int k) {
  const double lz = log_sum_exp(l, n_vocab);
  TokenLogprob e;
  e.token = token;
  e.logprob = token >= 0 && token < n_vocab ? static_cast<float>(l[token] - lz) : -INFINITY;
  k = static_cast<int>(std::clamp<int64_t>(k, 0, std::min<int64_t>(kMaxTopLogprobs, n_vocab)));
  if (k == 0) return e;
  // The k largest in one pass: a small sorted list, best first (ties: lower id first).
  auto better = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  std::vector<int32_t> best;
  best.reserve(static_cast<size_t>(k) + 1);
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (static_cast<int>(best.size()) == k && !better(i, best.back())) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), i, better), i);
    if (static_cast<int>(best.size()) > k) best.pop_back();
  }
  for (int32_t t : best) e.top.push_back({t, static_cast<float>(l[t] - lz)});
  return e;
}

LogprobWire to_wire(const TokenLogprob& e) {
  LogprobWire w{};
  w.token = e.token;
  w.logprob = e.logprob;
  w.n_top = static_cast<int32_t>(std::min<size_t>(e.top.size(), kMaxTopLogprobs));
  std::copy_n(e.top.begin(), w.n_top, w.top);
  return w;
}

TokenLogprob from_wire(const LogprobWire& w, int64_t n_vocab) {
  if (w.n_top < 0 || w.n_top > kMaxTopLogprobs || w.token < 0 || w.token >= n_vocab) {
    fail("step protocol: a log-probability record (token {}, {} alternatives) is malformed", w.token, w.n_top);
  }
  TokenLogprob e;
  e.token = w.token;
  e.logprob = w.logprob;
  for (int32_t i = 0; i < w.n_top; ++i) {
    if (w.top[i].token < 0 || w.top[i].token >= n_vocab) fail("step protocol: a log-probability record names token {}", w.top[i].token);
    e.top.push_back(w.top[i]);
  }
  return e;
}

}  // namespace ranklm::runtime
