#include "runtime/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>

#include "util/error.h"

namespace ranklm::runtime {

namespace {

using clock = std::chrono::steady_clock;

struct Slot {
  std::unique_ptr<Request> req;
  int64_t fed = 0;               // prompt tokens already run
  std::vector<int32_t> out;
  int32_t next = -1;             // sampled, not yet run
  bool busy = false;             // in a step in flight
  clock::time_point t0, t_first;
  // The KV this slot holds: the tokens at positions 0..kv.size()-1, submitted in steps (kept
  // after the request ends, until the slot takes another one).
  std::vector<int32_t> kv;
  int64_t cached = 0;            // prompt positions shared from another slot
  int wait_src = -1;             // waiting for slot wait_src to hold `cached` positions
  int64_t reserve = 0;           // KV blocks this slot may hold (admission accounting)
  int64_t max_pos0 = -1;         // the latest first position of a step on this KV (sliding windows)
  // Prompt log-probability entries of the KV's positions (entry i scores token i + 1), each
  // with plp_top alternatives; kept with the KV for later scoring requests that share it.
  std::vector<TokenLogprob> plp;
  int plp_top = -1;
  std::vector<TokenLogprob> glp;  // the generated tokens' entries
};

// One sequence of a step in flight: its slot and the rows it asked for.
struct Member {
  int slot;
  int64_t first_pos;  // the position of its first logits row
  int32_t n_out;
};

// Entries src[0..n) with at most `top` alternatives each.
std::vector<TokenLogprob> entries_upto(const std::vector<TokenLogprob>& src, int64_t n, int top) {
  std::vector<TokenLogprob> out(src.begin(), src.begin() + std::min<int64_t>(n, static_cast<int64_t>(src.size())));
  for (TokenLogprob& e : out) {
    if (static_cast<int>(e.top.size()) > top) e.top.resize(static_cast<size_t>(top));
  }
  return out;
}

int64_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& p) {
  const size_t n = std::min(a.size(), p.size());
  size_t i = 0;
  while (i < n && a[i] == p[i]) ++i;
  return static_cast<int64_t>(i);
}

// How far prompt p agrees with what a live slot will hold: its prompt, then what it generated.
int64_t common_prefix_live(const Slot& o, const std::vector<int32_t>& p) {
  int64_t i = common_prefix(o.req->prompt, p);
  const size_t plen = o.req->prompt.size();
  if (static_cast<size_t>(i) == plen) {
    while (static_cast<size_t>(i) < p.size() && static_cast<size_t>(i) - plen < o.out.size() &&
           o.out[static_cast<size_t>(i) - plen] == p[static_cast<size_t>(i)]) {
      ++i;
    }
  }
  return i;
}

}  // namespace

Scheduler::Scheduler(Executor& ex, const SchedulerOptions& o) : ex_(ex), o_(o) {
  if (o_.n_micro < 1) o_.n_micro = 1;
  if (o_.prefill_chunk < 1) o_.prefill_chunk = 1;
}

// One run's state: the slots, the steps in flight, the KV accounting.
class Scheduler::Run {
 public:
  Run(Executor& ex, const SchedulerOptions& o, Source& src)
      : ex_(ex), o_(o), src_(src), n_slots_(ex.n_slots()),
        n_micro_(std::min(o.n_micro, ex.n_slots())), slots_(static_cast<size_t>(ex.n_slots())),
        block_len_(std::max<int64_t>(1, ex.kv_block_len())), sharing_(o.share_prefixes && ex.chunk_invariant()) {}

  void loop() {
    // Every slot starts empty (KV left by an earlier run is not in this one's accounting).
    for (int s = 0; s < n_slots_; ++s) ex_.share_kv(s, s, 0);
    for (;;) {
      const bool drain = src_.want_drain();
      if (drain && flight_.empty()) src_.drained();
      drop_cancelled();
      resolve_waits();
      admit();
      report_load();
      Batch b;
      std::vector<Member> members;
      if (!drain) next_step(b, members);
      if (!members.empty()) {
        ex_.submit_sampled(b);
        flight_.push_back(std::move(members));
        if (static_cast<int>(flight_.size()) >= n_micro_) collect_one();
        continue;
      }
      if (!flight_.empty()) {
        collect_one();
        continue;
      }
      if (drain) continue;  // drained() runs at the top
      // Nothing ready, nothing running: all done, unless more may come.
      if (!source_open_ && !held_) break;
      src_.wait();
    }
  }

