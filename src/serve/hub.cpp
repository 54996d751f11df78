#include "serve/hub.h"

#include <fmt/format.h>

#include <algorithm>

namespace ranklm::serve {

using clock = std::chrono::steady_clock;

namespace {
int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count(); }
}  // namespace


void Hub::attach(runtime::Executor* ex) {
  std::lock_guard<std::mutex> lk(m_);
  ex_ = ex;
  metrics_.slots = ex->n_slots();
  const runtime::KvStats kv = ex->kv_stats();
  metrics_.kv_blocks = kv.max_blocks;
}

Hub::Admit Hub::submit(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lk(m_);
  if (closing_) return Admit::kClosed;
  if (static_cast<int>(queue_.size()) >= limits_.max_queue) return Admit::kFull;
  queue_.push_back(job);
  ++unanswered_;
  metrics_.queued = static_cast<int>(queue_.size());
  cv_.notify_all();
  return Admit::kQueued;
}

void Hub::client_left(Job& job) {
  job.client_gone = true;
  std::lock_guard<std::mutex> lk(m_);
  // Still queued: it leaves the queue now (its HTTP thread need not wait for a slot to free).
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->get() != &job) continue;
    queue_.erase(it);
    metrics_.queued = static_cast<int>(queue_.size());
    ++metrics_.cancelled;
    end_job(job, JobEnd::kCancelled, 499, "", "");
    break;
  }
  cv_.notify_all();
}

void Hub::answered() {
  std::lock_guard<std::mutex> lk(m_);
  --unanswered_;
}

int Hub::unanswered() const {
  std::lock_guard<std::mutex> lk(m_);
  return unanswered_;
}

void Hub::count_status(int status) {
  std::lock_guard<std::mutex> lk(m_);
  ++metrics_.requests[status];
}

Metrics Hub::metrics(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lk(m_);
  if (ex_ && !closing_) {
    const int64_t epoch = times_epoch_;
    want_times_ = true;
    cv_.notify_all();
    times_cv_.wait_for(lk, wait, [&] { return times_epoch_ != epoch; });
  }
  return metrics_;
}

void Hub::end_job(Job& job, JobEnd end, int status, const std::string& type, const std::string& why) {
  std::lock_guard<std::mutex> lk(job.m);
  if (job.end != JobEnd::kNone) return;
  job.end = end;
  job.status = status;
  job.error_type = type;
  job.error = why;
  job.cv.notify_all();
}

void Hub::close(const std::string& why) {
  std::lock_guard<std::mutex> lk(m_);
  if (closing_) return;
  closing_ = true;
  close_at_ = clock::now();
  close_why_ = why;
  for (const auto& job : queue_) end_job(*job, JobEnd::kFailed, 503, "server_error", why);
  queue_.clear();
  metrics_.queued = 0;
  cv_.notify_all();
  times_cv_.notify_all();
}

void Hub::fail_all(int status, const std::string& why) {
  std::lock_guard<std::mutex> lk(m_);
  closing_ = true;
  for (const auto& job : queue_) end_job(*job, JobEnd::kFailed, status, "server_error", why);
  for (const auto& [id, job] : running_) end_job(*job, JobEnd::kFailed, status, "server_error", why);
  queue_.clear();
  running_.clear();
  metrics_.queued = 0;
  cv_.notify_all();
  times_cv_.notify_all();
}

// --- the scheduler's thread ---

std::optional<runtime::Request> Hub::next() {
  std::lock_guard<std::mutex> lk(m_);
  while (!queue_.empty()) {
    std::shared_ptr<Job> job = queue_.front();
    queue_.pop_front();
    metrics_.queued = static_cast<int>(queue_.size());
    if (job->client_gone) {  // left while queued: nothing ran
      end_job(*job, JobEnd::kCancelled, 499, "", "");
      ++metrics_.cancelled;
      continue;
    }
    running_[job->id] = job;
    runtime::Request r = job->req;
    r.id = job->id;
    Job* raw = job.get();  // running_ keeps it alive until done()
    r.stop = [this, raw](const std::vector<int32_t>& out) { return on_token(*raw, out); };
    return r;
  }
  return std::nullopt;
}

void Hub::wait() {
  {
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait_for(lk, std::chrono::milliseconds(100),
                 [&] { return !queue_.empty() || closing_ || want_times_ || (stop_flag_ && stop_flag_->load()); });
  }
  last_pass_ns_ = 0;  // an idle wait is not a step
}

void Hub::check_stall() {
  if (!stop_flag_ || !stop_flag_->load()) return;
  // The scheduler's thread closes the hub at its next pass; it may be stuck waiting for a rank.
  if (!closing_) close("the server is shutting down (a stop signal): no new requests are taken");
  const int64_t last = last_pass_ns_.load();
  if (last == 0) return;
  const int64_t limit = std::max<int64_t>(500'000'000, 3 * max_gap_ns_.load());
  {
    std::lock_guard<std::mutex> lk(m_);
    if (running_.empty()) return;
  }
  if (now_ns() - last < limit) return;
  fail_all(503, "the other ranks stopped answering after the stop signal: a rank has failed, or the launcher is "
                "ending the job (its message names the rank and host)");
}

