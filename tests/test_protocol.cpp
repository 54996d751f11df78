// The step protocol (runtime/protocol.h): every message round-trips, and what is truncated,
// oversized, of another version, of an unknown kind or inconsistent is refused with an error
// that says what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include <fmt/format.h>

#include "runtime/protocol.h"
#include "util/error.h"
#include "test_util.h"

using namespace ranklm;
using namespace ranklm::runtime::proto;

namespace {

std::string error_of(const std::function<void()>& f) { return test::error_message_of<Error>(f); }

// A random step: 1..6 sequences of 1..40 tokens, some asking for logits.
void random_step(std::mt19937& rng, std::vector<SeqEntry>& seqs, std::vector<int32_t>& tokens) {
  seqs.clear();
  tokens.clear();
  const int n = std::uniform_int_distribution<int>(1, 6)(rng);
  for (int i = 0; i < n; ++i) {
    SeqEntry e;
    e.slot = std::uniform_int_distribution<int>(0, 15)(rng);
    e.pos0 = std::uniform_int_distribution<int>(0, 1000)(rng);
    e.n_tok = std::uniform_int_distribution<int>(1, 40)(rng);
    e.n_out = std::uniform_int_distribution<int>(0, 1)(rng);
    seqs.push_back(e);
    for (int t = 0; t < e.n_tok; ++t) tokens.push_back(std::uniform_int_distribution<int32_t>(0, 150000)(rng));
  }
}

Header header_of(const Message& m) { return decode_header(m.bytes.data(), sizeof(Header), 0); }

}  // namespace

TEST(Protocol, StepsRoundTrip) {
  std::mt19937 rng(11);
  for (int round = 0; round < 50; ++round) {
    std::vector<SeqEntry> seqs;
    std::vector<int32_t> tokens;
    random_step(rng, seqs, tokens);
    const Kind k = round % 2 ? Kind::kSampledStep : Kind::kStep;
    const Message m = encode_step(k, seqs, tokens);
    ASSERT_EQ(m.bytes.size(), sizeof(Header) + seqs.size() * sizeof(SeqEntry) + tokens.size() * sizeof(int32_t));
    const Header h = header_of(m);
    EXPECT_EQ(h.kind, static_cast<uint16_t>(k));
    EXPECT_EQ(h.n_seq, static_cast<int32_t>(seqs.size()));
    EXPECT_EQ(h.n_tok, static_cast<int32_t>(tokens.size()));
    const StepBody b = decode_step(h, m.body(), m.body_size());
    ASSERT_EQ(b.seqs.size(), seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      EXPECT_EQ(b.seqs[i].slot, seqs[i].slot);
      EXPECT_EQ(b.seqs[i].pos0, seqs[i].pos0);
      EXPECT_EQ(b.seqs[i].n_tok, seqs[i].n_tok);
      EXPECT_EQ(b.seqs[i].n_out, seqs[i].n_out);
    }
    EXPECT_EQ(b.tokens, tokens);
  }
}