 private:
  int64_t blocks_for(int64_t n) const { return (n + block_len_ - 1) / block_len_; }

  // Whether slot o's KV still holds what a sequence continuing at position n needs: windowed
  // layers give back each block that a step starts a whole window past (model/kv_cache.h), and
  // the first query at n reads keys from n - window + 1 on.
  bool window_allows(const Slot& o, int64_t n) const {
    const int64_t w = ex_.kv_window();
    if (w <= 0 || n <= 0 || o.max_pos0 < 0) return true;
    const int64_t gone = std::max<int64_t>(0, o.max_pos0 - w + 1) / block_len_ * block_len_;
    return std::max<int64_t>(0, n - w + 1) >= gone;
  }
  Slot& slot(int s) { return slots_[static_cast<size_t>(s)]; }

  void report_load() {
    int busy = 0;
    for (const Slot& sl : slots_) busy += sl.req ? 1 : 0;
    const int waiting = held_ ? 1 : 0;
    if (busy != last_busy_ || waiting != last_waiting_) src_.load(busy, waiting);
    last_busy_ = busy;
    last_waiting_ = waiting;
  }

  // Requests whose client left end now: one waiting for KV, and every slot not in a step in
  // flight (one that is ends when its step comes back, at the next pass).
  void drop_cancelled() {
    if (held_ && src_.cancelled(held_->id)) {
      Finished f;
      f.id = held_->id;
      f.finish_reason = "cancelled";
      f.n_prompt = static_cast<int64_t>(held_->prompt.size());
      held_.reset();
      src_.done(std::move(f));
    }
    for (Slot& sl : slots_) {
      if (sl.req && !sl.busy && src_.cancelled(sl.req->id)) finish(sl, "cancelled");
    }
  }

  // A slot emptied of its request; it keeps its KV (tokens and the blocks they may hold).
  static void clear_request(Slot& sl) {
    std::vector<int32_t> kv = std::move(sl.kv);
    std::vector<TokenLogprob> plp = std::move(sl.plp);
    const int64_t reserve = sl.reserve, max_pos0 = sl.max_pos0;
    const int plp_top = sl.plp_top;
    sl = Slot{};
    sl.kv = std::move(kv);
    sl.plp = std::move(plp);
    sl.plp_top = plp_top;
    sl.reserve = reserve;
    sl.max_pos0 = max_pos0;
  }

  // Positions of slot o whose prompt entries (with at least `top` alternatives) it holds or
  // will hold: what a scoring request may share from it.
  static int64_t entries_limit(const Slot& o, int top, bool live) {
    if (live) return o.req->logprobs.prompt >= top ? static_cast<int64_t>(o.req->prompt.size()) - 1 : 0;
    return o.plp_top >= top ? static_cast<int64_t>(o.plp.size()) : 0;
  }

  void set_reserve(Slot& sl, int64_t blocks) {
    reserved_ += blocks - sl.reserve;
    sl.reserve = blocks;
  }

  // A waiting slot takes its prefix once the source holds it (always so once the source has
  // finished: its prompt has run).
  void resolve_waits() {
    for (int s = 0; s < n_slots_; ++s) {
      Slot& sl = slot(s);
      if (sl.wait_src < 0) continue;
      const Slot& src = slot(sl.wait_src);
      const bool scoring = sl.req->logprobs.prompt >= 0;
      // What the source holds now: its KV, and for a scoring request its prompt entries.
      const int64_t held = static_cast<int64_t>(scoring ? std::min(src.kv.size(), src.plp.size()) : src.kv.size());
      if (!src.req && held < sl.cached) {
        // The source ended before its prompt ran that far (cancelled): take what it holds.
        sl.cached = held >= block_len_ ? held : 0;
        if (sl.cached == 0) {
          sl.wait_src = -1;
          continue;
        }
      }
      if (held < sl.cached) continue;
      if (!window_allows(src, sl.cached)) {  // the source moved a window past: compute it here
        sl.cached = 0;
        sl.wait_src = -1;
        continue;
      }
      ex_.share_kv(s, sl.wait_src, sl.cached);
      sl.kv.assign(src.kv.begin(), src.kv.begin() + sl.cached);
      if (scoring) sl.plp = entries_upto(src.plp, sl.cached, sl.plp_top);
      sl.max_pos0 = src.max_pos0;
      sl.fed = sl.cached;
      sl.wait_src = -1;
    }
  }

