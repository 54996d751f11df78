// A whole file's bytes (prompt files, chat templates), read completely or not at all: a read
// that fails, stops short or would pass its size bound is an error naming the file, never a
// shorter string. Regular files and pipes (FIFOs, `-f <(cmd)`) are read; directories and
// devices (/dev/zero, a terminal) are refused before any byte is read.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "util/error.h"

namespace ranklm {

// `what` names the file's role in messages ("the prompt file"). Throws ranklm::Error.
inline std::string read_whole_file(const std::string& path, const char* what, uint64_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open {}: {}", path, what, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("{}: {} is a directory; give a file", path, what);
  if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
    fail("{}: {} is not a regular file or a pipe (a device or socket); give a file", path, what);
  }
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes) {
    fail("{}: {} is {} bytes, more than the {} bytes allowed", path, what, st.st_size, max_bytes);
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open {}: {}", path, what, std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::fstat(fd, &st) != 0) fail("{}: cannot read {}: {}", path, what, std::strerror(errno));
  const bool regular = S_ISREG(st.st_mode);
  std::string out;
  try {
    if (regular) out.resize(static_cast<size_t>(st.st_size));
    size_t have = 0;
    for (;;) {
      if (have == out.size()) {
        if (regular) {
          // The size said by fstat is read; one more read must see the end of the file.
          char probe = 0;
          const ssize_t n = ::read(fd, &probe, 1);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) fail("{}: cannot read {}: {}", path, what, std::strerror(errno));
          if (n == 0) break;
          fail("{}: {} grew while it was read (more than {} bytes); read it when no job writes it", path, what, st.st_size);
        }
        if (out.size() >= max_bytes) fail("{}: {} is more than the {} bytes allowed", path, what, max_bytes);
        out.resize(std::min<uint64_t>(max_bytes, std::max<size_t>(out.size() * 2, size_t{1} << 16)));
      }
      const ssize_t n = ::read(fd, out.data() + have, out.size() - have);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("{}: cannot read {}: {} (after {} bytes)", path, what, std::strerror(errno), have);
      if (n == 0) {
        if (regular) {
          fail("{}: {} ended after {} of its {} bytes (was it cut while being read?)", path, what, have, st.st_size);
        }
        out.resize(have);
        break;
      }
      have += static_cast<size_t>(n);
    }
  } catch (const std::bad_alloc&) {
    fail("{}: not enough memory to read {} ({} bytes); raise the job's memory limit or split the file", path, what,
         regular ? std::to_string(st.st_size) : std::string("more than ") + std::to_string(out.size()));
  }
  return out;
}

}  // namespace ranklm
