#include "runtime/executor.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "plan/model_part.h"
#include "util/error.h"

namespace ranklm::runtime {

namespace {

using clock = std::chrono::steady_clock;
double since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }

constexpr size_t kMaxPending = 8;  // sends in flight per rank before it waits for the oldest

proto::SamplingWire to_wire(const SamplingParams& sp, const LogprobAsk& ask, int32_t grammar_kind) {
  return proto::SamplingWire{sp.temperature,       sp.top_p,         sp.min_p,     sp.repeat_penalty,
                             sp.top_k,             sp.repeat_last_n, sp.seed,      sp.frequency_penalty,
                             sp.presence_penalty,  ask.generated,    ask.prompt,   grammar_kind,
                             0};
}

std::vector<proto::BiasEntry> bias_to_wire(const SamplingParams& sp) {
  std::vector<proto::BiasEntry> out;
  for (const auto& [t, b] : sp.logit_bias) out.push_back({t, b});
  return out;
}

SamplingParams from_wire(const proto::SlotSetup& s) {
  const proto::SamplingWire& w = s.sampling;
  SamplingParams p{.temperature = w.temperature, .top_k = w.top_k, .top_p = w.top_p, .min_p = w.min_p,
                   .repeat_penalty = w.repeat_penalty, .repeat_last_n = w.repeat_last_n, .seed = w.seed,
                   .frequency_penalty = w.frequency_penalty, .presence_penalty = w.presence_penalty, .logit_bias = {}};
  for (const proto::BiasEntry& e : s.bias) p.logit_bias.emplace_back(e.token, e.bias);
  return p;
}

}  // namespace

// The TP group's collectives over the ring (comm/ring.h), for the backend's layers.
class Executor::Collectives final : public TpCollectives {
 public:
  explicit Collectives(Executor& ex) : ex_(ex) {}
  void allreduce(float* x, int64_t n) override { comm::ring_allreduce(ex_.c_, ex_.l_.tp, x, n, ex_.z_, ring_); }
  void allgather_columns(const float* local, int64_t n_tok, const std::vector<int64_t>& w, float* full) override {
    // Each member's [n_tok, w_i] block, gathered member by member, then interleaved into
    // [n_tok, sum of w_i] with the members' columns in TP order.
    const int p = ex_.l_.tp.size();
    if (static_cast<int>(w.size()) != p) fail("TP gather: {} widths for a group of {} (a bug)", w.size(), p);
    std::vector<int64_t> counts(static_cast<size_t>(p)), col(static_cast<size_t>(p) + 1, 0);
    for (int i = 0; i < p; ++i) {
      counts[static_cast<size_t>(i)] = n_tok * w[static_cast<size_t>(i)];
      col[static_cast<size_t>(i) + 1] = col[static_cast<size_t>(i)] + w[static_cast<size_t>(i)];
    }
    const int64_t width = col.back();
    gathered_.resize(static_cast<size_t>(n_tok * width));
    comm::ring_allgather(ex_.c_, ex_.l_.tp, local, counts, gathered_.data());
    const float* src = gathered_.data();
    for (int i = 0; i < p; ++i) {
      const int64_t wi = w[static_cast<size_t>(i)];
      for (int64_t t = 0; t < n_tok; ++t) {
        std::memcpy(full + t * width + col[static_cast<size_t>(i)], src + t * wi, static_cast<size_t>(wi) * sizeof(float));
      }
      src += n_tok * wi;
    }
  }

 private:
  Executor& ex_;
  comm::RingBuffers ring_;
  std::vector<float> gathered_;
};

