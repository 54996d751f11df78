// Log-probabilities (runtime/logprobs.h): the log-normalizer and the top alternatives against a
// double-precision reference, and scoring requests through the scheduler: every prompt token's
// entry equals what one model's logits give, the same bits on every layout, with prefixes
// shared between scoring requests (copied entries) or computed again.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "executor_util.h"
#include "kernels/threadpool.h"
#include "runtime/logprobs.h"
#include "tokenizer/tokenizer.h"

using namespace ranklm;

namespace {

// The reference twin: log-softmax in double, alternatives by a full sort.
runtime::TokenLogprob reference_entry(const float* l, int64_t n, int32_t token, int k) {
  double mx = l[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max<double>(mx, l[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(l[i]) - mx);
  const double lz = mx + std::log(sum);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  runtime::TokenLogprob e;
  e.token = token;
  e.logprob = static_cast<float>(l[token] - lz);
  for (int i = 0; i < k; ++i) e.top.push_back({idx[static_cast<size_t>(i)], static_cast<float>(l[idx[static_cast<size_t>(i)]] - lz)});
  return e;
}

void expect_close(const runtime::TokenLogprob& got, const runtime::TokenLogprob& want, double tol) {
  EXPECT_EQ(got.token, want.token);
  EXPECT_NEAR(got.logprob, want.logprob, tol);
  ASSERT_EQ(got.top.size(), want.top.size());
  for (size_t i = 0; i < want.top.size(); ++i) {
    EXPECT_EQ(got.top[i].token, want.top[i].token) << "alternative " << i;
    EXPECT_NEAR(got.top[i].logprob, want.top[i].logprob, tol) << "alternative " << i;
  }
}

}  // namespace

TEST(Logprobs, EntriesMatchADoublePrecisionReference) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{32000}, int64_t{49157}}) {
    SCOPED_TRACE(n);
    std::vector<float> l(static_cast<size_t>(n));
    for (float& x : l) x = nd(rng);
    if (n > 100) {
      l[7] = l[90] = 40.0f;  // a tie at the top: the lower id first
      l[50] = -200.0f;       // far below the rest (exp underflows)
    }
    const int k = static_cast<int>(std::min<int64_t>(n, runtime::kMaxTopLogprobs));
    const int32_t tok = static_cast<int32_t>(n / 2);
    const runtime::TokenLogprob e = runtime::token_logprob(l.data(), n, tok, k);
    expect_close(e, reference_entry(l.data(), n, tok, k), 2e-5);
    if (n > 100) {
      EXPECT_EQ(e.top[0].token, 7);
      EXPECT_EQ(e.top[1].token, 90);
    }
    double p = 0;
    for (const auto& t : e.top) p += std::exp(static_cast<double>(t.logprob));
    EXPECT_LE(p, 1.0 + 1e-5);
    // Through the wire record and back; a malformed record is refused.
    EXPECT_EQ(runtime::from_wire(runtime::to_wire(e), n), e);
    runtime::LogprobWire w = runtime::to_wire(e);
    w.n_top = 21;
    EXPECT_THROW(runtime::from_wire(w, n), Error);
    w = runtime::to_wire(e);
    w.token = static_cast<int32_t>(n);
    EXPECT_THROW(runtime::from_wire(w, n), Error);
  }
}

// Scoring requests (prompt entries, max_tokens 0 or a few generated tokens with their own
// entries) over one model's logits, on every layout, with prefix sharing on and off.
TEST(Executor, ScoringRequestsReportEveryPromptTokensLogprobOnEveryLayout) {
  const std::string path = test::fixture("models/tiny-llama-q4_0.gguf");
  auto f = gguf::File::open(path);
  auto one = Model::load(*f);
  kern::ThreadPool pool(1);
  const int64_t nv = one->hparams().n_vocab;
  std::mt19937 rng(17);
  std::vector<int32_t> context(40);
  for (int32_t& t : context) t = static_cast<int32_t>(1 + rng() % 200);
  std::vector<runtime::Request> reqs;
  std::vector<std::vector<runtime::TokenLogprob>> want_prompt, want_gen;
  for (int i = 0; i < 6; ++i) {
    runtime::Request r;
    r.id = i;
    r.prompt = context;  // lm-eval's shape: one context, several continuations
    for (int k = 0; k < 1 + i % 3; ++k) r.prompt.push_back(static_cast<int32_t>(1 + rng() % 200));
    r.max_tokens = i % 2 == 0 ? 0 : 3;
    r.sampling.temperature = 0;
    r.logprobs = {i % 2 == 0 ? -1 : 2, i == 4 ? 3 : 5};
    // One model, every position's logits.
    const int64_t n = static_cast<int64_t>(r.prompt.size());
    KvCache cache = one->make_cache(64);
    std::vector<float> logits(static_cast<size_t>(n * nv));
    one->forward(r.prompt.data(), n, 0, cache, true, logits.data(), pool);
    std::vector<runtime::TokenLogprob> wp;
    for (int64_t p = 0; p + 1 < n; ++p) {
      wp.push_back(reference_entry(logits.data() + p * nv, nv, r.prompt[static_cast<size_t>(p + 1)], r.logprobs.prompt));
    }
    std::vector<runtime::TokenLogprob> wg;
    std::vector<float> last(logits.end() - nv, logits.end());
    for (int k = 0; k < r.max_tokens; ++k) {
      const int32_t t = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      wg.push_back(reference_entry(last.data(), nv, t, r.logprobs.generated));
      one->forward(&t, 1, n + k, cache, false, last.data(), pool);
    }
    want_prompt.push_back(wp);
    want_gen.push_back(wg);
    reqs.push_back(r);
  }
  const plan::ModelIdentity id = plan::model_identity(*f);
  std::map<int64_t, runtime::Finished> first;
  struct Case { test::Layout layout; bool share; };
  for (const Case& c : {Case{{"1 rank", 1, 1, 1, {}}, true}, Case{{"1 rank", 1, 1, 1, {}}, false}, Case{test::kLayouts[0], true},
                        Case{test::kLayouts[1], true}, Case{test::kLayouts[3], true}}) {
    SCOPED_TRACE(std::string(c.layout.label) + (c.share ? " sharing" : " not sharing"));
    int64_t cached = 0;
    std::map<int64_t, runtime::Finished> got;
    test::schedule(path, test::exact_plan(id, c.layout), 3, runtime::SchedulerOptions{2, 16, c.share}, reqs,
                   [&](const runtime::Finished& fin) {
                     cached += fin.n_cached;
                     got[fin.id] = fin;
                   }, 64);
    ASSERT_EQ(got.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      SCOPED_TRACE("request " + std::to_string(i));
      const runtime::Finished& fin = got[static_cast<int64_t>(i)];
      EXPECT_EQ(fin.tokens.size(), static_cast<size_t>(reqs[i].max_tokens));
      EXPECT_EQ(fin.finish_reason, "length");
      ASSERT_EQ(fin.prompt_logprobs.size(), want_prompt[i].size());
      for (size_t p = 0; p < want_prompt[i].size(); ++p) expect_close(fin.prompt_logprobs[p], want_prompt[i][p], 2e-5);
      ASSERT_EQ(fin.logprobs.size(), want_gen[i].size());
      for (size_t k = 0; k < want_gen[i].size(); ++k) expect_close(fin.logprobs[k], want_gen[i][k], 2e-5);
      // Every layout, shared or not: the same bits as one rank computing everything.
      if (first.count(static_cast<int64_t>(i))) {
        EXPECT_EQ(fin.prompt_logprobs, first[static_cast<int64_t>(i)].prompt_logprobs);
        EXPECT_EQ(fin.logprobs, first[static_cast<int64_t>(i)].logprobs);
      }
    }
    if (first.empty()) first = got;
    if (c.share) {
      EXPECT_GE(cached, 3 * 32) << "the scoring requests share the 40-token context";
    } else {
      EXPECT_EQ(cached, 0);
    }
  }
}

