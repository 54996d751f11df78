// The results file of a batch job: JSONL, one whole record a line, appended as each request
// finishes and flushed to disk before the next. A job killed at any moment leaves whole records
// plus at most one torn last line; --resume cuts that line off, reads the custom_ids of the
// records there and the job runs only the rest, so every prompt ends up answered exactly once.
//
// What keeps it whole:
//   - one job at a time: RESULTS.lock (beside it) holds an exclusive lock (an open-file-
//     description lock, which NFS and Lustre also honour) for the life of the job and the
//     holder's host and pid; a second job refuses at once naming them, or waits (--wait-lock);
//   - records are written with O_APPEND, one write() each, then fdatasync;
//   - resume reads the file in bounded pieces, and any read that fails or stops short is an
//     error that leaves the file exactly as it was: only a torn tail that was actually read is
//     ever cut;
//   - RESULTS.job.json records the job's prompt file and model; resuming with another one is
//     refused unless forced.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

namespace ranklm::batch {

// What a results file answers: the prompt file (by content) and the model (by its GGUF
// identity hash). Written to RESULTS.job.json when the job starts.
struct JobIdentity {
  std::string prompts_path;
  uint64_t prompts_bytes = 0;
  std::string prompts_hash;  // 16 hex digits, FNV-1a 64 (four lanes) of the file's bytes
  std::string model_name, model_hash;

  nlohmann::json to_json() const;
  static JobIdentity of_prompts(const std::string& path, std::string_view content, std::string model_name,
                                std::string model_hash);
};

struct ResultsOptions {
  bool resume = false;
  bool wait_lock = false;     // wait for another job holding the file instead of refusing
  bool force_resume = false;  // resume although the recorded prompt file or model differ
  std::string prompts_path;   // refused as --out (the same file)
};

class ResultsFile {
 public:
  // Takes the lock, opens the file (it must be a regular file or not exist) and, with resume,
  // reads the custom_ids of its records. Nothing is changed on disk until begin(). Without
  // resume the file must not exist or be empty (a finished or partial job is never
  // overwritten). With resume, an interior line that is not a record is an error naming the line.
  ResultsFile(const std::string& path, const ResultsOptions& o);
  ResultsFile(const ResultsFile&) = delete;
  ResultsFile& operator=(const ResultsFile&) = delete;

  // Checks the job against RESULTS.job.json (a different prompt file or model is refused
  // unless force_resume), records it there, and cuts a torn last line. Call before write().
  void begin(const JobIdentity& id);

  const std::set<std::string>& done() const { return done_; }  // custom_ids already answered
  const std::set<std::string>& failed() const { return failed_; }  // those of them answered with an error
  int64_t torn_bytes() const { return torn_; }                   // cut off by begin()

  // Appends one record (a JSON object with a string custom_id) as one line, written with one
  // write and flushed to disk (fdatasync) before returning.
  void write(const nlohmann::ordered_json& record);

  static std::string lock_path(const std::string& path) { return path + ".lock"; }
  static std::string job_path(const std::string& path) { return path + ".job.json"; }

 private:
  void lock(bool wait);
  void scan();

  // Closed by its destructor, so a constructor that throws leaves no file open or locked.
  struct Fd {
    int fd = -1;
    Fd() = default;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd();
  };

  std::string path_;
  ResultsOptions o_;
  Fd lock_, file_;  // the lock is released last
  int& fd_ = file_.fd;
  int& lock_fd_ = lock_.fd;
  std::set<std::string> done_, failed_;
  int64_t size_ = 0, keep_ = 0, torn_ = 0;
  bool begun_ = false;
};

// Reads the custom_ids of a results file's content (the part up to its last newline), the
// parser resume uses; throws ranklm::Error naming `path` and the line for a line that is not a
// record. `errors` (optional) also gets those of error records (a top-level error, or a
// response other than 200). Exposed for tests and fuzzing.
void parse_result_lines(std::string_view content, const std::string& path, int64_t first_line,
                        std::set<std::string>& done, std::set<std::string>* errors = nullptr);

}  // namespace ranklm::batch