Executor::Executor(comm::Comm& c, const comm::Layout& layout, Backend& b, int n_slots, int64_t n_ctx, comm::Compression z,
                   int64_t kv_blocks)
    : c_(c), l_(layout), b_(b), z_(z), n_vocab_(b.info().n_vocab), n_ctx_(n_ctx) {
  if (c.size() != l_.world_size) {
    fail("this job has {} ranks but the plan has {}: start it with mpirun -np {}", c.size(), l_.world_size, l_.world_size);
  }
  if (l_.first_stage.empty() || l_.first_stage.front() != 0) {
    fail("rank 0 must be the first rank of the first pipeline stage (it reads prompts and embeds); "
         "remake the plan with ranklm plan");
  }
  if (n_slots < 1) fail("at least one KV slot is needed");
  for (int r = 1; r < c.size(); ++r) others_.push_back(r);
  const int64_t per_seq = (n_ctx + b_.info().kv_block_len - 1) / b_.info().kv_block_len;
  kv_budget_ = kv_blocks > 0 ? kv_blocks : per_seq * n_slots;  // default: every slot's whole context
  if (kv_budget_ < per_seq) {
    fail("KV memory for {} blocks of {} positions holds less than one context of {} positions; lower --ctx-size",
         kv_budget_, b_.info().kv_block_len, n_ctx);
  }
  b_.kv_reserve(kv_budget_);
  for (int s = 0; s < n_slots; ++s) slots_.push_back(b_.kv_create(n_ctx));
  if (l_.tp.size() > 1) {
    tp_ = std::make_unique<Collectives>(*this);
    b_.set_collectives(tp_.get());
  }
  vocab_split_ = plan::vocab_offsets(n_vocab_, static_cast<int>(l_.last_stage.size()));
  is_head_ = l_.is_last() && l_.tp.index == 0;
  if (is_head_) {
    samplers_.resize(static_cast<size_t>(n_slots));
    histories_.resize(static_cast<size_t>(n_slots));
    slot_constraints_.resize(static_cast<size_t>(n_slots));
    slot_broken_.assign(static_cast<size_t>(n_slots), 0);
  }
  asks_.resize(static_cast<size_t>(n_slots));
  n_prompt_.resize(static_cast<size_t>(n_slots));
}

Executor::~Executor() {
  // Sends still in flight read from buffers owned here: let them finish (errors are moot now).
  try {
    reap(0);
    for (KvHandle kv : slots_) b_.kv_free(kv);
    if (tp_) b_.set_collectives(nullptr);
  } catch (...) {
  }
}

void Executor::reset_times() {
  times_ = {};
  c_.reset_wait_seconds();
}

void Executor::reap(size_t keep) {
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    bool done = true;
    for (comm::Request& r : p.reqs) {
      if (pending_.size() > keep) {
        c_.wait(r, "delivery of an earlier step's messages");
      } else if (!r.test()) {
        done = false;
      }
    }
    if (!done) return;
    pending_.pop_front();
  }
}

void Executor::check_slots(const proto::StepBody& s) const {
  for (const SeqStep& q : s.seqs) {
    if (q.slot >= static_cast<int>(slots_.size())) fail("KV slot {} out of range 0..{}", q.slot, slots_.size() - 1);
    if (q.pos0 + static_cast<int64_t>(q.n_tok) > n_ctx_) {
      fail("context full: positions {}..{} exceed the context size {}; raise --ctx-size or shorten the prompt", q.pos0,
           static_cast<int64_t>(q.pos0) + q.n_tok - 1, n_ctx_);
    }
  }
}

void Executor::send_control(proto::Message m, const std::vector<int>& to) {
  Pending p;
  p.msg = std::move(m);
  for (int r : to) {
    p.reqs.push_back(c_.isend(p.msg.bytes.data(), sizeof(proto::Header), r, comm::Tag::kControl));
    if (p.msg.body_size() > 0) p.reqs.push_back(c_.isend(p.msg.body(), p.msg.body_size(), r, comm::Tag::kControl));
  }
  pending_.push_back(std::move(p));
}

void Executor::submit(const Batch& b) { submit_step(b, proto::Kind::kStep); }

void Executor::submit_sampled(const Batch& b) { submit_step(b, proto::Kind::kSampledStep); }