bool Hub::want_drain() {
  const int64_t now = now_ns(), last = last_pass_ns_.exchange(now);
  if (last > 0) {
    const int64_t gap = now - last, mx = max_gap_ns_.load();
    max_gap_ns_ = gap > mx ? gap : mx - mx / 256 + gap / 256;
  }
  if (stop_flag_ && stop_flag_->load() && !closing_) {
    close("the server is shutting down (a stop signal): no new requests are taken");
  }
  return want_times_.load();
}

bool Hub::cancelled(int64_t id) {
  std::lock_guard<std::mutex> lk(m_);
  auto it = running_.find(id);
  if (it == running_.end()) return false;
  if (it->second->client_gone) return true;
  return closing_ && clock::now() - close_at_ > grace();
}

bool Hub::on_token(Job& job, const std::vector<int32_t>& out) {
  const std::string piece = job.text_stream.push(out.back());
  {
    std::lock_guard<std::mutex> lk(job.m);
    job.text += piece;
    job.n_completion = static_cast<int64_t>(out.size());
    if (!piece.empty()) job.cv.notify_all();
  }
  return job.text_stream.stopped();
}

void Hub::done(runtime::Finished&& f) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lk(m_);
    auto it = running_.find(f.id);
    if (it == running_.end()) return;  // already failed (fail_all)
    job = it->second;
    running_.erase(it);
    if (f.finish_reason == "cancelled") {
      if (job->client_gone) {
        ++metrics_.cancelled;
        end_job(*job, JobEnd::kCancelled, 499, "", "");
      } else {
        end_job(*job, JobEnd::kFailed, 503, "server_error",
                launcher_stop_ && launcher_stop_->load()
                    ? fmt::format("{}; the launcher (mpirun) ends the job within {:.1f} s of a Ctrl-C, so the request "
                                  "was ended first (mpirun --mca odls_base_sigkill_timeout S gives running requests "
                                  "--shutdown-grace)", close_why_, static_cast<double>(launcher_window_.count()) / 1000 + 0.6)
                    : fmt::format("{}; the request did not finish within the {} s grace period", close_why_,
                                  std::chrono::duration_cast<std::chrono::seconds>(limits_.grace).count()));
      }
      return;
    }
    metrics_.prompt_tokens += f.n_prompt;
    metrics_.cached_tokens += f.n_cached;
    metrics_.completion_tokens += static_cast<int64_t>(f.tokens.size());
  }
  if (f.finish_reason == "error") {
    end_job(*job, JobEnd::kFailed, 500, "server_error",
            fmt::format("the model's logits were NaN or infinite after {} generated tokens; its weights or "
                        "hyperparameters are damaged", f.tokens.size()));
    return;
  }
  const std::string tail = job->text_stream.finish();
  std::lock_guard<std::mutex> lk(job->m);
  job->text += tail;
  // A stop string counts as a stop even when it ended the sequence at its token limit.
  job->finish_reason = job->text_stream.stopped() ? "stop" : f.finish_reason;
  job->n_prompt = f.n_prompt;
  job->n_cached = f.n_cached;
  job->n_completion = static_cast<int64_t>(f.tokens.size());
  job->tokens = std::move(f.tokens);
  job->logprobs = std::move(f.logprobs);
  job->prompt_logprobs = std::move(f.prompt_logprobs);
  job->first_token_s = f.first_token_s;
  job->total_s = f.total_s;
  job->end = JobEnd::kDone;
  job->cv.notify_all();
}

void Hub::reject(const runtime::Request& r, const std::string& why) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lk(m_);
    auto it = running_.find(r.id);
    if (it == running_.end()) return;
    job = it->second;
    running_.erase(it);
  }
  end_job(*job, JobEnd::kFailed, 400, "invalid_request_error", why);
}

void Hub::drained() {
  if (!ex_) return;
  const std::vector<runtime::RankTimes> t = ex_->gather_times();
  const runtime::KvStats kv = ex_->kv_stats();
  std::lock_guard<std::mutex> lk(m_);
  if (metrics_.ranks.size() < t.size()) metrics_.ranks.resize(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    metrics_.ranks[i].compute_s += t[i].compute_s;
    metrics_.ranks[i].comm_s += t[i].comm_s;
  }
  metrics_.kv_blocks_in_use = kv.in_use;
  metrics_.kv_blocks = kv.max_blocks;
  ++times_epoch_;
  want_times_ = false;
  times_cv_.notify_all();
}

void Hub::load(int slots_in_use, int waiting) {
  const runtime::KvStats kv = ex_ ? ex_->kv_stats() : runtime::KvStats{};
  std::lock_guard<std::mutex> lk(m_);
  metrics_.slots_in_use = slots_in_use;
  metrics_.waiting_for_kv = waiting;
  metrics_.kv_blocks_in_use = kv.in_use;
}

}  // namespace ranklm::serve
