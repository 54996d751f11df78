#include "runtime/executor.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "plan/identity.h"
#include "plan/tp_slice.h"
#include "util/error.h"

namespace ranklm::runtime {

namespace {

using clock = std::chrono::steady_clock;
double since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }

// The last stage's vocabulary split: member i computes rows [off[i], off[i+1]).
std::vector<int64_t> vocab_offsets(int64_t n_vocab, int tp) {
  std::vector<int64_t> off(static_cast<size_t>(tp) + 1);
  for (int i = 0; i <= tp; ++i) off[static_cast<size_t>(i)] = n_vocab * i / tp;
  return off;
}

constexpr size_t kMaxPending = 8;  // sends in flight per rank before it waits for the oldest

}  // namespace

ModelPart model_part(const plan::Plan& p, int rank, const gguf::File& model) {
  const auto [stage, tpi] = p.where(rank);
  const plan::Stage& st = p.stages[static_cast<size_t>(stage)];
  const plan::TpShape shape = plan::tp_shape(model);
  const plan::TpPart tp = plan::tp_part(shape, st.tp(), tpi, p.tp_mode);
  ModelPart part;
  part.layer_begin = st.layer_begin;
  part.layer_end = st.layer_end;
  part.embed = stage == p.embedding_stage;
  part.head = stage == p.output_stage;
  part.n_head = tp.q_heads.size();
  part.n_head_kv = tp.kv_heads.size();
  part.n_ff = tp.ffn.size();
  part.wo_gather = tp.attn_output_replicated && st.tp() > 1;
  if (st.tp() > 1) {
    for (int i = 0; i < st.tp(); ++i) {
      const plan::TpPart m = plan::tp_part(shape, st.tp(), i, p.tp_mode);
      part.member_heads.push_back(m.q_heads.size() * shape.head_dim);
      part.member_ffn.push_back(m.ffn.size());
      part.member_rows.push_back(m.out_rows.size());
    }
    if (tp.exact) part.out_rows = tp.out_rows.size();
  }
  if (part.head) {
    const std::vector<int64_t> off = vocab_offsets(p.model.n_vocab, st.tp());
    part.vocab_begin = off[static_cast<size_t>(tpi)];
    part.vocab_end = off[static_cast<size_t>(tpi) + 1];
  }
  return part;
}

Executor::Executor(comm::Comm& c, const comm::Layout& layout, Model& m, kern::ThreadPool& pool, int n_slots,
                   int64_t n_ctx, comm::Compression z)
    : c_(c), l_(layout), m_(m), pool_(pool), z_(z), n_vocab_(m.hparams().n_vocab), n_ctx_(n_ctx) {
  if (c.size() != l_.world_size) {
    fail("this job has {} ranks but the plan has {}: start it with mpirun -np {}", c.size(), l_.world_size, l_.world_size);
  }
  if (l_.first_stage.empty() || l_.first_stage.front() != 0) {
    fail("rank 0 must be the first rank of the first pipeline stage (it reads prompts and embeds); "
         "remake the plan with ranklm plan");
  }
  if (n_slots < 1) fail("at least one KV slot is needed");
  for (int s = 0; s < n_slots; ++s) caches_.push_back(m.make_cache(n_ctx));
  if (l_.tp.size() > 1) {
    m_.tp.allreduce = [this](float* x, int64_t n) { comm::ring_allreduce(c_, l_.tp, x, n, z_, ring_); };
    m_.tp.gather = [this](const float* local, int64_t n_tok, TpGather what, float* full) {
      // Each member's [n_tok, w_i] block, gathered member by member, then interleaved into
      // [n_tok, sum of w_i] with the members' columns in TP order.
      const ModelPart& pt = m_.part();
      const std::vector<int64_t>& w = what == TpGather::kHeads ? pt.member_heads
                                      : what == TpGather::kFfn ? pt.member_ffn
                                                               : pt.member_rows;
      const int p = l_.tp.size();
      std::vector<int64_t> counts(static_cast<size_t>(p)), col(static_cast<size_t>(p) + 1, 0);
      for (int i = 0; i < p; ++i) {
        counts[static_cast<size_t>(i)] = n_tok * w[static_cast<size_t>(i)];
        col[static_cast<size_t>(i) + 1] = col[static_cast<size_t>(i)] + w[static_cast<size_t>(i)];
      }
      const int64_t width = col.back();
      gathered_.resize(static_cast<size_t>(n_tok * width));
      comm::ring_allgather(c_, l_.tp, local, counts, gathered_.data());
      const float* src = gathered_.data();
      for (int i = 0; i < p; ++i) {
        const int64_t wi = w[static_cast<size_t>(i)];
        for (int64_t t = 0; t < n_tok; ++t) {
          std::memcpy(full + t * width + col[static_cast<size_t>(i)], src + t * wi, static_cast<size_t>(wi) * sizeof(float));
        }
        src += n_tok * wi;
      }
    };
  }
  vocab_split_ = vocab_offsets(n_vocab_, static_cast<int>(l_.last_stage.size()));
  is_head_ = l_.is_last() && l_.tp.index == 0;
  if (is_head_) {
    samplers_.resize(static_cast<size_t>(n_slots));
    histories_.resize(static_cast<size_t>(n_slots));
  }
}