void Executor::setup_slot(int slot, const SamplingParams& sp, const std::vector<int32_t>& prompt, const LogprobAsk& ask,
                          int32_t grammar_kind, const std::string& grammar) {
  if (c_.rank() != 0) fail("Executor::setup_slot runs on rank 0");
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) fail("KV slot {} out of range 0..{}", slot, slots_.size() - 1);
  asks_[static_cast<size_t>(slot)] = ask;
  n_prompt_[static_cast<size_t>(slot)] = static_cast<int64_t>(prompt.size());
  proto::Message m = proto::encode_slot_setup(slot, to_wire(sp, ask, grammar_kind), prompt, bias_to_wire(sp), grammar);
  if (l_.head_rank == 0) {
    setup_here(proto::decode_slot_setup(m.header(), m.body(), m.body_size()));
    return;
  }
  // To the head rank only, in order with the steps (same tag, same sender).
  send_control(std::move(m), {l_.head_rank});
}

void Executor::share_kv(int dst, int src, int64_t n_pos) {
  if (c_.rank() != 0) fail("Executor::share_kv runs on rank 0");
  const proto::KvShare k{src, dst, static_cast<int32_t>(n_pos), 0};
  share_here(k);  // checked (and done) here first: a bad share is refused before it is sent
  if (!others_.empty()) send_control(proto::encode_kv_share(k), others_);
}

void Executor::share_here(const proto::KvShare& k) {
  const int n = static_cast<int>(slots_.size());
  if (k.src < 0 || k.src >= n || k.dst < 0 || k.dst >= n || k.n_pos > n_ctx_) {
    fail("rank {}: a KV share of {} positions from slot {} to slot {} is outside the {} slots of {} positions (a bug)",
         c_.rank(), k.n_pos, k.src, k.dst, n, n_ctx_);
  }
  b_.kv_share(slots_[static_cast<size_t>(k.src)], slots_[static_cast<size_t>(k.dst)], k.n_pos);
}

void Executor::setup_here(const proto::SlotSetup& s) {
  if (!is_head_ || s.slot < 0 || s.slot >= static_cast<int>(slots_.size())) {
    fail("rank {}: a slot set-up for slot {} came from rank 0 (a bug)", c_.rank(), s.slot);
  }
  samplers_[static_cast<size_t>(s.slot)] = std::make_unique<Sampler>(from_wire(s), s.prompt.size());
  histories_[static_cast<size_t>(s.slot)] = s.prompt;
  asks_[static_cast<size_t>(s.slot)] = LogprobAsk{s.sampling.logprobs, s.sampling.prompt_logprobs};
  n_prompt_[static_cast<size_t>(s.slot)] = static_cast<int64_t>(s.prompt.size());
  auto& c = slot_constraints_[static_cast<size_t>(s.slot)];
  c.reset();
  slot_broken_[static_cast<size_t>(s.slot)] = 0;
  if (s.sampling.grammar_kind > 0) {
    try {
      if (!constraints_) fail("no structured-output engine on this rank");
      c = constraints_->make(s.sampling.grammar_kind, s.grammar);
    } catch (const Error& e) {
      std::fprintf(stderr, "ranklm: rank %d: slot %d: %s; the request ends as an error\n", c_.rank(), s.slot, e.what());
      slot_broken_[static_cast<size_t>(s.slot)] = 1;
    }
  }
}

// The log-probability records a sampled step's rows bring back (rank 0 and the head rank agree).
int64_t Executor::count_entries(const std::vector<SeqStep>& seqs) const {
  int64_t n = 0;
  for (const SeqStep& q : seqs) {
    const LogprobAsk& ask = asks_[static_cast<size_t>(q.slot)];
    if (!ask.any()) continue;
    for (int64_t j = q.n_tok - q.n_out; j < q.n_tok; ++j) n += wants_entry(ask, q.pos0 + j, n_prompt_[static_cast<size_t>(q.slot)]) ? 1 : 0;
  }
  return n;
}