  // The KV a new request in slot s starts from: the longest prefix any slot holds or will hold.
  void place(int s) {
    Slot& sl = slot(s);
    const std::vector<int32_t>& p = sl.req->prompt;
    const int top = sl.req->logprobs.prompt;  // >= 0: a scoring request
    int best = -1;
    int64_t best_n = 0;
    if (sharing_) {
      for (int t = 0; t < n_slots_; ++t) {
        const Slot& o = slot(t);
        // This slot's own KV (its last request's), a finished slot's, or a live one's future.
        const bool live = t != s && o.req;
        int64_t n = live ? common_prefix_live(o, p) : common_prefix(o.kv, p);
        if (t != s && o.wait_src >= 0) n = std::min(n, o.cached);  // not past what it waits for
        n = std::min<int64_t>(n, static_cast<int64_t>(p.size()) - 1);  // the last prompt token runs here
        // A scoring request needs the entries of the shared positions, and the last one's
        // token (the next prompt token) must be its own.
        if (top >= 0) n = std::min({n, common_prefix(live ? o.req->prompt : o.kv, p) - 1, entries_limit(o, top, live)});
        if (!window_allows(o, n)) n = 0;  // (a live source is checked again when its prefix is ready)
        if (n > best_n) {
          best = t;
          best_n = n;
        }
      }
    }
    sl.plp_top = top;
    if (best_n < block_len_) {  // nothing worth sharing: start empty
      ex_.share_kv(s, s, 0);
      sl.kv.clear();
      sl.plp.clear();
      sl.max_pos0 = -1;
      return;
    }
    sl.cached = best_n;
    const Slot& src = slot(best);
    const bool entries_ready = top < 0 || static_cast<int64_t>(src.plp.size()) >= best_n;
    if (best == s || (static_cast<int64_t>(src.kv.size()) >= best_n && entries_ready)) {
      ex_.share_kv(s, best, best_n);
      sl.plp = top >= 0 ? entries_upto(src.plp, best_n, top) : std::vector<TokenLogprob>{};
      if (best != s) {
        sl.kv.assign(src.kv.begin(), src.kv.begin() + best_n);
        sl.max_pos0 = src.max_pos0;
      }
      sl.kv.resize(static_cast<size_t>(best_n));
      sl.fed = best_n;
    } else {
      // Its prompt has not run that far yet: this one waits for it, holding nothing meanwhile.
      ex_.share_kv(s, s, 0);
      sl.kv.clear();
      sl.plp.clear();
      sl.max_pos0 = -1;
      sl.wait_src = best;
    }
  }

  // Frees the KV kept by finished slots (other than `keep`) until `need` more blocks fit.
  bool make_room(int64_t need, int keep) {
    if (reserved_ + need <= ex_.kv_budget()) return true;
    resolve_waits();  // anyone still to share from a finished slot does so first
    for (int t = 0; t < n_slots_ && reserved_ + need > ex_.kv_budget(); ++t) {
      Slot& o = slot(t);
      if (t == keep || o.req || o.kv.empty()) continue;
      bool needed = false;
      for (const Slot& w : slots_) needed = needed || w.wait_src == t;
      if (needed) continue;
      ex_.share_kv(t, t, 0);
      o.kv.clear();
      o.max_pos0 = -1;
      set_reserve(o, 0);
    }
    return reserved_ + need <= ex_.kv_budget();
  }

  // The next request from the source (or the one held back), or nullopt when none is left.
  std::optional<Request> take() {
    std::optional<Request> r = std::move(held_);
    held_.reset();
    if (!r && source_open_) r = src_.next();
    if (!r && !src_.open()) source_open_ = false;
    return r;
  }

