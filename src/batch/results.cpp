#include "batch/results.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>

#include "batch/prompts.h"
#include "util/atomic_file.h"
#include "util/checksum.h"
#include "util/error.h"
#include "util/host.h"
#include "util/read_file.h"

namespace ranklm::batch {

using nlohmann::json;

namespace {

constexpr size_t kReadPiece = size_t{4} << 20;      // resume reads the file in pieces of this size
constexpr size_t kMaxRecordBytes = size_t{256} << 20;  // a longer line is not a record

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string read_holder(int fd) {
  char buf[512] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string s = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return s.empty() ? std::string("a job that has not written its host and pid yet") : s;
}

}  // namespace

json JobIdentity::to_json() const {
  return json{{"prompts", {{"path", prompts_path}, {"bytes", prompts_bytes}, {"fnv1a64x4", prompts_hash}}},
              {"model", {{"name", model_name}, {"gguf_hash", model_hash}}}};
}

JobIdentity JobIdentity::of_prompts(const std::string& path, std::string_view content, std::string model_name,
                                    std::string model_hash) {
  JobIdentity id;
  id.prompts_path = path;
  id.prompts_bytes = content.size();
  Fnv1a64x4 h;
  h.update(content.data(), content.size());
  id.prompts_hash = h.hex();
  id.model_name = std::move(model_name);
  id.model_hash = std::move(model_hash);
  return id;
}

void parse_result_lines(std::string_view content, const std::string& path, int64_t first_line,
                        std::set<std::string>& done, std::set<std::string>* errors) {
  int64_t line = first_line - 1;
  for (size_t at = 0; at < content.size();) {
    size_t end = content.find('\n', at);
    if (end == std::string_view::npos) end = content.size();
    const std::string_view text = content.substr(at, end - at);
    at = end + 1;
    ++line;
    if (text.empty()) continue;
    json j;
    if (!json_deeper_than(text, kMaxJsonDepth)) j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("custom_id") || !j["custom_id"].is_string()) {
      fail("{}: line {} is not a result record (a JSON object with a custom_id); was the file edited, or written "
           "by something else? Fix or remove that line, then resume (nothing was changed)", path, line);
    }
    done.insert(j["custom_id"].get<std::string>());
    if (errors) {
      const bool top_error = j.contains("error") && !j["error"].is_null();
      const bool not_ok = !j.contains("response") || !j["response"].is_object() ||
                          j["response"].value("status_code", json(0)) != 200;
      if (top_error || not_ok) errors->insert(j["custom_id"].get<std::string>());
    }
  }
}

ResultsFile::ResultsFile(const std::string& path, const ResultsOptions& o) : path_(path), o_(o) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    fail("{}: --out is not a regular file ({}); results go to a file they can be appended to and resumed from",
         path, S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
  }
  if (!o.prompts_path.empty()) {
    struct stat ps {};
    if (::stat(path.c_str(), &st) == 0 && ::stat(o.prompts_path.c_str(), &ps) == 0 && st.st_dev == ps.st_dev &&
        st.st_ino == ps.st_ino) {
      fail("{}: --out is the prompt file itself; give the results a file of their own", path);
    }
  }
  lock(o.wait_lock);
  // O_NONBLOCK: a FIFO put here since the check above must not hang the open.
  fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd_ < 0) fail("{}: cannot open the results file: {}", path, std::strerror(errno));
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    fail("{}: --out is not a regular file; results go to a file they can be appended to and resumed from", path);
  }
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
  size_ = st.st_size;
  if (size_ > 0 && !o.resume) {
    fail("{}: already holds results ({} bytes); add --resume to continue that job (done requests are skipped), or "
         "remove the file to start over", path, size_);
  }
  if (o.resume) scan();
}

// Closing the lock file releases the lock; the file itself stays (removing it would race with
// a job that has just opened it).
ResultsFile::Fd::~Fd() {
  if (fd >= 0) ::close(fd);
}

void ResultsFile::lock(bool wait) {
  const std::string lp = lock_path(path_);
  lock_fd_ = ::open(lp.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (lock_fd_ < 0) fail("{}: cannot open the lock file: {} (the results' directory must be writable)", lp, std::strerror(errno));
  struct stat st {};
  if (::fstat(lock_fd_, &st) != 0 || !S_ISREG(st.st_mode)) fail("{}: the lock file is not a regular file; remove it", lp);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(lock_fd_, F_OFD_SETLK, &fl) != 0) {
    if (errno != EAGAIN && errno != EACCES) {
      fail("{}: cannot lock the results file: {}; put it on a file system that supports locks (local disk, NFSv4, "
           "Lustre with flock)", lp, std::strerror(errno));
    }
    const std::string holder = read_holder(lock_fd_);
    if (!wait) {
      fail("{}: another job is writing these results ({}); wait for it to end (or end it), or add --wait-lock to wait",
           path_, holder);
    }
    std::fprintf(stderr, "ranklm run: %s: waiting for the job that holds it (%s)\n", path_.c_str(), holder.c_str());
    int rc;
    while ((rc = ::fcntl(lock_fd_, F_OFD_SETLKW, &fl)) != 0 && errno == EINTR) {
    }
    if (rc != 0) fail("{}: cannot lock the results file: {}", lp, std::strerror(errno));
  }
  const std::string me = fmt::format("host {} pid {} since {}\n", host_name(), ::getpid(), now_iso());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    fail("{}: cannot write the lock file: {}", lp, std::strerror(errno));
  }
}