void Executor::submit_step(const Batch& b, proto::Kind kind) {
  if (c_.rank() != 0) fail("Executor::submit runs on rank 0 (the other ranks serve)");
  // Encoded and decoded here too: rank 0 runs the step exactly as the others receive it, and a
  // malformed batch is refused before anything is sent.
  proto::Message m = proto::encode_step(kind, b.seqs, b.tokens);
  const proto::Header h = proto::decode_header(m.bytes.data(), sizeof(proto::Header), 0);
  const proto::StepBody body = proto::decode_step(h, m.body(), m.body_size());
  check_slots(body);
  if (!others_.empty()) send_control(std::move(m), others_);
  flight_.emplace_back();
  flight_.back().n_out = h.n_out;
  flight_.back().sampled = kind == proto::Kind::kSampledStep;
  if (flight_.back().sampled) flight_.back().n_entries = count_entries(body.seqs);
  run_step(h, body, &flight_.back());
}

void Executor::collect_tokens(std::vector<int32_t>& tokens, std::vector<TokenLogprob>* entries) {
  if (flight_.empty()) fail("Executor::collect_tokens: no step in flight");
  if (!flight_.front().sampled) fail("Executor::collect_tokens: the oldest step returns logits (use collect)");
  Flight f = std::move(flight_.front());
  flight_.pop_front();
  const double w0 = c_.wait_seconds();
  const auto t0 = clock::now();
  if (l_.head_rank == 0) {
    tokens = std::move(f.tokens);
  } else {
    tokens.resize(static_cast<size_t>(f.n_out));
    if (f.n_out > 0) c_.recv(tokens.data(), tokens.size() * sizeof(int32_t), l_.head_rank, comm::Tag::kTokens, "the sampled tokens");
    f.entries.resize(static_cast<size_t>(f.n_entries));
    if (f.n_entries > 0) {
      c_.recv(f.entries.data(), f.entries.size() * sizeof(LogprobWire), l_.head_rank, comm::Tag::kTokens, "the log-probabilities");
    }
  }
  if (static_cast<int64_t>(f.entries.size()) != f.n_entries) fail("the head rank made {} log-probability records of {} (a bug)", f.entries.size(), f.n_entries);
  if (entries) {
    entries->clear();
    for (const LogprobWire& w : f.entries) entries->push_back(from_wire(w, n_vocab_));
  }
  const double waited = c_.wait_seconds() - w0;
  times_.comm_s += waited;
  times_.compute_s += since(t0) - waited;
  reap(kMaxPending);
}

void Executor::drain() {
  while (!flight_.empty()) {
    if (flight_.front().sampled) {
      std::vector<int32_t> drop;
      collect_tokens(drop);
    } else {
      std::vector<float> drop;
      collect(drop);
    }
  }
}

void Executor::collect(std::vector<float>& logits) {
  if (flight_.empty()) fail("Executor::collect: no step in flight");
  if (flight_.front().sampled) fail("Executor::collect: the oldest step was sampled (use collect_tokens)");
  Flight f = std::move(flight_.front());
  flight_.pop_front();
  logits.resize(static_cast<size_t>(f.n_out * n_vocab_));
  const auto t0 = clock::now();
  const double w0 = c_.wait_seconds();
  std::vector<float> part;
  for (size_t i = 0; i < l_.last_stage.size(); ++i) {
    const int64_t v0 = vocab_split_[i], nv = vocab_split_[i + 1] - v0;
    const float* src;
    if (l_.last_stage[i] == 0) {
      src = f.local.data();
    } else {
      part.resize(static_cast<size_t>(f.n_out * nv));
      if (f.n_out > 0) c_.recv(part.data(), part.size() * sizeof(float), l_.last_stage[i], comm::Tag::kLogits, "the last stage's logits");
      src = part.data();
    }
    for (int64_t t = 0; t < f.n_out; ++t) {
      std::memcpy(logits.data() + t * n_vocab_ + v0, src + t * nv, static_cast<size_t>(nv) * sizeof(float));
    }
  }
  const double waited = c_.wait_seconds() - w0;
  times_.comm_s += waited;
  times_.compute_s += since(t0) - waited;
  reap(kMaxPending);
}

