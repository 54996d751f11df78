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
};

}  // namespace

Scheduler::Scheduler(Executor& ex, const SchedulerOptions& o) : ex_(ex), o_(o) {
  if (o_.n_micro < 1) o_.n_micro = 1;
  if (o_.prefill_chunk < 1) o_.prefill_chunk = 1;
}

void Scheduler::run(const std::function<std::optional<Request>()>& next, const std::function<void(Finished&&)>& done,
                    const std::function<void(const Request&, const std::string&)>& reject) {
  const int n_slots = ex_.n_slots();
  const int n_micro = std::min(o_.n_micro, n_slots);
  std::vector<Slot> slots(static_cast<size_t>(n_slots));
  bool source_open = true;
  std::deque<std::vector<int>> flight;  // slots of each step in flight, oldest first
  int group = 0;
  std::vector<int32_t> sampled;

  auto admit = [&] {
    for (int s = 0; s < n_slots && source_open; ++s) {
      Slot& sl = slots[static_cast<size_t>(s)];
      while (!sl.req && source_open) {
        std::optional<Request> r = next();
        if (!r) {
          source_open = false;
          break;
        }
        const int64_t need = static_cast<int64_t>(r->prompt.size()) + 1;
        if (r->prompt.empty()) {
          reject(*r, "the prompt is empty");
          continue;
        }
        if (need > ex_.n_ctx()) {
          reject(*r, fmt::format("the prompt has {} tokens; the context holds {} (raise --ctx-size)", r->prompt.size(),
                                 ex_.n_ctx()));
          continue;
        }
        sl = Slot{};
        sl.req = std::make_unique<Request>(std::move(*r));
        // The last stage samples this slot from now on (only token ids come back).
        ex_.setup_slot(s, sl.req->sampling, sl.req->prompt);
        sl.t0 = clock::now();
      }
    }
  };
  auto finish = [&](Slot& sl, const char* reason) {
    Finished f;
    f.id = sl.req->id;
    f.tokens = std::move(sl.out);
    f.finish_reason = reason;
    f.n_prompt = static_cast<int64_t>(sl.req->prompt.size());
    f.first_token_s = std::chrono::duration<double>(sl.t_first - sl.t0).count();
    f.total_s = std::chrono::duration<double>(clock::now() - sl.t0).count();
    sl = Slot{};
    done(std::move(f));
  };
  // The oldest step's sampled tokens, one for every sequence that asked.
  auto collect_one = [&] {
    ex_.collect_tokens(sampled);
    size_t row = 0;
    for (int s : flight.front()) {
      Slot& sl = slots[static_cast<size_t>(s)];
      sl.busy = false;
      if (sl.fed < static_cast<int64_t>(sl.req->prompt.size())) continue;  // a prompt chunk before its end
      const int32_t tok = sampled.at(row++);
      if (sl.out.empty()) sl.t_first = clock::now();
      if (tok == kBadLogits) {  // NaN logits: this request ends as an error, the others run on
        finish(sl, "error");
        continue;
      }
      const bool is_end = std::find(sl.req->end_tokens.begin(), sl.req->end_tokens.end(), tok) != sl.req->end_tokens.end();
      if (is_end) {
        finish(sl, "stop");
        continue;
      }
      sl.out.push_back(tok);
      if (sl.req->stop && sl.req->stop(sl.out)) {
        finish(sl, "stop");
      } else if (static_cast<int>(sl.out.size()) >= sl.req->max_tokens ||
                 static_cast<int64_t>(sl.req->prompt.size() + sl.out.size()) >= ex_.n_ctx()) {
        finish(sl, "length");
      } else {
        sl.next = tok;
      }
    }
    flight.pop_front();
  };

  for (;;) {
    admit();
    // The next group with ready sequences (round robin), as one step.
    Batch b;
    std::vector<int> members;
    for (int tries = 0; tries < n_micro && members.empty(); ++tries, group = (group + 1) % n_micro) {
      for (int s = group; s < n_slots; s += n_micro) {
        Slot& sl = slots[static_cast<size_t>(s)];
        if (!sl.req || sl.busy) continue;
        const int64_t plen = static_cast<int64_t>(sl.req->prompt.size());
        SeqStep st{s, 0, 0, 0};
        if (sl.fed < plen) {  // prefill chunk
          const int64_t n = std::min(o_.prefill_chunk, plen - sl.fed);
          st.pos0 = static_cast<int32_t>(sl.fed);
          st.n_tok = static_cast<int32_t>(n);
          st.n_out = sl.fed + n == plen ? 1 : 0;
          b.tokens.insert(b.tokens.end(), sl.req->prompt.begin() + sl.fed, sl.req->prompt.begin() + sl.fed + n);
          sl.fed += n;
        } else {  // decode the last sampled token
          st.pos0 = static_cast<int32_t>(plen + static_cast<int64_t>(sl.out.size()) - 1);
          st.n_tok = 1;
          st.n_out = 1;
          b.tokens.push_back(sl.next);
        }
        sl.busy = true;
        b.seqs.push_back(st);
        members.push_back(s);
      }
    }
    if (!members.empty()) {
      ex_.submit_sampled(b);
      flight.push_back(std::move(members));
      if (static_cast<int>(flight.size()) >= n_micro) collect_one();
      continue;
    }
    if (flight.empty()) break;  // nothing ready, nothing running: all done
    collect_one();
  }
}

}  // namespace ranklm::runtime
