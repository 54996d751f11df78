#include "batch/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

#include "util/error.h"

namespace ranklm::batch {

ProgressMode parse_progress_mode(const std::string& s) {
  if (s == "auto") return ProgressMode::kAuto;
  if (s == "bar") return ProgressMode::kBar;
  if (s == "log") return ProgressMode::kLog;
  if (s == "none") return ProgressMode::kNone;
  usage_fail("--progress: '{}' is not a mode (auto, bar, log or none)", s);
}

namespace {

std::string hms(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--:--";
  const auto t = static_cast<int64_t>(s + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", t / 3600, static_cast<int>(t / 60 % 60), static_cast<int>(t % 60));
}

}  // namespace

Progress::Progress(ProgressMode mode, int64_t total, int64_t skipped, double log_interval_s, std::FILE* out,
                   int64_t skipped_errors)
    : mode_(mode), total_(total), skipped_(skipped), skipped_errors_(skipped_errors), interval_s_(log_interval_s), out_(out),
      t0_(clock::now()), last_draw_(t0_) {
  if (mode_ == ProgressMode::kAuto) mode_ = isatty(fileno(out_)) ? ProgressMode::kBar : ProgressMode::kLog;
  if (mode_ == ProgressMode::kLog) {
    std::fprintf(out_, "ranklm run: %lld requests to answer%s\n", static_cast<long long>(total_),
                 skipped_ ? fmt::format(" ({} already in the results file{})", skipped_,
                                        skipped_errors_ ? fmt::format(", {} of them errors", skipped_errors_) : "").c_str()
                          : "");
    std::fflush(out_);
  }
}

std::string Progress::status_line() const {
  const double el = std::chrono::duration<double>(clock::now() - t0_).count();
  const double tps = el > 0 ? static_cast<double>(tokens_out_ + live_tokens_) / el : 0;
  const double eta = done_ > 0 ? el / static_cast<double>(done_) * static_cast<double>(total_ - done_) : -1;
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0;
  return fmt::format("{}/{} done ({:.1f}%), {} errors, {:.1f} tokens/s out, elapsed {}, ETA {}", done_, total_, pct,
                     errors_, tps, hms(el), done_ == total_ ? hms(0) : hms(eta));
}

void Progress::maybe_draw(bool force) {
  if (mode_ == ProgressMode::kNone) return;
  const auto now = clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (mode_ == ProgressMode::kBar) {
    if (!force && since < 0.25) return;
    std::fprintf(out_, "\r\033[K[%s]", status_line().c_str());
    drawn_ = true;
  } else {
    // The first line early (at the first result, or after 5 s), so a log shows the job moving.
    const double wait = first_logged_ ? interval_s_ : std::min(interval_s_, done_ > 0 ? 0.0 : 5.0);
    if (!force && since < wait) return;
    first_logged_ = true;
    std::fprintf(out_, "ranklm run: %s\n", status_line().c_str());
  }
  std::fflush(out_);
  last_draw_ = now;
}

void Progress::token() {
  ++live_tokens_;
  maybe_draw(false);
}

void Progress::finished(bool ok, int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  ++done_;
  if (!ok) ++errors_;
  tokens_in_ += prompt_tokens;
  cached_ += cached_tokens;
  tokens_out_ += completion_tokens;
  live_tokens_ = 0;
  maybe_draw(false);
}

std::string Progress::summary() {
  const double el = std::chrono::duration<double>(clock::now() - t0_).count();
  // Tokens computed: prompt tokens whose KV came from a shared prefix were never run.
  const int64_t computed = tokens_in_ - cached_ + tokens_out_;
  const std::string s = fmt::format(
      "ranklm run: {} requests: {} answered, {} errors{}; tokens in {} ({} from shared prefixes), out {}; wall {:.1f} s; "
      "{:.1f} tokens/s out, {:.1f} tokens/s computed (in, less shared prefixes, + out)",
      done_, done_ - errors_, errors_,
      skipped_ ? fmt::format("; {} done before (resume), {} of them errors: the results file holds {} errors in all", skipped_,
                             skipped_errors_, skipped_errors_ + errors_)
               : std::string(),
      tokens_in_, cached_, tokens_out_, el, el > 0 ? static_cast<double>(tokens_out_) / el : 0.0,
      el > 0 ? static_cast<double>(computed) / el : 0.0);
  if (mode_ != ProgressMode::kNone) {
    if (mode_ == ProgressMode::kBar && drawn_) std::fputs("\r\033[K", out_);
    std::fprintf(out_, "%s\n", s.c_str());
    std::fflush(out_);
  }
  return s;
}

}  // namespace ranklm::batch