void Executor::forward(int slot, const int32_t* tokens, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits) {
  Batch b;
  b.seqs.push_back({slot, static_cast<int32_t>(pos0), static_cast<int32_t>(n_tok), static_cast<int32_t>(n_out)});
  b.tokens.assign(tokens, tokens + n_tok);
  submit(b);
  std::vector<float> out;
  collect(out);
  std::memcpy(logits, out.data(), out.size() * sizeof(float));
}

void Executor::stop() {
  if (c_.rank() != 0) return;
  drain();
  send_control(proto::encode_control(proto::Kind::kStop), others_);
  reap(0);
}

std::vector<RankTimes> Executor::gather_times() {
  if (c_.rank() != 0) fail("Executor::gather_times runs on rank 0");
  drain();
  std::vector<RankTimes> all(static_cast<size_t>(c_.size()));
  all[0] = times_;
  send_control(proto::encode_control(proto::Kind::kReportTimes), others_);
  for (int r = 1; r < c_.size(); ++r) {
    proto::Times t{};
    c_.recv(&t, sizeof t, r, comm::Tag::kStats, "a rank's time report");
    all[static_cast<size_t>(r)] = RankTimes{t.compute_s, t.comm_s, t.steps};
  }
  reap(0);
  reset_times();
  return all;
}

void Executor::serve(std::chrono::milliseconds idle_limit) {
  for (;;) {
    proto::Header raw{};
    comm::Request r = c_.irecv(&raw, sizeof raw, 0, comm::Tag::kControl);
    const auto t0 = clock::now();
    for (uint32_t spins = 0; !r.test(); ++spins) {
      // Spin for 1 ms at most (steps follow each other closely in a batch), then poll gently,
      // so a rank waiting for the next step leaves the cores to ranks computing on its machine;
      // longer waits (a server between requests) back off to 5 ms naps.
      if ((spins & 15) == 15) {
        const auto waited = clock::now() - t0;
        if (waited > std::chrono::milliseconds(1)) {
          std::this_thread::sleep_for(waited > std::chrono::seconds(1)        ? std::chrono::microseconds(5000)
                                      : waited > std::chrono::milliseconds(100) ? std::chrono::microseconds(1000)
                                                                                : std::chrono::microseconds(50));
        }
      }
      if ((spins & 1023) == 0 && idle_limit != std::chrono::milliseconds::max() && clock::now() - t0 > idle_limit) {
        throw comm::CommError(fmt::format("rank {}: no step from rank 0 within {} ms", c_.rank(), idle_limit.count()));
      }
    }
    const proto::Header h = proto::decode_header(&raw, sizeof raw, 0);
    std::vector<uint8_t>& body = body_;  // kept between steps
    body.resize(h.body_bytes);
    if (!body.empty()) c_.recv(body.data(), body.size(), 0, comm::Tag::kControl, "the body of a control message");
    switch (static_cast<proto::Kind>(h.kind)) {
      case proto::Kind::kStop:
        reap(0);
        return;
      case proto::Kind::kSlotSetup:  // a new request's sampler (head rank only)
        setup_here(proto::decode_slot_setup(h, body.data(), body.size()));
        break;
      case proto::Kind::kKvShare:
        share_here(proto::decode_kv_share(h, body.data(), body.size()));
        break;
      case proto::Kind::kReportTimes: {
        reap(0);
        const proto::Times t{times_.compute_s, times_.comm_s, times_.steps};
        c_.send(&t, sizeof t, 0, comm::Tag::kStats, "delivery of the time report");
        reset_times();
        break;
      }
      case proto::Kind::kStep:
      case proto::Kind::kSampledStep: {
        const proto::StepBody s = proto::decode_step(h, body.data(), body.size());
        check_slots(s);
        run_step(h, s, nullptr);
        break;
      }
    }
  }
}

