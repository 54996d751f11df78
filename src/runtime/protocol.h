// The step protocol between ranks (docs/FORMATS.md, "Step protocol"): what rank 0 sends every
// rank to run a step, set up a sequence's sampler or collect the ranks' time reports, and the
// ready message each rank sends rank 0 once it has loaded its part. Every control message is a
// fixed 24-byte header followed, when the header says so, by one body message of exactly
// header.body_bytes bytes. Structs are little-endian host layout (every rank of a job runs the
// same build on x86-64); their sizes are fixed by static_assert and the header carries a magic
// number and the protocol version, which the ready message also carries, so a rank of another
// build is refused at start-up with both versions named.
//
// decode_* functions treat their input as untrusted: a message that is shorter or longer than
// its kind says, of another version, of an unknown kind or whose counts do not add up is refused
// with a ranklm::Error naming what is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ranklm::runtime::proto {

constexpr uint32_t kMagic = 0x504d4c52;  // "RLMP" in memory order
constexpr uint16_t kVersion = 4;

// Largest step this protocol carries.
constexpr int32_t kMaxSeqs = 1 << 20;
constexpr int32_t kMaxTokens = 1 << 26;

enum class Kind : uint16_t {
  kStop = 0,         // rank 0 -> every rank: serve() returns. No body.
  kStep = 1,         // rank 0 -> every rank: run a step; the last stage sends logits to rank 0.
  kReportTimes = 2,  // rank 0 -> every rank: each sends its Times to rank 0 (tag kStats). No body.
  kSlotSetup = 3,    // rank 0 -> the head rank: a new request in a slot (its sampler, its prompt,
                     // its logit bias, its structured-output spec; header n_out is the bias
                     // entries' count, the spec's bytes are in the sampling settings).
  kSampledStep = 4,  // rank 0 -> every rank: run a step; the head rank samples, tokens to rank 0
                     // (one per logits row: a prompt row carries the prompt's next token), then
                     // the log-probability records the slots asked for (runtime/logprobs.h).
  kKvShare = 5,      // rank 0 -> every rank: a slot takes another's KV prefix (or is emptied).
};
constexpr uint16_t kKindCount = 6;
const char* kind_name(Kind k);

struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t kind;
  int32_t n_seq;        // steps: sequences; slot set-up: the slot
  int32_t n_tok;        // steps: tokens of all sequences; slot set-up: prompt tokens
  int32_t n_out;        // steps: logits rows asked for
  uint32_t body_bytes;  // the body message that follows (0: none)
};
static_assert(sizeof(Header) == 24, "protocol header layout");

// One sequence of a step: n_tok tokens at positions pos0.. of KV slot `slot`; logits wanted for
// its last n_out tokens.
struct SeqEntry {
  int32_t slot, pos0, n_tok, n_out;
};
static_assert(sizeof(SeqEntry) == 16, "protocol sequence entry layout");

// Slot dst gives back its KV blocks and takes slot src's positions 0..n_pos-1 by reference
// (n_pos 0: dst is just emptied; src == dst: dst keeps its own first n_pos positions).
struct KvShare {
  int32_t src, dst, n_pos, reserved;
};
static_assert(sizeof(KvShare) == 16, "protocol KV share layout");

// A request's sampling settings (runtime/sampler.h SamplingParams, on the wire).
struct SamplingWire {
  float temperature, top_p, min_p, repeat_penalty;
  int32_t top_k, repeat_last_n;
  uint64_t seed;
  float frequency_penalty, presence_penalty;
  int32_t logprobs, prompt_logprobs;  // runtime/logprobs.h LogprobAsk (-1: none; 0..20 alternatives)
  int32_t grammar_kind;               // structured output (0: none), its spec after the bias entries
  uint32_t grammar_bytes;
};
static_assert(sizeof(SamplingWire) == 56, "protocol sampling layout");
constexpr uint32_t kMaxGrammarBytes = 1u << 20;  // a structured-output spec (a JSON schema)
// One logit bias entry of a slot set-up (after the prompt's tokens).
struct BiasEntry {
  int32_t token;
  float bias;
};
static_assert(sizeof(BiasEntry) == 8, "protocol logit bias layout");
constexpr int32_t kMaxBiasEntries = 1024;

// A rank's time report (answer to kReportTimes).
struct Times {
  double compute_s, comm_s;
  int64_t steps;
};
static_assert(sizeof(Times) == 24, "protocol time report layout");

// Each rank other than 0 sends this to rank 0 once its part is loaded.
// kv_blocks: the KV blocks its memory holds (rank 0 admits sequences within the smallest).
struct Ready {
  uint32_t magic;
  uint16_t version;
  uint16_t reserved;
  int32_t rank, world_size;
  int64_t kv_blocks;
};
static_assert(sizeof(Ready) == 24, "protocol ready message layout");

// ---- encoding: the header and the body, back to back (send them as two messages) ----
struct Message {
  std::vector<uint8_t> bytes;  // sizeof(Header) + body_bytes
  const Header& header() const { return *reinterpret_cast<const Header*>(bytes.data()); }
  const uint8_t* body() const { return bytes.data() + sizeof(Header); }
  size_t body_size() const { return bytes.size() - sizeof(Header); }
};
Message encode_control(Kind k);  // kStop, kReportTimes
Message encode_step(Kind k, const std::vector<SeqEntry>& seqs, const std::vector<int32_t>& tokens);
Message encode_slot_setup(int32_t slot, const SamplingWire& sp, const std::vector<int32_t>& prompt,
                          const std::vector<BiasEntry>& bias = {}, const std::string& grammar = {});
Message encode_kv_share(const KvShare& k);
Ready make_ready(int rank, int world_size, int64_t kv_blocks);

// ---- decoding ----
// A header from `from` (a rank, for messages), `n` bytes: magic, version, kind, counts, and
// body_bytes against what the kind and counts need.
Header decode_header(const void* data, size_t n, int from);
struct StepBody {
  std::vector<SeqEntry> seqs;
  std::vector<int32_t> tokens;
};
// The body of a step whose header h was decoded: exactly h.body_bytes bytes; every sequence's
// counts checked and summed against the header.
StepBody decode_step(const Header& h, const void* body, size_t n);
struct SlotSetup {
  int32_t slot;
  SamplingWire sampling;
  std::vector<int32_t> prompt;
  std::vector<BiasEntry> bias;
  std::string grammar;  // sampling.grammar_kind's spec
};
SlotSetup decode_slot_setup(const Header& h, const void* body, size_t n);
// A KV share whose header h was decoded (slot bounds are the executor's to check).
KvShare decode_kv_share(const Header& h, const void* body, size_t n);
// A ready message from rank `from` of a job of `world_size` ranks; `host` names it in errors.
Ready decode_ready(const void* data, size_t n, int from, int world_size, const std::string& host);

}  // namespace ranklm::runtime::proto