void ResultsFile::scan() {
  // Whole lines are records; a last line without its newline is a record torn by a kill. The
  // file is read in pieces, so its size is bounded by disk, not memory.
  std::string pending;
  int64_t at = 0, line = 1;
  try {
    std::string piece(kReadPiece, '\0');
    while (at < size_) {
      const size_t want = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(kReadPiece), size_ - at));
      const ssize_t n = ::pread(fd_, piece.data(), want, at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("{}: cannot read the results file: {} at byte {}; nothing was changed", path_, std::strerror(errno), at);
      if (n == 0) fail("{}: the results file ended at byte {} of {} while it was read; nothing was changed", path_, at, size_);
      at += n;
      pending.append(piece.data(), static_cast<size_t>(n));
      const size_t last = pending.rfind('\n');
      if (last != std::string::npos) {
        const std::string_view whole(pending.data(), last + 1);
        parse_result_lines(whole.substr(0, last), path_, line, done_, &failed_);
        line += static_cast<int64_t>(std::count(whole.begin(), whole.end(), '\n'));
        pending.erase(0, last + 1);
      }
      if (pending.size() > kMaxRecordBytes) {
        fail("{}: line {} is longer than {} bytes: not a result record; was the file edited? (nothing was changed)",
             path_, line, kMaxRecordBytes);
      }
    }
  } catch (const std::bad_alloc&) {
    fail("{}: not enough memory to read the results file ({} bytes read of {}); raise the job's memory limit. "
         "Nothing was changed", path_, at, size_);
  }
  torn_ = static_cast<int64_t>(pending.size());
  keep_ = size_ - torn_;
}

void ResultsFile::begin(const JobIdentity& id) {
  const std::string jp = job_path(path_);
  const bool has_records = !done_.empty() || torn_ > 0;
  if (o_.resume && has_records) {
    struct stat st {};
    if (::stat(jp.c_str(), &st) != 0) {
      std::fprintf(stderr, "ranklm run: %s: no record of which prompt file and model these results answer (%s is "
                   "missing); resuming, and recording this job there\n", path_.c_str(), jp.c_str());
    } else {
      const json was = json::parse(read_whole_file(jp, "the job record", 1 << 20), nullptr, false);
      const json now = id.to_json();
      auto field = [](const json& j, const char* a, const char* b) -> std::string {
        if (!j.is_object() || !j.contains(a) || !j[a].is_object() || !j[a].contains(b)) return "(none)";
        return j[a][b].dump();
      };
      std::string diff;
      if (field(was, "prompts", "fnv1a64x4") != field(now, "prompts", "fnv1a64x4")) {
        diff = fmt::format("the prompt file differs (recorded {}, {} bytes, hash {}; now {}, {} bytes, hash {})",
                           field(was, "prompts", "path"), field(was, "prompts", "bytes"), field(was, "prompts", "fnv1a64x4"),
                           id.prompts_path, id.prompts_bytes, id.prompts_hash);
      } else if (field(was, "model", "gguf_hash") != field(now, "model", "gguf_hash")) {
        diff = fmt::format("the model differs (recorded {} {}; now \"{}\" \"{}\")", field(was, "model", "name"),
                           field(was, "model", "gguf_hash"), id.model_name, id.model_hash);
      }
      if (!diff.empty() && !o_.force_resume) {
        fail("{}: these results answer another job: {} (see {}); resume with the same prompt file and model, or add "
             "--force-resume to continue anyway (nothing was changed)", path_, diff, jp);
      }
      if (!diff.empty()) std::fprintf(stderr, "ranklm run: %s: --force-resume: %s\n", path_.c_str(), diff.c_str());
    }
  }
  json rec = id.to_json();
  rec["format"] = "ranklm-run-job";
  rec["version"] = 1;
  rec["results"] = path_;
  write_file_atomic(jp, rec.dump(2) + "\n");
  if (torn_ > 0) {
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || st.st_size != size_) {
      fail("{}: the results file changed while it was read (another writer?); nothing was cut", path_);
    }
    if (::ftruncate(fd_, static_cast<off_t>(keep_)) != 0) {
      fail("{}: cannot cut the torn last line: {}", path_, std::strerror(errno));
    }
  }
  begun_ = true;
}

void ResultsFile::write(const nlohmann::ordered_json& record) {
  if (!begun_) fail("{}: internal error: a record written before the job was checked", path_);
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