void Executor::run_step(const proto::Header& h, const proto::StepBody& s, Flight* flight) {
  const auto t0 = clock::now();
  const double w0 = c_.wait_seconds();
  reap(kMaxPending);
  const int64_t n_embd = b_.info().n_embd;
  x_.resize(static_cast<size_t>(h.n_tok * n_embd));
  if (l_.is_first()) {
    b_.embed(s.tokens.data(), h.n_tok, x_.data());
  } else {
    if (hop_z_ == comm::Compression::kQ8_0) {
      hop_in_.resize(comm::q8_bytes(h.n_tok * n_embd));
      c_.recv(hop_in_.data(), hop_in_.size(), l_.hidden_from, comm::Tag::kHidden, "the previous stage's hidden states");
      comm::q8_decode(hop_in_.data(), h.n_tok * n_embd, x_.data(), false);
    } else {
      c_.recv(x_.data(), x_.size() * sizeof(float), l_.hidden_from, comm::Tag::kHidden, "the previous stage's hidden states");
    }
  }
  runs_.clear();
  for (const SeqStep& q : s.seqs) runs_.push_back({slots_[static_cast<size_t>(q.slot)], q.pos0, q.n_tok});
  b_.run_layers(x_.data(), runs_.data(), static_cast<int>(runs_.size()));
  if (!l_.is_last()) {
    Pending p;
    if (hop_z_ == comm::Compression::kQ8_0) {
      p.bytes.resize(comm::q8_bytes(h.n_tok * n_embd));
      comm::q8_encode(x_.data(), h.n_tok * n_embd, p.bytes.data());
      for (int d : l_.hidden_to) p.reqs.push_back(c_.isend(p.bytes.data(), p.bytes.size(), d, comm::Tag::kHidden));
    } else {
      p.floats.swap(x_);  // the buffer travels with its sends; x_ starts empty next step
      for (int d : l_.hidden_to) p.reqs.push_back(c_.isend(p.floats.data(), p.floats.size() * sizeof(float), d, comm::Tag::kHidden));
    }
    pending_.push_back(std::move(p));
  } else if (h.n_out > 0) {
    rows_.clear();
    int64_t row = 0;
    for (const SeqStep& q : s.seqs) {
      for (int64_t j = q.n_tok - q.n_out; j < q.n_tok; ++j) rows_.push_back(row + j);
      row += q.n_tok;
    }
    const int i = l_.tp.index;
    const int64_t nv = vocab_split_[static_cast<size_t>(i) + 1] - vocab_split_[static_cast<size_t>(i)];
    const bool sampled = static_cast<proto::Kind>(h.kind) == proto::Kind::kSampledStep;
    if (sampled && is_head_) {  // this rank samples: its share stays here, in a buffer kept between steps
      head_out_.resize(static_cast<size_t>(h.n_out * nv));
      b_.head(x_.data(), rows_.data(), h.n_out, head_out_.data());
      sample_rows(h, s, head_out_, flight);
    } else {
      Pending p;
      p.floats.resize(static_cast<size_t>(h.n_out * nv));
      b_.head(x_.data(), rows_.data(), h.n_out, p.floats.data());
      if (sampled) {  // this member's share goes to the head rank, which samples
        p.reqs.push_back(c_.isend(p.floats.data(), p.floats.size() * sizeof(float), l_.head_rank, comm::Tag::kLogits));
        pending_.push_back(std::move(p));
      } else if (c_.rank() == 0) {
        flight->local = std::move(p.floats);
      } else {
        p.reqs.push_back(c_.isend(p.floats.data(), p.floats.size() * sizeof(float), 0, comm::Tag::kLogits));
        pending_.push_back(std::move(p));
      }
    }
  }
  const double waited = c_.wait_seconds() - w0;
  times_.comm_s += waited;
  times_.compute_s += since(t0) - waited;
  ++times_.steps;
}

