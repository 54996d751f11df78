// Read-only memory map of a whole file (RAII).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ranklm {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  // An image assembled in memory (e.g. from shards) under a name for messages; release() is a
  // no-op on it.
  MappedFile(const std::string& name, std::vector<uint8_t> bytes);
  // Zero-filled private memory of `size` bytes (pages come into being as they are written),
  // filled by the caller through mutable_data(); release() gives pages back as for a file.
  static std::unique_ptr<MappedFile> anonymous(const std::string& name, size_t size);
  uint8_t* mutable_data() { return const_cast<uint8_t*>(data_); }
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Tells the kernel the pages wholly inside [p, p + n) are not needed now (they leave the
  // resident set and are read again from the file if touched). Used after weights are repacked.
  void release(const uint8_t* p, size_t n) const;

 private:
  MappedFile() = default;
  std::string path_;
  std::vector<uint8_t> owned_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ranklm