// Structured output through the scheduler: constrained requests (a JSON schema, a JSON object)
// get the same tokens on every layout as on one rank, their text parses, and an unconstrained
// request beside them is what it is without them.
TEST(Executor, ConstrainedRequestsGiveTheSameTokensOnEveryLayoutAndParse) {
  const std::string path = test::fixture("models/tiny-llama-q8_0.gguf");
  auto f = gguf::File::open(path);
  auto tok = Tokenizer::from_gguf(*f);
  const std::string schema =
      R"({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9},
          "w": {"type": "string", "enum": ["x", "yy"]}}, "required": ["ok", "n", "w"]})";
  std::vector<runtime::Request> reqs;
  for (int i = 0; i < 5; ++i) {
    runtime::Request r;
    r.id = i;
    r.prompt = {1, static_cast<int32_t>(20 + i), 7, 99};
    r.max_tokens = 48;
    r.sampling.temperature = i == 3 ? 0.0f : 0.9f;
    r.sampling.seed = 40 + static_cast<uint64_t>(i);
    r.end_tokens = tok->eog_tokens();
    r.grammar_kind = i == 4 ? 0 : i == 2 ? 1 : 2;  // request 4 unconstrained, 2 any object
    if (r.grammar_kind == 2) r.grammar = schema;
    reqs.push_back(r);
  }
  const plan::ModelIdentity id = plan::model_identity(*f);
  std::map<int64_t, std::vector<int32_t>> first;
  for (const test::Layout& l : {test::Layout{"1 rank", 1, 1, 1, {}}, test::kLayouts[0], test::kLayouts[1], test::kLayouts[3]}) {
    SCOPED_TRACE(l.label);
    std::map<int64_t, std::string> reasons;
    auto got = test::schedule(path, test::exact_plan(id, l), 3, runtime::SchedulerOptions{2, 8, true}, reqs,
                              [&](const runtime::Finished& fin) { reasons[fin.id] = fin.finish_reason; }, 64);
    ASSERT_EQ(got.size(), reqs.size());
    if (first.empty()) {
      first = got;
      int parsed = 0;
      for (int i = 0; i < 4; ++i) {
        if (reasons[i] != "stop") continue;  // cut at max_tokens: an unfinished document
        const std::string text = tok->decode(got[i]);
        const auto doc = nlohmann::json::parse(text, nullptr, false);
        ASSERT_FALSE(doc.is_discarded()) << "request " << i << ": " << text;
        EXPECT_TRUE(doc.is_object()) << text;
        if (reqs[static_cast<size_t>(i)].grammar_kind == 2) {
          EXPECT_TRUE(doc.contains("ok") && doc["ok"].is_boolean() && doc.contains("n") && doc["n"].is_number_integer() &&
                      doc["n"].get<int>() <= 9 && (doc["w"] == "x" || doc["w"] == "yy")) << text;
        }
        ++parsed;
      }
      EXPECT_GE(parsed, 2) << "most constrained requests finish their document within 48 tokens";
    }
    EXPECT_EQ(got, first);
  }
  // The unconstrained request alone: the same tokens as beside the constrained ones.
  auto alone = test::schedule(path, test::exact_plan(id, {"1 rank", 1, 1, 1, {}}), 1, runtime::SchedulerOptions{1, 8, true},
                              {reqs[4]}, {}, 64);
  EXPECT_EQ(alone[4], first[4]);
}
