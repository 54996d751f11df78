#include "batch/results.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"
#include "util/read_file.h"

namespace ranklm::batch {

using nlohmann::json;

ResultsFile::ResultsFile(const std::string& path, bool resume) : path_(path) {
  const std::string content = read_whole_file(path).value_or("");
  if (!content.empty() && !resume) {
    fail("{}: already holds results; add --resume to continue that job (done requests are skipped), or "
         "remove the file to start over", path);
  }
  // Whole lines are records; a last line without its newline is a record torn by a kill.
  size_t keep = content.rfind('\n');
  keep = keep == std::string::npos ? 0 : keep + 1;
  torn_ = static_cast<int64_t>(content.size() - keep);
  int64_t line = 0;
  for (size_t at = 0; at < keep;) {
    const size_t end = content.find('\n', at);
    const std::string_view text(content.data() + at, end - at);
    at = end + 1;
    ++line;
    if (text.empty()) continue;
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("custom_id") || !j["custom_id"].is_string()) {
      fail("{}: line {} is not a result record (a JSON object with a custom_id); was the file edited? "
           "Fix or remove that line, then resume", path, line);
    }
    done_.insert(j["custom_id"].get<std::string>());
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open for writing: {}", path, std::strerror(errno));
  if (::ftruncate(fd_, static_cast<off_t>(keep)) != 0 || ::lseek(fd_, 0, SEEK_END) < 0) {
    const int e = errno;
    ::close(fd_);
    fail("{}: cannot cut the torn last line: {}", path, std::strerror(e));
  }
}

ResultsFile::~ResultsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ResultsFile::write(const nlohmann::ordered_json& record) {
  const std::string line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: write failed: {} (the record for '{}' was not saved)", path_, std::strerror(errno), record.value("custom_id", ""));
    off += static_cast<size_t>(n);
  }
  if (::fdatasync(fd_) != 0 && errno != EINVAL) {
    fail("{}: cannot flush to disk: {}", path_, std::strerror(errno));
  }
}

}  // namespace ranklm::batch
