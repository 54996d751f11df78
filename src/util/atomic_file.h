// Writing a small file whole: under a temporary name (with the process id, so processes writing
// the same file at once do not collide), flushed, then renamed, so a reader never sees half of
// it. On any failure the temporary file is removed and the error names the path and the cause.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "util/error.h"

namespace ranklm {

inline void write_file_atomic(const std::string& path, const std::string& text) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    fail("{}: is a directory; give a file name to write (for example {}/plan.json)", path, path);
  }
  const std::string tmp = path + ".partial." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot write ({}); check the directory exists and is writable", path, std::strerror(errno));
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("{}: write failed ({}); check free disk space", path, std::strerror(e));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("{}: cannot flush to disk ({})", path, std::strerror(e));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot put the file in place ({})", path, std::strerror(e));
  }
}

}  // namespace ranklm
