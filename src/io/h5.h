// Plain HDF5 reading and writing for the shard files: files, groups, chunked byte datasets
// written chunk by chunk, and typed attributes, each checked when read (an attribute of another
// type or shape is an error, not a read past a buffer). This module is the only code that
// includes <hdf5.h>; what the datasets mean (which part of which tensor) is src/shard's.
//
// Every error names the file and the object; `hint` (given when the file is opened) says what
// to do about a damaged file and ends each such message.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ranklm::h5 {

// A file, group or dataset (an attribute holder), closed when the last copy goes.
class Node {
 public:
  Node() = default;
  // A new file (truncated), or an existing one read-only; open fails with `unreadable` (the
  // hint) when the file is not a readable HDF5 file.
  static Node create_file(const std::string& path);
  static Node open_file(const std::string& path, const std::string& hint);

  const std::string& path() const { return path_; }
  const std::string& name() const { return name_; }

  // ---- groups (and the file's root) ----
  Node create_group(const std::string& name);  // without modification times (reproducible files)
  Node open_group(const std::string& name) const;
  bool has_link(const std::string& path) const;
  Node open_dataset(const std::string& path) const;  // fails naming it when absent or unreadable
  std::vector<std::string> link_names() const;       // in name order
  // A rows x row_bytes uint8 dataset in chunks of about 1 MiB of whole rows, no fill values.
  Node create_bytes_dataset(const std::string& name, int64_t rows, int64_t row_bytes);
  void flush();

  // ---- datasets ----
  // Writes rows x row_bytes bytes (rows `stride` bytes apart in src) chunk by chunk, straight
  // to the file; returns the fnv1a64x4 checksum of the bytes (util/checksum.h).
  std::string write_bytes(const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t stride);
  std::vector<int64_t> dims() const;
  int64_t n_elements() const;
  uint64_t storage_size() const;
  // Reads the whole dataset (exactly n bytes) into dst.
  void read_bytes(uint8_t* dst, size_t n) const;
  // Byte offset and size of the first stored chunk in the file.
  std::pair<uint64_t, uint64_t> first_chunk() const;

  // ---- attributes ----
  void set_int(const char* name, int64_t v);
  void set_ints(const char* name, const std::vector<int64_t>& v);
  void set_double(const char* name, double v);
  void set_string(const char* name, const std::string& v);
  bool has_attr(const char* name) const;
  int64_t get_int(const char* name) const;                // exactly one integer
  std::vector<int64_t> get_ints(const char* name) const;  // at most 1 Mi integers
  std::string get_string(const char* name) const;         // fixed-length, at most 256 MiB

  // "{file}: {object}: {what}; {hint}" as an Error.
  [[noreturn]] void damaged(const std::string& what) const;

 private:
  struct Handle;
  Node(std::shared_ptr<Handle> h, std::string path, std::string name, std::string hint);
  int64_t id() const;
  std::shared_ptr<Handle> h_;
  std::string path_, name_, hint_;
};

// Chunk rows for a rows x row_bytes dataset: chunks of about 1 MiB that split the rows evenly.
int64_t chunk_rows_for(int64_t rows, int64_t row_bytes);

}  // namespace ranklm::h5