TEST(Protocol, SlotSetupTimesAndControlRoundTrip) {
  const SamplingWire sp{0.7f, 0.9f, 0.05f, 1.1f, 40, 32, 0x123456789abcdefULL, 0.25f, -0.5f, 5, 20};
  const std::vector<int32_t> prompt = {5, 17, 99, 3, 151000};
  const std::vector<BiasEntry> bias = {{7, -100.0f}, {151000, 2.5f}, {3, 0.125f}};
  const Message m = encode_slot_setup(3, sp, prompt, bias);
  const SlotSetup s = decode_slot_setup(header_of(m), m.body(), m.body_size());
  EXPECT_EQ(s.slot, 3);
  EXPECT_EQ(s.prompt, prompt);
  ASSERT_EQ(s.bias.size(), 3u);
  for (size_t i = 0; i < bias.size(); ++i) {
    EXPECT_EQ(s.bias[i].token, bias[i].token);
    EXPECT_EQ(s.bias[i].bias, bias[i].bias);
  }
  EXPECT_EQ(s.sampling.frequency_penalty, 0.25f);
  EXPECT_EQ(s.sampling.logprobs, 5);
  EXPECT_EQ(s.sampling.prompt_logprobs, 20);
  EXPECT_EQ(s.sampling.presence_penalty, -0.5f);
  // More bias entries than the protocol carries: refused when encoded.
  EXPECT_THROW(encode_slot_setup(3, sp, prompt, std::vector<BiasEntry>(kMaxBiasEntries + 1, BiasEntry{1, 1.0f})), Error);
  EXPECT_EQ(s.sampling.temperature, 0.7f);
  EXPECT_EQ(s.sampling.top_p, 0.9f);
  EXPECT_EQ(s.sampling.min_p, 0.05f);
  EXPECT_EQ(s.sampling.repeat_penalty, 1.1f);
  EXPECT_EQ(s.sampling.top_k, 40);
  EXPECT_EQ(s.sampling.repeat_last_n, 32);
  EXPECT_EQ(s.sampling.seed, 0x123456789abcdefULL);

  for (Kind k : {Kind::kStop, Kind::kReportTimes}) {
    const Message c = encode_control(k);
    EXPECT_EQ(c.bytes.size(), sizeof(Header));
    EXPECT_EQ(header_of(c).kind, static_cast<uint16_t>(k));
    EXPECT_EQ(header_of(c).body_bytes, 0u);
  }
  const Ready r = make_ready(5, 8, 4321);
  EXPECT_EQ(decode_ready(&r, sizeof r, 5, 8, "node7").rank, 5);
  EXPECT_EQ(decode_ready(&r, sizeof r, 5, 8, "node7").kv_blocks, 4321);

  const Message k = encode_kv_share(KvShare{3, 9, 200, 0});
  EXPECT_EQ(k.body_size(), sizeof(KvShare));
  const Header kh = decode_header(k.bytes.data(), sizeof(Header), 0);
  EXPECT_EQ(kh.kind, static_cast<uint16_t>(Kind::kKvShare));
  const KvShare ks = decode_kv_share(kh, k.body(), k.body_size());
  EXPECT_EQ(ks.src, 3);
  EXPECT_EQ(ks.dst, 9);
  EXPECT_EQ(ks.n_pos, 200);
}

TEST(Protocol, MalformedKvSharesAreRefused) {
  const Message k = encode_kv_share(KvShare{1, 2, 64, 0});
  const Header h = decode_header(k.bytes.data(), sizeof(Header), 0);
  EXPECT_NE(error_of([&] { decode_kv_share(h, k.body(), k.body_size() - 1); }).find("has 15 bytes, not 16"), std::string::npos);
  KvShare bad{1, -2, 64, 0};
  EXPECT_NE(error_of([&] { decode_kv_share(h, &bad, sizeof bad); }).find("slot -2 from slot 1"), std::string::npos);
  bad = KvShare{1, 2, -5, 0};
  EXPECT_NE(error_of([&] { decode_kv_share(h, &bad, sizeof bad); }).find("-5 positions"), std::string::npos);
  // A header of another kind with a KV share's body size.
  Header other = h;
  other.kind = static_cast<uint16_t>(Kind::kStop);
  EXPECT_NE(error_of([&] { decode_header(&other, sizeof other, 0); }).find("announces a body of 16 bytes"), std::string::npos);
}

