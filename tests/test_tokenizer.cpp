// Tokenizer against llama.cpp's own test vectors (../shared/fixtures/tokenizer): every case of
// every vocabulary must give exactly the expected ids; decode must round-trip.
#include <gtest/gtest.h>

#include "io/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace ranklm {
namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Case> load_cases(const std::string& vocab) {
  const std::string base = test::fixture("tokenizer/ggml-vocab-" + vocab + ".gguf");
  const std::string inp = test::read_file(base + ".inp");
  const std::string out = test::read_file(base + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t start = 0;
  for (size_t p = inp.find(sep); p != std::string::npos; p = inp.find(sep, start)) {
    texts.push_back(inp.substr(start, p - start));
    start = p + sep.size();
  }
  std::vector<Case> cases;
  std::istringstream lines(out);
  std::string line;
  for (const auto& t : texts) {
    std::getline(lines, line);
    Case c{t, {}};
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  return cases;
}

class VocabTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VocabTest, MatchesLlamaCppIds) {
  auto f = gguf::File::open(test::fixture("tokenizer/ggml-vocab-" + GetParam() + ".gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  const auto cases = load_cases(GetParam());
  ASSERT_GT(cases.size(), 20u);
  int failures = 0;
  for (const auto& c : cases) {
    const auto ids = tok->encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    EXPECT_EQ(ids, c.ids) << "text: '" << c.text << "'";
    failures += ids != c.ids;
  }
  EXPECT_EQ(failures, 0);
}

TEST_P(VocabTest, DecodeRoundTrips) {
  auto f = gguf::File::open(test::fixture("tokenizer/ggml-vocab-" + GetParam() + ".gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  for (const auto& c : load_cases(GetParam())) {
    std::string text = tok->decode(c.ids);
    // SentencePiece adds a leading space that detokenization takes away again.
    if (tok->kind() == Tokenizer::Kind::Spm && !text.empty() && text[0] == ' ') text.erase(0, 1);
    EXPECT_EQ(text, c.text);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VocabTest,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "starcoder",
                                           "deepseek-llm", "falcon"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

TEST(StreamDecoder, HoldsBackPartialUtf8) {
  auto f = gguf::File::open(test::fixture("tokenizer/ggml-vocab-llama-spm.gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  // "é" is 0xC3 0xA9: feed it as two byte tokens; nothing may be printed in between.
  const int32_t b1 = tok->find_token("<0xC3>");
  const int32_t b2 = tok->find_token("<0xA9>");
  ASSERT_GE(b1, 0);
  ASSERT_GE(b2, 0);
  StreamDecoder dec(*tok);
  EXPECT_EQ(dec.push(b1), "");
  EXPECT_EQ(dec.push(b2), "\xc3\xa9");
  EXPECT_EQ(dec.flush(), "");
  // Cut off by the token limit after the first byte: the end holds back the half character
  // instead of sending it (a JSON writer would make it U+FFFD).
  StreamDecoder cut(*tok);
  EXPECT_EQ(cut.push(tok->find_token("a")), "a");
  EXPECT_EQ(cut.push(b1), "");
  EXPECT_EQ(cut.flush(), "");
}

TEST(Unicode, ValidUtf8OnePass) {
  EXPECT_TRUE(unicode::valid_utf8(""));
  EXPECT_TRUE(unicode::valid_utf8("plain \xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(unicode::valid_utf8("a\xc3"));              // cut off at the end
  EXPECT_FALSE(unicode::valid_utf8("\xc0\xaf"));           // overlong
  EXPECT_FALSE(unicode::valid_utf8("\xed\xa0\x80"));       // a surrogate
  EXPECT_FALSE(unicode::valid_utf8("\xf4\x90\x80\x80"));   // above U+10FFFF
  EXPECT_FALSE(unicode::valid_utf8("\xff"));
  EXPECT_FALSE(unicode::valid_utf8("a\xe6\x97x"));          // a bad continuation byte
}

TEST(Unicode, CompletePrefix) {
  EXPECT_EQ(unicode::complete_utf8_prefix("ab"), 2u);
  EXPECT_EQ(unicode::complete_utf8_prefix("a\xe2\x96"), 1u);
  EXPECT_EQ(unicode::complete_utf8_prefix("a\xe2\x96\x81"), 4u);
  EXPECT_EQ(unicode::complete_utf8_prefix("\xf0\x9f\x98"), 0u);
}

TEST(Tokenizer, SpecialTokensParsedOnlyWhenAsked) {
  auto f = gguf::File::open(test::fixture("tokenizer/ggml-vocab-gpt-2.gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  const int32_t eot = tok->find_token("<|endoftext|>");
  ASSERT_GE(eot, 0);
  const auto with = tok->encode("a<|endoftext|>b", false, true);
  ASSERT_EQ(with.size(), 3u);
  EXPECT_EQ(with[1], eot);
  const auto without = tok->encode("a<|endoftext|>b", false, false);
  EXPECT_GT(without.size(), 3u);
  EXPECT_EQ(std::count(without.begin(), without.end(), eot), 0);
}

}  // namespace
}  // namespace ranklm
