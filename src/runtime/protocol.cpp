#include "runtime/protocol.h"

#include <cstring>

#include "util/error.h"

namespace ranklm::runtime::proto {

namespace {

// The body a header of this kind and these counts must come with.
uint64_t expected_body(Kind k, int64_t n_seq, int64_t n_tok, int64_t n_out) {
  switch (k) {
    case Kind::kStep:
    case Kind::kSampledStep:
      return static_cast<uint64_t>(n_seq) * sizeof(SeqEntry) + static_cast<uint64_t>(n_tok) * sizeof(int32_t);
    case Kind::kSlotSetup:
      return sizeof(SamplingWire) + static_cast<uint64_t>(n_tok) * sizeof(int32_t) +
             static_cast<uint64_t>(n_out) * sizeof(BiasEntry);
    case Kind::kKvShare:
      return sizeof(KvShare);
    default:
      return 0;
  }
}

Header make_header(Kind k, int64_t n_seq, int64_t n_tok, int64_t n_out, uint32_t extra = 0) {
  // A slot set-up's n_out counts its logit bias entries; a step's, logits rows of its tokens.
  const int64_t out_max = k == Kind::kSlotSetup ? kMaxBiasEntries : n_tok;
  if (n_seq < 0 || n_seq > kMaxSeqs || n_tok < 0 || n_tok > kMaxTokens || n_out < 0 || n_out > out_max) {
    fail("step protocol: a {} of {} sequences, {} tokens and {} logits rows is outside the protocol's bounds "
         "({} sequences, {} tokens)", kind_name(k), n_seq, n_tok, n_out, kMaxSeqs, kMaxTokens);
  }
  return Header{kMagic, kVersion, static_cast<uint16_t>(k), static_cast<int32_t>(n_seq), static_cast<int32_t>(n_tok),
                static_cast<int32_t>(n_out), static_cast<uint32_t>(expected_body(k, n_seq, n_tok, n_out)) + extra};
}

Message with_body(const Header& h) {
  Message m;
  m.bytes.resize(sizeof(Header) + h.body_bytes);
  std::memcpy(m.bytes.data(), &h, sizeof h);
  return m;
}

void check_version(uint32_t magic, uint16_t version, const std::string& what) {
  if (magic != kMagic) fail("step protocol: {} does not start with the protocol's magic number (a stray or damaged message)", what);
  if (version != kVersion) {
    fail("step protocol: {} speaks protocol version {}, this rank speaks version {}: every rank of a job must run the "
         "same ranklm build", what, version, kVersion);
  }
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kStop: return "stop";
    case Kind::kStep: return "step";
    case Kind::kReportTimes: return "time report request";
    case Kind::kSlotSetup: return "slot set-up";
    case Kind::kSampledStep: return "sampled step";
    case Kind::kKvShare: return "KV share";
  }
  return "unknown message";
}

Message encode_control(Kind k) {
  if (k != Kind::kStop && k != Kind::kReportTimes) fail("step protocol: a {} has a body (a bug)", kind_name(k));
  return with_body(make_header(k, 0, 0, 0));
}

Message encode_step(Kind k, const std::vector<SeqEntry>& seqs, const std::vector<int32_t>& tokens) {
  if (k != Kind::kStep && k != Kind::kSampledStep) fail("step protocol: a {} is not a step (a bug)", kind_name(k));
  int64_t n_tok = 0, n_out = 0;
  for (const SeqEntry& s : seqs) {
    n_tok += s.n_tok;
    n_out += s.n_out;
  }
  if (n_tok != static_cast<int64_t>(tokens.size())) fail("step protocol: a step of {} tokens came with {} token ids", n_tok, tokens.size());
  Message m = with_body(make_header(k, static_cast<int64_t>(seqs.size()), n_tok, n_out));
  uint8_t* p = m.bytes.data() + sizeof(Header);
  if (!seqs.empty()) std::memcpy(p, seqs.data(), seqs.size() * sizeof(SeqEntry));
  if (!tokens.empty()) std::memcpy(p + seqs.size() * sizeof(SeqEntry), tokens.data(), tokens.size() * sizeof(int32_t));
  return m;
}

Message encode_slot_setup(int32_t slot, const SamplingWire& sp, const std::vector<int32_t>& prompt,
                          const std::vector<BiasEntry>& bias, const std::string& grammar) {
  if (grammar.size() > kMaxGrammarBytes) {
    fail("step protocol: a structured-output spec of {} bytes is over the protocol's {}", grammar.size(), kMaxGrammarBytes);
  }
  Message m = with_body(make_header(Kind::kSlotSetup, slot, static_cast<int64_t>(prompt.size()), static_cast<int64_t>(bias.size()),
                                    static_cast<uint32_t>(grammar.size())));
  SamplingWire w = sp;
  w.grammar_bytes = static_cast<uint32_t>(grammar.size());
  uint8_t* p = m.bytes.data() + sizeof(Header);
  std::memcpy(p, &w, sizeof w);
  p += sizeof w;
  if (!prompt.empty()) std::memcpy(p, prompt.data(), prompt.size() * sizeof(int32_t));
  p += prompt.size() * sizeof(int32_t);
  if (!bias.empty()) std::memcpy(p, bias.data(), bias.size() * sizeof(BiasEntry));
  p += bias.size() * sizeof(BiasEntry);
  if (!grammar.empty()) std::memcpy(p, grammar.data(), grammar.size());
  return m;
}

Message encode_kv_share(const KvShare& k) {
  Message m = with_body(make_header(Kind::kKvShare, 0, 0, 0));
  std::memcpy(m.bytes.data() + sizeof(Header), &k, sizeof k);
  return m;
}

KvShare decode_kv_share(const Header& h, const void* body, size_t n) {
  if (static_cast<Kind>(h.kind) != Kind::kKvShare) fail("step protocol: a {} is not a KV share", kind_name(static_cast<Kind>(h.kind)));
  if (n != sizeof(KvShare) || n != h.body_bytes) fail("step protocol: a KV share's body has {} bytes, not {}", n, sizeof(KvShare));
  KvShare k;
  std::memcpy(&k, body, sizeof k);
  if (k.src < 0 || k.dst < 0 || k.n_pos < 0) {
    fail("step protocol: a KV share (slot {} from slot {}, {} positions) is malformed", k.dst, k.src, k.n_pos);
  }
  return k;
}

Ready make_ready(int rank, int world_size, int64_t kv_blocks) {
  return Ready{kMagic, kVersion, 0, rank, world_size, kv_blocks};
}

Header decode_header(const void* data, size_t n, int from) {
  const std::string what = fmt::format("a control message from rank {}", from);
  if (n != sizeof(Header)) fail("step protocol: {} has {} bytes, a header has {}", what, n, sizeof(Header));
  Header h;
  std::memcpy(&h, data, sizeof h);
  check_version(h.magic, h.version, what);
  if (h.kind >= kKindCount) fail("step protocol: {} is of unknown kind {}", what, h.kind);
  const Kind k = static_cast<Kind>(h.kind);
  const int32_t out_max = k == Kind::kSlotSetup ? kMaxBiasEntries : h.n_tok;
  if (h.n_seq < 0 || h.n_seq > kMaxSeqs || h.n_tok < 0 || h.n_tok > kMaxTokens || h.n_out < 0 || h.n_out > out_max) {
    fail("step protocol: {} ({}) has out-of-bounds counts: {} sequences, {} tokens, {} logits rows", what, kind_name(k),
         h.n_seq, h.n_tok, h.n_out);
  }
  if ((k == Kind::kStep || k == Kind::kSampledStep) && (h.n_seq < 1 || h.n_tok < 1)) {
    fail("step protocol: {} is an empty {} ({} sequences, {} tokens)", what, kind_name(k), h.n_seq, h.n_tok);
  }
  const uint64_t want = expected_body(k, h.n_seq, h.n_tok, h.n_out);
  // A slot set-up may carry a structured-output spec after what its counts need.
  const bool spec_fits = k == Kind::kSlotSetup && h.body_bytes >= want && h.body_bytes - want <= kMaxGrammarBytes;
  if (h.body_bytes != want && !spec_fits) {
    fail("step protocol: {} ({}) announces a body of {} bytes; its counts need {}", what, kind_name(k), h.body_bytes, want);
  }
  return h;
}

StepBody decode_step(const Header& h, const void* body, size_t n) {
  const Kind k = static_cast<Kind>(h.kind);
  if (k != Kind::kStep && k != Kind::kSampledStep) fail("step protocol: a {} is not a step", kind_name(k));
  if (n != h.body_bytes) fail("step protocol: a step's body has {} bytes, its header says {}", n, h.body_bytes);
  StepBody s;
  s.seqs.resize(static_cast<size_t>(h.n_seq));
  s.tokens.resize(static_cast<size_t>(h.n_tok));
  const uint8_t* p = static_cast<const uint8_t*>(body);
  std::memcpy(s.seqs.data(), p, s.seqs.size() * sizeof(SeqEntry));
  std::memcpy(s.tokens.data(), p + s.seqs.size() * sizeof(SeqEntry), s.tokens.size() * sizeof(int32_t));
  int64_t n_tok = 0, n_out = 0;
  for (const SeqEntry& e : s.seqs) {
    if (e.n_tok < 1 || e.n_out < 0 || e.n_out > e.n_tok || e.pos0 < 0 || e.slot < 0) {
      fail("step protocol: a step's sequence (slot {}, position {}, {} tokens, {} logits rows) is malformed", e.slot,
           e.pos0, e.n_tok, e.n_out);
    }
    n_tok += e.n_tok;
    n_out += e.n_out;
  }
  if (n_tok != h.n_tok || n_out != h.n_out) {
    fail("step protocol: a step's sequences hold {} tokens and {} logits rows, its header says {} and {}", n_tok, n_out,
         h.n_tok, h.n_out);
  }
  return s;
}

SlotSetup decode_slot_setup(const Header& h, const void* body, size_t n) {
  if (static_cast<Kind>(h.kind) != Kind::kSlotSetup) fail("step protocol: a {} is not a slot set-up", kind_name(static_cast<Kind>(h.kind)));
  if (n != h.body_bytes) fail("step protocol: a slot set-up's body has {} bytes, its header says {}", n, h.body_bytes);
  SlotSetup s;
  s.slot = h.n_seq;
  const uint8_t* p = static_cast<const uint8_t*>(body);
  std::memcpy(&s.sampling, p, sizeof s.sampling);
  for (int32_t k : {s.sampling.logprobs, s.sampling.prompt_logprobs}) {
    if (k < -1 || k > 20) fail("step protocol: a slot set-up asks for {} alternative tokens (-1..20)", k);
  }
  s.prompt.resize(static_cast<size_t>(h.n_tok));
  if (!s.prompt.empty()) std::memcpy(s.prompt.data(), p + sizeof s.sampling, s.prompt.size() * sizeof(int32_t));
  s.bias.resize(static_cast<size_t>(h.n_out));
  const size_t base = sizeof s.sampling + s.prompt.size() * sizeof(int32_t) + s.bias.size() * sizeof(BiasEntry);
  if (!s.bias.empty()) {
    std::memcpy(s.bias.data(), p + sizeof s.sampling + s.prompt.size() * sizeof(int32_t), s.bias.size() * sizeof(BiasEntry));
  }
  if (n < base || n - base != s.sampling.grammar_bytes || s.sampling.grammar_kind < 0 || s.sampling.grammar_kind > 2) {
    fail("step protocol: a slot set-up of {} bytes announces a structured-output spec of kind {} and {} bytes after {}", n,
         s.sampling.grammar_kind, s.sampling.grammar_bytes, base);
  }
  s.grammar.assign(reinterpret_cast<const char*>(p + base), s.sampling.grammar_bytes);
  return s;
}

Ready decode_ready(const void* data, size_t n, int from, int world_size, const std::string& host) {
  const std::string what = fmt::format("rank {} (host {})", from, host);
  if (n != sizeof(Ready)) fail("step protocol: the ready message of {} has {} bytes, not {}", what, n, sizeof(Ready));
  Ready r;
  std::memcpy(&r, data, sizeof r);
  check_version(r.magic, r.version, what);
  if (r.rank != from || r.world_size != world_size) {
    fail("step protocol: {} says it is rank {} of {}, but this job has it as rank {} of {}", what, r.rank, r.world_size,
         from, world_size);
  }
  if (r.kv_blocks < 1) fail("step protocol: {} has room for {} KV blocks", what, r.kv_blocks);
  return r;
}

}  // namespace ranklm::runtime::proto