  // Fills free slots while requests come and their KV blocks fit.
  void admit() {
    for (int s = 0; s < n_slots_ && (source_open_ || held_); ++s) {
      Slot& sl = slot(s);
      while (!sl.req && (source_open_ || held_)) {
        std::optional<Request> r = take();
        if (!r) break;
        if (r->prompt.empty()) {
          src_.reject(*r, "the prompt is empty");
          continue;
        }
        if (static_cast<int64_t>(r->prompt.size()) + 1 > ex_.n_ctx()) {
          src_.reject(*r, fmt::format("the prompt has {} tokens; the context holds {} (raise --ctx-size)", r->prompt.size(),
                                  ex_.n_ctx()));
          continue;
        }
        // Blocks it may hold at its end; admitted only while they fit the pool.
        const int64_t blocks = blocks_for(std::min<int64_t>(ex_.n_ctx(), static_cast<int64_t>(r->prompt.size()) +
                                                                              std::max(1, r->max_tokens)));
        if (!make_room(blocks - sl.reserve, s)) {
          const bool any_live = std::any_of(slots_.begin(), slots_.end(), [](const Slot& o) { return o.req != nullptr; });
          if (!any_live) {  // nothing will end to make room: it can never run
            src_.reject(*r, fmt::format("it may need {} KV blocks of {} positions; the pool holds {} (lower max_tokens, or "
                                        "give the job more KV memory)", blocks, block_len_, ex_.kv_budget()));
            continue;
          }
          held_ = std::move(r);  // waits for a running sequence to end
          return;
        }
        resolve_waits();  // sequences still to share from this slot's old KV do so first
        clear_request(sl);
        sl.req = std::make_unique<Request>(std::move(*r));
        set_reserve(sl, blocks);
        place(s);
        // The last stage samples this slot from now on (only token ids come back).
        ex_.setup_slot(s, sl.req->sampling, sl.req->prompt, sl.req->logprobs, sl.req->grammar_kind, sl.req->grammar);
        sl.t0 = clock::now();
      }
    }
  }

  void finish(Slot& sl, const char* reason) {
    Finished f;
    f.id = sl.req->id;
    f.tokens = std::move(sl.out);
    f.finish_reason = reason;
    f.logprobs = std::move(sl.glp);
    if (sl.req->logprobs.prompt >= 0) f.prompt_logprobs = sl.plp;  // the slot keeps them with its KV
    f.n_prompt = static_cast<int64_t>(sl.req->prompt.size());
    f.n_cached = sl.cached;
    f.first_token_s = std::chrono::duration<double>(sl.t_first - sl.t0).count();
    f.total_s = std::chrono::duration<double>(clock::now() - sl.t0).count();
    // The slot keeps its KV (for later prompts that start alike) until it takes another request.
    clear_request(sl);
    set_reserve(sl, blocks_for(static_cast<int64_t>(sl.kv.size())));
    src_.done(std::move(f));
  }

  // The oldest step's sampled tokens, one for every sequence that asked.
  void collect_one() {
    ex_.collect_tokens(sampled_, &entries_);
    size_t row = 0, entry = 0;
    for (const Member& m : flight_.front()) {
      Slot& sl = slot(m.slot);
      sl.busy = false;
      const int64_t plen = static_cast<int64_t>(sl.req->prompt.size());
      const LogprobAsk& ask = sl.req->logprobs;
      // Prompt rows (a scoring request's chunk): their entries, in position order.
      for (int32_t j = 0; j < m.n_out && is_prompt_row(m.first_pos + j, plen); ++j, ++row) {
        if (ask.prompt >= 0) sl.plp.push_back(std::move(entries_.at(entry++)));
      }
      if (sl.fed < plen) continue;  // a prompt chunk before its end
      const int32_t tok = sampled_.at(row++);
      std::optional<TokenLogprob> lp;
      if (ask.generated >= 0) lp = std::move(entries_.at(entry++));
      if (sl.out.empty()) sl.t_first = clock::now();
      if (tok == kBadLogits) {  // NaN logits: this request ends as an error, the others run on
        finish(sl, "error");
        continue;
      }
      if (sl.req->max_tokens == 0) {  // scoring only: the prompt has run
        finish(sl, "length");
        continue;
      }
      const bool is_end = std::find(sl.req->end_tokens.begin(), sl.req->end_tokens.end(), tok) != sl.req->end_tokens.end();
      if (is_end) {
        finish(sl, "stop");
        continue;
      }
      sl.out.push_back(tok);
      if (lp) sl.glp.push_back(std::move(*lp));
      if (sl.req->stop && sl.req->stop(sl.out)) {
        finish(sl, "stop");
      } else if (static_cast<int>(sl.out.size()) >= sl.req->max_tokens ||
                 static_cast<int64_t>(sl.req->prompt.size() + sl.out.size()) >= ex_.n_ctx()) {
        finish(sl, "length");
      } else {
        sl.next = tok;
      }
    }
    flight_.pop_front();
  }

