// The results file of a batch job: JSONL, one whole record a line, appended as each request
// finishes and flushed to disk before the next. A job killed at any moment leaves whole records
// plus at most one torn last line; --resume cuts that line off, reads the custom_ids of the
// records there and the job runs only the rest, so every prompt ends up answered exactly once.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

namespace ranklm::batch {

class ResultsFile {
 public:
  // Without resume the file must not exist or be empty (a finished or partial job is never
  // overwritten: the error says to use --resume or remove it). With resume, an interior line
  // that is not a record is an error naming the line (the file was edited: nothing is changed).
  ResultsFile(const std::string& path, bool resume);
  ~ResultsFile();
  ResultsFile(const ResultsFile&) = delete;
  ResultsFile& operator=(const ResultsFile&) = delete;

  const std::set<std::string>& done() const { return done_; }  // custom_ids already answered
  int64_t torn_bytes() const { return torn_; }                   // cut off by resume

  // Appends one record (a JSON object with a string custom_id) as one line, written with one
  // write and flushed to disk (fdatasync) before returning.
  void write(const nlohmann::ordered_json& record);

 private:
  std::string path_;
  int fd_ = -1;
  std::set<std::string> done_;
  int64_t torn_ = 0;
};

}  // namespace ranklm::batch
