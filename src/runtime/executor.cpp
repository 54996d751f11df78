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

}  // namespace

ModelPart model_part(const plan::Plan& p, int rank, const gguf::File& model) {
  const auto [stage, tpi] = p.where(rank);
  const plan::Stage& st = p.stages[static_cast<size_t>(stage)];
  const plan::TpPart tp = plan::tp_part(plan::tp_shape(model), st.tp(), tpi);
  ModelPart part;
  part.layer_begin = st.layer_begin;
  part.layer_end = st.layer_end;
  part.embed = stage == p.embedding_stage;
  part.head = stage == p.output_stage;
  part.n_head = tp.q_heads.size();
  part.n_head_kv = tp.kv_heads.size();
  part.n_ff = tp.ffn.size();
  part.wo_gather = tp.attn_output_replicated && st.tp() > 1;
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
  for (int s = 0; s < n_slots; ++s) caches_.push_back(m.make_cache(n_ctx));
  if (l_.tp.size() > 1) {
    m_.tp.allreduce = [this](float* x, int64_t n) { comm::ring_allreduce(c_, l_.tp, x, n, z_, ring_); };
    m_.tp.gather_heads = [this](const float* local, int64_t n_tok, float* full) {
      // Members hold equal shares of the heads: [n_tok, q_local] each, gathered member by
      // member, then interleaved into [n_tok, members * q_local].
      const int p = l_.tp.size();
      const int64_t ql = m_.part().n_head * m_.hparams().head_dim;
      gathered_.resize(static_cast<size_t>(p * n_tok * ql));
      comm::ring_allgather(c_, l_.tp, local, std::vector<int64_t>(static_cast<size_t>(p), n_tok * ql), gathered_.data());
      for (int i = 0; i < p; ++i) {
        for (int64_t t = 0; t < n_tok; ++t) {
          std::memcpy(full + (t * p + i) * ql, gathered_.data() + (i * n_tok + t) * ql, static_cast<size_t>(ql) * sizeof(float));
        }
      }
    };
  }
  if (l_.is_last()) vocab_split_ = vocab_offsets(n_vocab_, l_.tp.size());
}

void Executor::reset_times() {
  times_ = {};
  c_.reset_wait_seconds();
}

void Executor::forward(int slot, const int32_t* tokens, int64_t n_tok, int64_t pos0, int64_t n_out, float* logits) {
  if (c_.rank() != 0) fail("Executor::forward runs on rank 0 (the other ranks serve)");
  if (slot < 0 || slot >= static_cast<int>(caches_.size())) fail("KV slot {} out of range 0..{}", slot, caches_.size() - 1);
  if (n_tok < 1 || n_out < 1 || n_out > n_tok) fail("forward: {} tokens, {} logits rows", n_tok, n_out);
  if (pos0 < 0 || pos0 + n_tok > n_ctx_) {
    fail("context full: positions {}..{} exceed the context size {}; raise --ctx-size or shorten the prompt", pos0,
         pos0 + n_tok - 1, n_ctx_);
  }
  const Step s{1, slot, static_cast<int32_t>(n_tok), static_cast<int32_t>(pos0), static_cast<int32_t>(n_out)};
  std::vector<comm::Request> sent;
  for (int r = 1; r < c_.size(); ++r) sent.push_back(c_.isend(&s, sizeof s, r, comm::Tag::kControl));
  for (int r : l_.first_stage) {
    if (r != 0) sent.push_back(c_.isend(tokens, static_cast<size_t>(n_tok) * sizeof(int32_t), r, comm::Tag::kTokens));
  }
  run_step(s, tokens, logits);
  for (comm::Request& q : sent) c_.wait(q, "delivery of a step");
}

void Executor::stop() {
  if (c_.rank() != 0) return;
  const Step s{0, 0, 0, 0, 0};
  std::vector<comm::Request> sent;
  for (int r = 1; r < c_.size(); ++r) sent.push_back(c_.isend(&s, sizeof s, r, comm::Tag::kControl));
  for (comm::Request& q : sent) c_.wait(q, "delivery of the stop command");
}