// One token for a slot's sampling row: through its constraint when it has one (the mask on a
// copy of the row; the log-probabilities stay the model's own).
int32_t Executor::sample_constrained(int slot, Sampler& sm, const float* row, const std::vector<int32_t>& hist) {
  if (slot_broken_[static_cast<size_t>(slot)]) return kBadLogits;
  TokenConstraint* c = slot_constraints_[static_cast<size_t>(slot)].get();
  if (!c) return sm.sample(row, n_vocab_, hist);
  masked_.assign(row, row + n_vocab_);
  c->mask(masked_.data(), n_vocab_);
  const int32_t tok = sm.sample(masked_.data(), n_vocab_, hist);
  if (tok != kBadLogits && !c->accept(tok)) {
    fail("rank {}: slot {}: the structured-output constraint refused token {} that its own mask allowed (a bug)", c_.rank(),
         slot, tok);
  }
  return tok;
}

void Executor::sample_rows(const proto::Header& h, const proto::StepBody& s, std::vector<float>& own, Flight* flight) {
  // Full rows: this rank's share, then the other members' (the vocabulary split). Alone on its
  // stage, its share is the full rows.
  const float* full = own.data();
  if (l_.last_stage.size() > 1) {
    full_rows_.resize(static_cast<size_t>(h.n_out * n_vocab_));
    std::vector<float> part;
    for (size_t i = 0; i < l_.last_stage.size(); ++i) {
      const int64_t v0 = vocab_split_[i], nv = vocab_split_[i + 1] - v0;
      const float* src = own.data();
      if (i > 0) {
        part.resize(static_cast<size_t>(h.n_out * nv));
        c_.recv(part.data(), part.size() * sizeof(float), l_.last_stage[i], comm::Tag::kLogits, "a TP member's share of the logits");
        src = part.data();
      }
      for (int64_t t = 0; t < h.n_out; ++t) {
        std::memcpy(full_rows_.data() + t * n_vocab_ + v0, src + t * nv, static_cast<size_t>(nv) * sizeof(float));
      }
    }
    full = full_rows_.data();
  }
  Pending p;
  p.ints.reserve(static_cast<size_t>(h.n_out));
  std::vector<LogprobWire> entries;
  int64_t r = 0;
  for (const SeqStep& q : s.seqs) {
    if (q.n_out == 0) continue;
    Sampler* sm = samplers_[static_cast<size_t>(q.slot)].get();
    if (!sm) fail("rank {}: slot {} was never set up for sampling (a bug)", c_.rank(), q.slot);
    std::vector<int32_t>& hist = histories_[static_cast<size_t>(q.slot)];
    const LogprobAsk ask = asks_[static_cast<size_t>(q.slot)];
    const int64_t n_prompt = n_prompt_[static_cast<size_t>(q.slot)];
    for (int64_t j = q.n_tok - q.n_out; j < q.n_tok; ++j, ++r) {
      const int64_t pos = q.pos0 + j;
      const float* row = full + r * n_vocab_;
      const bool prompt_row = is_prompt_row(pos, n_prompt);
      int32_t tok;
      if (prompt_row) {  // scoring: the prompt's next token, nothing sampled
        tok = hist[static_cast<size_t>(pos + 1)];
      } else {
        tok = sample_constrained(q.slot, *sm, row, hist);
        hist.push_back(tok);
      }
      p.ints.push_back(tok);
      if (!wants_entry(ask, pos, n_prompt)) continue;
      if (tok == kBadLogits) {  // the request ends as an error; its record only keeps the count
        entries.push_back(LogprobWire{0, NAN, 0, 0, {}});
      } else {
        entries.push_back(to_wire(token_logprob(row, n_vocab_, tok, prompt_row ? ask.prompt : ask.generated)));
      }
    }
  }
  if (c_.rank() == 0) {
    flight->tokens = std::move(p.ints);
    flight->entries = std::move(entries);
    return;
  }
  p.reqs.push_back(c_.isend(p.ints.data(), p.ints.size() * sizeof(int32_t), 0, comm::Tag::kTokens));
  if (!entries.empty()) {
    p.bytes.resize(entries.size() * sizeof(LogprobWire));
    std::memcpy(p.bytes.data(), entries.data(), p.bytes.size());
    p.reqs.push_back(c_.isend(p.bytes.data(), p.bytes.size(), 0, comm::Tag::kTokens));
  }
  pending_.push_back(std::move(p));
}

}  // namespace ranklm::runtime
