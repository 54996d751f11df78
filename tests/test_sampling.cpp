// Sampler (greedy, temperature, top-k, top-p, min-p, repetition penalty, seed) and stop strings.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/sampler.h"
#include "tokenizer/stop.h"
#include "test_util.h"

namespace ranklm {
namespace {

std::vector<float> random_logits(uint32_t seed, size_t n = 64) { return test::random_floats(n, seed, 2.0f); }

// Temperature `t` with top-k, top-p and min-p all off.
SamplingParams unfiltered(float t) {
  SamplingParams p;
  p.temperature = t;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  return p;
}

int32_t argmax(const std::vector<float>& l) {
  return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
}

std::map<int32_t, int> histogram(SamplingParams p, const std::vector<float>& l, int n) {
  Sampler s(p);
  std::map<int32_t, int> h;
  for (int k = 0; k < n; ++k) ++h[s.sample(l.data(), static_cast<int64_t>(l.size()), {})];
  return h;
}

TEST(Sampler, GreedyPicksArgmax) {
  SamplingParams p;
  p.temperature = 0;
  for (uint32_t seed = 1; seed < 20; ++seed) {
    const auto l = random_logits(seed);
    Sampler s(p);
    EXPECT_EQ(s.sample(l.data(), static_cast<int64_t>(l.size()), {}), argmax(l));
  }
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  SamplingParams p = unfiltered(1.5f);
  const auto l = random_logits(3);
  std::vector<int32_t> a, b, c;
  Sampler sa(p), sb(p);
  p.seed = 99;
  Sampler sc(p);
  for (int k = 0; k < 50; ++k) {
    a.push_back(sa.sample(l.data(), 64, {}));
    b.push_back(sb.sample(l.data(), 64, {}));
    c.push_back(sc.sample(l.data(), 64, {}));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampler, TemperatureOneFollowsSoftmax) {
  SamplingParams p = unfiltered(1);
  const std::vector<float> l = {1.0f, 0.0f, -1.0f, 0.5f};
  const int n = 40000;
  const auto h = histogram(p, l, n);
  double z = 0;
  for (float x : l) z += std::exp(x);
  for (int32_t t = 0; t < 4; ++t) {
    const double expect = std::exp(l[t]) / z;
    const double got = static_cast<double>(h.count(t) ? h.at(t) : 0) / n;
    EXPECT_NEAR(got, expect, 4 * std::sqrt(expect * (1 - expect) / n)) << "token " << t;
  }
}

TEST(Sampler, TopKLimitsCandidates) {
  SamplingParams p;
  p.temperature = 5;  // flat, so every allowed token shows up
  p.top_k = 3;
  p.top_p = 1;
  p.min_p = 0;
  const auto l = random_logits(5);
  auto sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const auto h = histogram(p, l, 3000);
  EXPECT_EQ(h.size(), 3u);
  for (const auto& [t, c] : h) EXPECT_GE(l[t], sorted[2]);
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  SamplingParams p;
  p.temperature = 1;
  p.top_k = 0;
  p.min_p = 0;
  p.top_p = 0.7f;
  // probabilities 0.5, 0.3, 0.2 (in logit space): nucleus for 0.7 is {0, 1}
  const std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const auto h = histogram(p, l, 5000);
  EXPECT_EQ(h.count(2), 0u);
  EXPECT_GT(h.at(0), h.at(1));
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0.5f;
  // p = 0.4, 0.3, 0.19, 0.11: min-p 0.5 keeps tokens with p >= 0.2 -> {0, 1}
  const std::vector<float> l = {std::log(0.4f), std::log(0.3f), std::log(0.19f), std::log(0.11f)};
  const auto h = histogram(p, l, 5000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.temperature = 0;
  p.repeat_penalty = 1.5f;
  std::vector<float> l = {2.0f, 1.8f, -1.0f, -1.1f};
  Sampler s(p);
  EXPECT_EQ(s.sample(l.data(), 4, {0}), 1);     // 2.0 / 1.5 < 1.8
  EXPECT_EQ(s.sample(l.data(), 4, {5, 7}), 0);  // unrelated history (and out-of-range ids) change nothing
  l = {-1.0f, -1.2f, -5.0f, -5.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {0}), 1);     // negative logits are multiplied: -1.5 < -1.2
}

TEST(Sampler, LogitBiasMovesTokensAndMinus100BansThem) {
  for (uint32_t seed = 1; seed < 10; ++seed) {
    const auto l = random_logits(seed);
    const int32_t best = argmax(l);
    SamplingParams p;
    p.temperature = 0;
    p.logit_bias = {{best, -100.0f}};
    Sampler s(p);
    auto l2 = l;
    l2[static_cast<size_t>(best)] = -1e30f;
    EXPECT_EQ(s.sample(l.data(), 64, {}), argmax(l2));  // the banned token never wins
    const int32_t low = static_cast<int32_t>(std::min_element(l.begin(), l.end()) - l.begin());
    p.logit_bias = {{low, 100.0f}, {9999, 100.0f}};     // an id past the vocabulary changes nothing
    Sampler up(p);
    EXPECT_EQ(up.sample(l.data(), 64, {}), low);
    // Sampled at temperature 1: a banned token is never drawn.
    SamplingParams q = unfiltered(1.0f);
    q.logit_bias = {{best, -100.0f}};
    q.seed = seed;
    const auto h = histogram(q, l, 500);
    EXPECT_EQ(h.count(best), 0u);
  }
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokensOnly) {
  // Token 0 leads token 1 by 1.0. The prompt (first 3 history entries) holds token 0 many
  // times: that counts for nothing. Generated: token 0 twice.
  const std::vector<float> l = {3.0f, 2.0f, 0.0f, -1.0f};
  const std::vector<int32_t> prompt_only = {0, 0, 0};
  const std::vector<int32_t> generated = {0, 0, 0, 0, 0};
  auto pick = [&](float freq, float pres, const std::vector<int32_t>& h) {
    SamplingParams p;
    p.temperature = 0;
    p.frequency_penalty = freq;
    p.presence_penalty = pres;
    Sampler s(p, 3);
    return s.sample(l.data(), 4, h);
  };
  EXPECT_EQ(pick(2.0f, 2.0f, prompt_only), 0);  // the prompt's tokens are not penalised
  EXPECT_EQ(pick(0.4f, 0.0f, generated), 0);    // 3.0 - 2 * 0.4 = 2.2 > 2.0
  EXPECT_EQ(pick(0.6f, 0.0f, generated), 1);    // 3.0 - 2 * 0.6 = 1.8 < 2.0
  EXPECT_EQ(pick(0.0f, 0.9f, generated), 0);    // presence counts once: 2.1 > 2.0
  EXPECT_EQ(pick(0.0f, 1.1f, generated), 1);    // 1.9 < 2.0
  EXPECT_EQ(pick(-1.5f, 0.0f, {0, 0, 0, 1}), 1);  // a negative penalty promotes: 2.0 + 1.5 > 3.0
  // Counted incrementally: each call sees the tokens generated since the last.
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.6f;
  Sampler s(p, 1);
  std::vector<int32_t> h = {2};
  EXPECT_EQ(s.sample(l.data(), 4, h), 0);
  h.push_back(0);
  EXPECT_EQ(s.sample(l.data(), 4, h), 0);  // 3.0 - 0.6 = 2.4
  h.push_back(0);
  EXPECT_EQ(s.sample(l.data(), 4, h), 1);  // 3.0 - 1.2 = 1.8
}

TEST(StopMatcher, ReleasesTextThatCannotStartAStop) {
  StopMatcher m({"<end>", "\n\n"});
  std::string out;
  out += m.push("Hello <e");
  EXPECT_EQ(out, "Hello ");  // "<e" may start "<end>"
  out += m.push("x");
  EXPECT_EQ(out, "Hello <ex");
  out += m.push(" world\n");
  EXPECT_EQ(out, "Hello <ex world");  // "\n" may start "\n\n"
  EXPECT_FALSE(m.stopped());
  out += m.push("\nmore");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "Hello <ex world");
  EXPECT_EQ(m.push("ignored"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSplitAcrossPiecesAndFlush) {
  StopMatcher m({"STOP"});
  std::string out = m.push("abcST");
  out += m.push("O");
  EXPECT_EQ(out, "abc");
  out += m.push("P tail");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "abc");

  StopMatcher n({"STOP"});
  std::string o = n.push("endS");
  o += n.flush();  // generation ended for another reason: the held-back text is released
  EXPECT_EQ(o, "endS");

  StopMatcher none({});
  EXPECT_EQ(none.push("anything"), "anything");
}

}  // namespace
}  // namespace ranklm