void Executor::serve(std::chrono::milliseconds idle_limit) {
  for (;;) {
    Step s{};
    comm::Request r = c_.irecv(&s, sizeof s, 0, comm::Tag::kControl);
    const auto t0 = clock::now();
    for (uint32_t spins = 0; !r.test(); ++spins) {
      // Spin briefly (steps follow each other closely in a batch), then poll gently.
      if (spins > 20000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((spins & 1023) == 0 && idle_limit != std::chrono::milliseconds::max() && clock::now() - t0 > idle_limit) {
        throw comm::CommError(fmt::format("rank {}: no step from rank 0 within {} ms", c_.rank(), idle_limit.count()));
      }
    }
    if (s.kind == 0) return;
    if (s.n_tok < 1 || s.slot < 0 || s.slot >= static_cast<int>(caches_.size())) {
      fail("rank {}: a step for slot {} with {} tokens came from rank 0 (ranks disagree; a bug)", c_.rank(), s.slot, s.n_tok);
    }
    const int32_t* tokens = nullptr;
    if (l_.is_first()) {
      tokens_.resize(static_cast<size_t>(s.n_tok));
      c_.recv(tokens_.data(), tokens_.size() * sizeof(int32_t), 0, comm::Tag::kTokens, "the step's tokens");
      tokens = tokens_.data();
    }
    run_step(s, tokens, nullptr);
  }
}

void Executor::run_step(const Step& s, const int32_t* tokens, float* logits) {
  const auto t0 = clock::now();
  const double w0 = c_.wait_seconds();
  const int64_t n_embd = m_.hparams().n_embd;
  x_.resize(static_cast<size_t>(s.n_tok * n_embd));
  if (l_.is_first()) {
    m_.embed(tokens, s.n_tok, x_.data());
  } else {
    c_.recv(x_.data(), x_.size() * sizeof(float), l_.hidden_from, comm::Tag::kHidden, "the previous stage's hidden states");
  }
  m_.run_layers(x_.data(), s.n_tok, s.pos0, caches_[static_cast<size_t>(s.slot)], pool_);
  if (!l_.is_last()) {
    std::vector<comm::Request> sent;
    for (int d : l_.hidden_to) sent.push_back(c_.isend(x_.data(), x_.size() * sizeof(float), d, comm::Tag::kHidden));
    for (comm::Request& q : sent) c_.wait(q, "delivery of hidden states to the next stage");
  } else {
    const int i = l_.tp.index;
    const int64_t v0 = vocab_split_[static_cast<size_t>(i)], nv = vocab_split_[static_cast<size_t>(i) + 1] - v0;
    logits_part_.resize(static_cast<size_t>(s.n_out * nv));
    m_.head(x_.data(), s.n_tok, s.n_out, logits_part_.data(), pool_);
    if (c_.rank() != 0) c_.send(logits_part_.data(), logits_part_.size() * sizeof(float), 0, comm::Tag::kLogits, "delivery of logits");
  }
  if (c_.rank() == 0) {
    // Each last-stage member's [n_out, its rows] into the columns of [n_out, n_vocab].
    const std::vector<int>& last = l_.last_stage;
    const std::vector<int64_t> split = vocab_offsets(n_vocab_, static_cast<int>(last.size()));
    std::vector<float> part;
    for (size_t i = 0; i < last.size(); ++i) {
      const int64_t v0 = split[i], nv = split[i + 1] - v0;
      const float* src;
      if (last[i] == 0) {
        src = logits_part_.data();
      } else {
        part.resize(static_cast<size_t>(s.n_out * nv));
        c_.recv(part.data(), part.size() * sizeof(float), last[i], comm::Tag::kLogits, "the last stage's logits");
        src = part.data();
      }
      for (int64_t t = 0; t < s.n_out; ++t) std::memcpy(logits + t * n_vocab_ + v0, src + t * nv, static_cast<size_t>(nv) * sizeof(float));
    }
  }
  const double waited = c_.wait_seconds() - w0;
  times_.comm_s += waited;
  times_.compute_s += since(t0) - waited;
  ++times_.steps;
}

}  // namespace ranklm::runtime