Executor::~Executor() {
  // Sends still in flight read from buffers owned here: let them finish (errors are moot now).
  try {
    reap(0);
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

void Executor::check_batch(const Header& h, const std::vector<SeqStep>& seqs) const {
  int64_t n_tok = 0, n_out = 0;
  for (const SeqStep& s : seqs) {
    if (s.slot < 0 || s.slot >= static_cast<int>(caches_.size())) {
      fail("KV slot {} out of range 0..{}", s.slot, caches_.size() - 1);
    }
    if (s.n_tok < 1 || s.n_out < 0 || s.n_out > s.n_tok) fail("a sequence of {} tokens asks for {} logits rows", s.n_tok, s.n_out);
    if (s.pos0 < 0 || s.pos0 + s.n_tok > n_ctx_) {
      fail("context full: positions {}..{} exceed the context size {}; raise --ctx-size or shorten the prompt", s.pos0,
           s.pos0 + s.n_tok - 1, n_ctx_);
    }
    n_tok += s.n_tok;
    n_out += s.n_out;
  }
  if (static_cast<int64_t>(seqs.size()) != h.n_seq || n_tok != h.n_tok || n_out != h.n_out || n_tok < 1) {
    fail("rank {}: a step of {} sequences, {} tokens, {} logits rows does not add up (a bug)", c_.rank(), h.n_seq, h.n_tok,
         h.n_out);
  }
}

void Executor::submit(const Batch& b) { submit_step(b, 1); }

void Executor::submit_sampled(const Batch& b) {
  for (const SeqStep& s : b.seqs) {
    if (s.n_out > 1) fail("a sampled step asks for at most one logits row per sequence ({} asked)", s.n_out);
  }
  submit_step(b, 4);
}

void Executor::setup_slot(int slot, const SamplingParams& sp, const std::vector<int32_t>& prompt) {
  if (c_.rank() != 0) fail("Executor::setup_slot runs on rank 0");
  if (slot < 0 || slot >= static_cast<int>(caches_.size())) fail("KV slot {} out of range 0..{}", slot, caches_.size() - 1);
  if (l_.head_rank == 0) {
    setup_here(slot, sp, prompt.data(), static_cast<int64_t>(prompt.size()));
    return;
  }
  // To the head rank only, in order with the steps (same tag, same sender).
  Pending p;
  p.ints = {3, slot, static_cast<int32_t>(prompt.size()), 0};
  std::vector<uint8_t> body(sizeof(SamplingParams) + prompt.size() * sizeof(int32_t));
  std::memcpy(body.data(), &sp, sizeof sp);
  if (!prompt.empty()) std::memcpy(body.data() + sizeof sp, prompt.data(), prompt.size() * sizeof(int32_t));
  p.ints.resize(4 + (body.size() + 3) / 4);
  std::memcpy(p.ints.data() + 4, body.data(), body.size());
  p.reqs.push_back(c_.isend(p.ints.data(), sizeof(Header), l_.head_rank, comm::Tag::kControl));
  p.reqs.push_back(c_.isend(p.ints.data() + 4, body.size(), l_.head_rank, comm::Tag::kControl));
  pending_.push_back(std::move(p));
}

void Executor::setup_here(int slot, const SamplingParams& sp, const int32_t* prompt, int64_t n) {
  samplers_[static_cast<size_t>(slot)] = std::make_unique<Sampler>(sp);
  histories_[static_cast<size_t>(slot)].assign(prompt, prompt + n);
}

void Executor::submit_step(const Batch& b, int kind) {
  if (c_.rank() != 0) fail("Executor::submit runs on rank 0 (the other ranks serve)");
  Header h{kind, static_cast<int32_t>(b.seqs.size()), 0, 0};
  for (const SeqStep& s : b.seqs) {
    h.n_tok += s.n_tok;
    h.n_out += s.n_out;
  }
  check_batch(h, b.seqs);
  if (static_cast<int64_t>(b.tokens.size()) != h.n_tok) fail("a step of {} tokens came with {} token ids", h.n_tok, b.tokens.size());
  // The description goes to every rank, the tokens to the first stage, all without waiting.
  Pending p;
  p.ints.resize(4 + 4 * b.seqs.size());
  std::memcpy(p.ints.data(), &h, sizeof h);
  std::memcpy(p.ints.data() + 4, b.seqs.data(), b.seqs.size() * sizeof(SeqStep));
  p.ints.insert(p.ints.end(), b.tokens.begin(), b.tokens.end());
  const int32_t* table = p.ints.data() + 4;
  const int32_t* toks = p.ints.data() + 4 + 4 * b.seqs.size();
  for (int r = 1; r < c_.size(); ++r) {
    p.reqs.push_back(c_.isend(p.ints.data(), sizeof h, r, comm::Tag::kControl));
    p.reqs.push_back(c_.isend(table, b.seqs.size() * sizeof(SeqStep), r, comm::Tag::kControl));
  }
  for (int r : l_.first_stage) {
    if (r != 0) p.reqs.push_back(c_.isend(toks, b.tokens.size() * sizeof(int32_t), r, comm::Tag::kTokens));
  }
  pending_.push_back(std::move(p));
  flight_.emplace_back();
  flight_.back().n_out = h.n_out;
  flight_.back().sampled = kind == 4;
  run_step(h, b.seqs, b.tokens.data(), &flight_.back());
}

void Executor::collect_tokens(std::vector<int32_t>& tokens) {
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
  Pending p;
  p.ints = {0, 0, 0, 0};
  for (int r = 1; r < c_.size(); ++r) p.reqs.push_back(c_.isend(p.ints.data(), sizeof(Header), r, comm::Tag::kControl));
  pending_.push_back(std::move(p));
  reap(0);
}

std::vector<RankTimes> Executor::gather_times() {
  if (c_.rank() != 0) fail("Executor::gather_times runs on rank 0");
  drain();
  std::vector<RankTimes> all(static_cast<size_t>(c_.size()));
  all[0] = times_;
  Pending p;
  p.ints = {2, 0, 0, 0};
  for (int r = 1; r < c_.size(); ++r) p.reqs.push_back(c_.isend(p.ints.data(), sizeof(Header), r, comm::Tag::kControl));
  pending_.push_back(std::move(p));
  for (int r = 1; r < c_.size(); ++r) {
    c_.recv(&all[static_cast<size_t>(r)], sizeof(RankTimes), r, comm::Tag::kStats, "a rank's time report");
  }
  reap(0);
  reset_times();
  return all;
}

void Executor::serve(std::chrono::milliseconds idle_limit) {
  for (;;) {
    Header h{};
    comm::Request r = c_.irecv(&h, sizeof h, 0, comm::Tag::kControl);
    const auto t0 = clock::now();
    for (uint32_t spins = 0; !r.test(); ++spins) {
      // Spin briefly (steps follow each other closely in a batch), then poll gently.
      if (spins > 20000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((spins & 1023) == 0 && idle_limit != std::chrono::milliseconds::max() && clock::now() - t0 > idle_limit) {
        throw comm::CommError(fmt::format("rank {}: no step from rank 0 within {} ms", c_.rank(), idle_limit.count()));
      }
    }
    if (h.kind == 0) break;
    if (h.kind == 3) {  // a new request's sampler (head rank only)
      if (!is_head_ || h.n_seq < 0 || h.n_seq >= static_cast<int>(caches_.size()) || h.n_tok < 0) {
        fail("rank {}: a slot set-up for slot {} came from rank 0 (a bug)", c_.rank(), h.n_seq);
      }
      std::vector<uint8_t> body(sizeof(SamplingParams) + static_cast<size_t>(h.n_tok) * sizeof(int32_t));
      c_.recv(body.data(), body.size(), 0, comm::Tag::kControl, "a slot's sampling set-up");
      SamplingParams sp;
      std::memcpy(&sp, body.data(), sizeof sp);
      std::vector<int32_t> prompt(static_cast<size_t>(h.n_tok));
      if (h.n_tok > 0) std::memcpy(prompt.data(), body.data() + sizeof sp, prompt.size() * sizeof(int32_t));
      setup_here(h.n_seq, sp, prompt.data(), h.n_tok);
      continue;
    }
    if (h.kind == 2) {
      reap(0);
      const RankTimes t = times_;
      c_.send(&t, sizeof t, 0, comm::Tag::kStats, "delivery of the time report");
      reset_times();
      continue;
    }
    if (h.n_seq < 1 || h.n_seq > (1 << 20)) fail("rank {}: a step of {} sequences came from rank 0 (a bug)", c_.rank(), h.n_seq);
    std::vector<SeqStep> seqs(static_cast<size_t>(h.n_seq));
    c_.recv(seqs.data(), seqs.size() * sizeof(SeqStep), 0, comm::Tag::kControl, "the step's sequence table");
    check_batch(h, seqs);
    const int32_t* tokens = nullptr;
    if (l_.is_first()) {
      tokens_.resize(static_cast<size_t>(h.n_tok));
      c_.recv(tokens_.data(), tokens_.size() * sizeof(int32_t), 0, comm::Tag::kTokens, "the step's tokens");
      tokens = tokens_.data();
    }
    run_step(h, seqs, tokens, nullptr);
  }
  reap(0);
}

void Executor::run_step(const Header& h, const std::vector<SeqStep>& seqs, const int32_t* tokens, Flight* flight) {
  const auto t0 = clock::now();
  const double w0 = c_.wait_seconds();
  reap(kMaxPending);
  const int64_t n_embd = m_.hparams().n_embd;
  x_.resize(static_cast<size_t>(h.n_tok * n_embd));
  if (l_.is_first()) {
    m_.embed(tokens, h.n_tok, x_.data());
  } else {
    c_.recv(x_.data(), x_.size() * sizeof(float), l_.hidden_from, comm::Tag::kHidden, "the previous stage's hidden states");
  }
  std::vector<SeqSpan> spans;
  for (const SeqStep& s : seqs) spans.push_back({&caches_[static_cast<size_t>(s.slot)], s.pos0, s.n_tok});
  m_.run_layers(x_.data(), spans.data(), static_cast<int>(spans.size()), pool_);
  if (!l_.is_last()) {
    Pending p;
    p.floats.swap(x_);  // the buffer travels with its sends; x_ starts empty next step
    for (int d : l_.hidden_to) p.reqs.push_back(c_.isend(p.floats.data(), p.floats.size() * sizeof(float), d, comm::Tag::kHidden));
    pending_.push_back(std::move(p));
  } else if (h.n_out > 0) {
    std::vector<int64_t> rows;
    int64_t row = 0;
    for (const SeqStep& s : seqs) {
      for (int64_t j = s.n_tok - s.n_out; j < s.n_tok; ++j) rows.push_back(row + j);
      row += s.n_tok;
    }
    const int i = l_.tp.index;
    const int64_t nv = vocab_split_[static_cast<size_t>(i) + 1] - vocab_split_[static_cast<size_t>(i)];
    Pending p;
    p.floats.resize(static_cast<size_t>(h.n_out * nv));
    m_.head(x_.data(), rows.data(), h.n_out, p.floats.data(), pool_);
    if (h.kind == 4) {
      if (is_head_) {
        sample_rows(h, seqs, p.floats, flight);
      } else {  // this member's share goes to the head rank, which samples
        p.reqs.push_back(c_.isend(p.floats.data(), p.floats.size() * sizeof(float), l_.head_rank, comm::Tag::kLogits));
        pending_.push_back(std::move(p));
      }
    } else if (c_.rank() == 0) {
      flight->local = std::move(p.floats);
    } else {
      p.reqs.push_back(c_.isend(p.floats.data(), p.floats.size() * sizeof(float), 0, comm::Tag::kLogits));
      pending_.push_back(std::move(p));
    }
  }
  const double waited = c_.wait_seconds() - w0;
  times_.comm_s += waited;
  times_.compute_s += since(t0) - waited;
  ++times_.steps;
}

void Executor::sample_rows(const Header& h, const std::vector<SeqStep>& seqs, std::vector<float>& own, Flight* flight) {
  // Full rows: this rank's share, then the other members' (the vocabulary split).
  std::vector<float> rows(static_cast<size_t>(h.n_out * n_vocab_));
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
      std::memcpy(rows.data() + t * n_vocab_ + v0, src + t * nv, static_cast<size_t>(nv) * sizeof(float));
    }
  }
  Pending p;
  p.ints.reserve(static_cast<size_t>(h.n_out));
  int64_t r = 0;
  for (const SeqStep& s : seqs) {
    if (s.n_out == 0) continue;
    Sampler* sm = samplers_[static_cast<size_t>(s.slot)].get();
    if (!sm) fail("rank {}: slot {} was never set up for sampling (a bug)", c_.rank(), s.slot);
    std::vector<int32_t>& hist = histories_[static_cast<size_t>(s.slot)];
    const int32_t tok = sm->sample(rows.data() + r * n_vocab_, n_vocab_, hist);
    hist.push_back(tok);
    p.ints.push_back(tok);
    ++r;
  }
  if (c_.rank() == 0) {
    flight->tokens = std::move(p.ints);
    return;
  }
  p.reqs.push_back(c_.isend(p.ints.data(), p.ints.size() * sizeof(int32_t), 0, comm::Tag::kTokens));
  pending_.push_back(std::move(p));
}

}  // namespace ranklm::runtime