TEST(Protocol, TruncatedOversizedAndInconsistentMessagesAreRefused) {
  std::mt19937 rng(5);
  std::vector<SeqEntry> seqs;
  std::vector<int32_t> tokens;
  random_step(rng, seqs, tokens);
  const Message m = encode_step(Kind::kStep, seqs, tokens);
  // Header: one byte short or long.
  EXPECT_NE(error_of([&] { decode_header(m.bytes.data(), sizeof(Header) - 1, 2); }).find("has 23 bytes, a header has 24"), std::string::npos);
  std::vector<uint8_t> longer(m.bytes.begin(), m.bytes.end());
  EXPECT_NE(error_of([&] { decode_header(longer.data(), sizeof(Header) + 1, 2); }).find("rank 2"), std::string::npos);
  // Body: truncated, oversized.
  const Header h = header_of(m);
  std::string e = error_of([&] { decode_step(h, m.body(), m.body_size() - 4); });
  EXPECT_NE(e.find("its header says"), std::string::npos) << e;
  std::vector<uint8_t> body(m.body(), m.body() + m.body_size());
  body.resize(body.size() + 16);
  e = error_of([&] { decode_step(h, body.data(), body.size()); });
  EXPECT_NE(e.find("its header says"), std::string::npos) << e;
  // A header whose announced body does not fit its counts.
  Header bad = h;
  bad.body_bytes += 4;
  e = error_of([&] { decode_header(&bad, sizeof bad, 0); });
  EXPECT_NE(e.find("announces a body"), std::string::npos) << e;
  // Unknown kind, bad magic, negative or oversized counts.
  bad = h;
  bad.kind = 9;
  EXPECT_NE(error_of([&] { decode_header(&bad, sizeof bad, 0); }).find("unknown kind 9"), std::string::npos);
  bad = h;
  bad.magic ^= 1;
  EXPECT_NE(error_of([&] { decode_header(&bad, sizeof bad, 0); }).find("magic"), std::string::npos);
  bad = h;
  bad.n_tok = -3;
  EXPECT_NE(error_of([&] { decode_header(&bad, sizeof bad, 0); }).find("out-of-bounds"), std::string::npos);
  bad = h;
  bad.n_seq = kMaxSeqs + 1;
  EXPECT_NE(error_of([&] { decode_header(&bad, sizeof bad, 0); }).find("out-of-bounds"), std::string::npos);
  // Sequences that do not add up to the header's counts (same body size: tokens moved between
  // two sequences' counts still sum up, so change one sequence's n_out instead).
  std::vector<uint8_t> lie(m.body(), m.body() + m.body_size());
  SeqEntry first;
  std::memcpy(&first, lie.data(), sizeof first);
  first.n_out = first.n_out ? 0 : 1;
  std::memcpy(lie.data(), &first, sizeof first);
  e = error_of([&] { decode_step(h, lie.data(), lie.size()); });
  EXPECT_NE(e.find("header says"), std::string::npos) << e;
  // A sequence asking for more logits rows than it has tokens.
  first.n_out = first.n_tok + 1;
  std::memcpy(lie.data(), &first, sizeof first);
  e = error_of([&] { decode_step(h, lie.data(), lie.size()); });
  EXPECT_NE(e.find("malformed"), std::string::npos) << e;
  // Token ids that do not match the sequence table on encoding.
  tokens.pop_back();
  e = error_of([&] { encode_step(Kind::kStep, seqs, tokens); });
  EXPECT_NE(e.find("token ids"), std::string::npos) << e;
}

TEST(Protocol, AMessageOrReadyFromAnotherVersionIsRefusedNamingBothVersions) {
  const Message m = encode_control(Kind::kStop);
  Header h = header_of(m);
  h.version = kVersion + 1;
  std::string e = error_of([&] { decode_header(&h, sizeof h, 0); });
  EXPECT_NE(e.find(fmt::format("version {}", kVersion + 1)), std::string::npos) << e;
  EXPECT_NE(e.find(fmt::format("version {}", kVersion)), std::string::npos) << e;
  EXPECT_NE(e.find("same ranklm build"), std::string::npos) << e;

  Ready r = make_ready(3, 4, 100);
  r.version = kVersion + 7;
  e = error_of([&] { decode_ready(&r, sizeof r, 3, 4, "node3"); });
  EXPECT_NE(e.find("rank 3 (host node3) speaks protocol version"), std::string::npos) << e;
  // The right version, but it thinks it is another rank of another job.
  r = make_ready(2, 4, 100);
  e = error_of([&] { decode_ready(&r, sizeof r, 3, 4, "node3"); });
  EXPECT_NE(e.find("says it is rank 2 of 4"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { decode_ready(&r, sizeof r - 1, 2, 4, "n"); }).find("23 bytes"), std::string::npos);
  r = make_ready(2, 4, 0);
  EXPECT_NE(error_of([&] { decode_ready(&r, sizeof r, 2, 4, "n"); }).find("room for 0 KV blocks"), std::string::npos);
}
