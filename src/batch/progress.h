// Progress of a batch job on rank 0: on a terminal, one line redrawn in place (done/total,
// errors, tokens/s, elapsed, ETA); otherwise a plain log line every few seconds, for Slurm and
// mpirun logs. A summary at the end either way.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ranklm::batch {

enum class ProgressMode { kAuto, kBar, kLog, kNone };
ProgressMode parse_progress_mode(const std::string& s);  // auto, bar, log, none

class Progress {
 public:
  // total: requests this run will answer (already-done ones excluded); skipped: those done before,
  // skipped_errors of them answered with an error record.
  Progress(ProgressMode mode, int64_t total, int64_t skipped, double log_interval_s, std::FILE* out = stderr,
           int64_t skipped_errors = 0);
  void token();  // one generated token (redraws at most 4 times a second)
  void finished(bool ok, int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens = 0);
  // The closing line(s); returns the summary text too (for tests).
  std::string summary();
  std::string status_line() const;

 private:
  void maybe_draw(bool force);
  using clock = std::chrono::steady_clock;
  ProgressMode mode_;
  int64_t total_, skipped_, skipped_errors_;
  bool first_logged_ = false;  // log mode: the first status line comes early (first result or 5 s)
  double interval_s_;
  std::FILE* out_;
  clock::time_point t0_, last_draw_;
  int64_t done_ = 0, errors_ = 0, tokens_in_ = 0, tokens_out_ = 0, live_tokens_ = 0, cached_ = 0;
  bool drawn_ = false;
};

}  // namespace ranklm::batch
