// GGUF reader (versions 2 and 3): memory-maps the file, parses and validates the header,
// metadata and tensor table before anything is used. Every length and offset read from the file
// is checked against the bytes that remain; errors name the file, the field, the value and the
// bound.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/types.h"
#include "util/mmap_file.h"

namespace ranklm::gguf {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value. Scalars keep their declared type; integers are held as int64/uint64,
// floats as double. Arrays hold their element type and elements.
struct Value {
  ValueType type = ValueType::U8;
  uint64_t u = 0;      // U8..U64, BOOL
  int64_t i = 0;       // I8..I64
  double f = 0.0;      // F32, F64
  std::string s;       // STRING
  ValueType elem_type = ValueType::U8;  // ARRAY
  std::vector<Value> arr;               // ARRAY

  bool is_integer() const;
  bool is_float() const { return type == ValueType::F32 || type == ValueType::F64; }
  std::string to_string(size_t max_items = 8) const;  // short human-readable form
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] is the contiguous dimension (GGUF order)
  kern::GgmlType type;
  uint64_t offset = 0;      // relative to the data section
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;

  int64_t n_elements() const;
  std::string shape_string() const;
};

class File {
 public:
  // Opens, maps and validates `path`. Throws ranklm::Error naming the problem.
  static std::unique_ptr<File> open(const std::string& path);
  // Parses a whole GGUF image held in memory (`name` stands for the file in messages).
  static std::unique_ptr<File> from_bytes(const std::string& name, std::vector<uint8_t> bytes);
  // Parses an image already in memory (e.g. MappedFile::anonymous, filled by the caller).
  static std::unique_ptr<File> from_mapped(std::unique_ptr<MappedFile> map);
  // Parses only the header, metadata and tensor table (the bytes before the data section, as a
  // shard stores them): tensors have names, shapes and types but no data (data == nullptr).
  static std::unique_ptr<File> header_only(const std::string& name, std::vector<uint8_t> bytes);

  const std::string& path() const { return map_->path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  // The mapped file; bytes [0, data_offset()) are the header, metadata and tensor table.
  const uint8_t* bytes() const { return map_->data(); }
  size_t file_size() const { return map_->size(); }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  // Drops the mapped pages of [p, p + n) (tensor data) from the resident set, after a copy was made.
  void release(const void* p, size_t n) const { map_->release(static_cast<const uint8_t*>(p), n); }

  const Value* find(const std::string& key) const;
  const TensorInfo* find_tensor(const std::string& name) const;
  const TensorInfo& tensor(const std::string& name) const;  // throws when missing

  // Typed accessors: throw naming the key when missing or of an unusable type.
  std::string get_string(const std::string& key) const;
  std::optional<std::string> get_string_opt(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  std::optional<int64_t> get_int_opt(const std::string& key) const;
  double get_float(const std::string& key) const;
  std::optional<double> get_float_opt(const std::string& key) const;
  std::optional<bool> get_bool_opt(const std::string& key) const;
  const Value& get_array(const std::string& key, ValueType elem) const;
  const Value* get_array_opt(const std::string& key, ValueType elem) const;

 private:
  explicit File(std::unique_ptr<MappedFile> map) : map_(std::move(map)) {}
  void parse();
  bool header_only_ = false;

  std::unique_ptr<MappedFile> map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace ranklm::gguf