  // The next group with ready sequences (round robin), as one step.
  void next_step(Batch& b, std::vector<Member>& members) {
    for (int tries = 0; tries < n_micro_ && members.empty(); ++tries, group_ = (group_ + 1) % n_micro_) {
      for (int s = group_; s < n_slots_; s += n_micro_) {
        Slot& sl = slot(s);
        if (!sl.req || sl.busy || sl.wait_src >= 0) continue;
        const int64_t plen = static_cast<int64_t>(sl.req->prompt.size());
        SeqStep st{s, 0, 0, 0};
        if (sl.fed < plen) {  // prefill chunk
          const int64_t n = std::min(o_.prefill_chunk, plen - sl.fed);
          st.pos0 = static_cast<int32_t>(sl.fed);
          st.n_tok = static_cast<int32_t>(n);
          // A scoring request wants every row; otherwise only the last prompt token's.
          st.n_out = sl.req->logprobs.prompt >= 0 ? static_cast<int32_t>(n) : sl.fed + n == plen ? 1 : 0;
          b.tokens.insert(b.tokens.end(), sl.req->prompt.begin() + sl.fed, sl.req->prompt.begin() + sl.fed + n);
          sl.kv.insert(sl.kv.end(), sl.req->prompt.begin() + sl.fed, sl.req->prompt.begin() + sl.fed + n);
          sl.fed += n;
        } else {  // decode the last sampled token
          st.pos0 = static_cast<int32_t>(plen + static_cast<int64_t>(sl.out.size()) - 1);
          st.n_tok = 1;
          st.n_out = 1;
          b.tokens.push_back(sl.next);
          sl.kv.push_back(sl.next);
        }
        sl.busy = true;
        sl.max_pos0 = std::max<int64_t>(sl.max_pos0, st.pos0);
        b.seqs.push_back(st);
        members.push_back({s, st.pos0 + st.n_tok - st.n_out, st.n_out});
      }
    }
  }

  Executor& ex_;
  const SchedulerOptions& o_;
  Source& src_;
  const int n_slots_, n_micro_;
  std::vector<Slot> slots_;
  const int64_t block_len_;
  const bool sharing_;
  bool source_open_ = true;
  std::optional<Request> held_;  // taken from the source, waiting for KV blocks to free up
  int64_t reserved_ = 0;  // KV blocks the slots may hold: live ones to their end, finished ones what they keep
  std::deque<std::vector<Member>> flight_;  // sequences of each step in flight, oldest first
  int group_ = 0;
  std::vector<int32_t> sampled_;
  std::vector<TokenLogprob> entries_;
  int last_busy_ = -1, last_waiting_ = -1;
};

namespace {

// A closed source made of three functions (batch jobs, generate).
class FnSource : public Source {
 public:
  FnSource(const std::function<std::optional<Request>()>& next, const std::function<void(Finished&&)>& done,
           const std::function<void(const Request&, const std::string&)>& reject)
      : next_(next), done_(done), reject_(reject) {}
  std::optional<Request> next() override { return next_(); }
  void done(Finished&& f) override { done_(std::move(f)); }
  void reject(const Request& r, const std::string& why) override { reject_(r, why); }

 private:
  const std::function<std::optional<Request>()>& next_;
  const std::function<void(Finished&&)>& done_;
  const std::function<void(const Request&, const std::string&)>& reject_;
};

}  // namespace

void Scheduler::run(const std::function<std::optional<Request>()>& next, const std::function<void(Finished&&)>& done,
                    const std::function<void(const Request&, const std::string&)>& reject) {
  FnSource src(next, done, reject);
  run(src);
}

void Scheduler::run(Source& src) { Run(ex_, o_, src).loop(); }

}  // namespace ranklm::runtime
