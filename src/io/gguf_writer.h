// GGUF writer (version 3): metadata and tensor infos are collected first, then the file is
// written in one pass with tensor data streamed from a callback, so a model larger than memory
// can be produced chunk by chunk. Used by the synthetic-model tool and by tests.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "kernels/types.h"

namespace ranklm::gguf {

class Writer {
 public:
  explicit Writer(uint64_t alignment = 32) : alignment_(alignment) {}

  void set(const std::string& key, Value v);
  void set_u32(const std::string& key, uint32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);

  // Declares a tensor; ne[0] is the contiguous dimension. Returns its index.
  size_t add_tensor(const std::string& name, std::vector<int64_t> ne, kern::GgmlType type);
  size_t n_tensors() const { return tensors_.size(); }
  uint64_t tensor_bytes(size_t index) const { return tensors_[index].n_bytes; }

  // The header, metadata and tensor table, padded to the alignment: the data section starts
  // right after. tensor_offset(i) is tensor i's place in the data section, data_size() its size.
  std::vector<uint8_t> header() const;
  uint64_t tensor_offset(size_t index) const { return tensors_[index].offset; }
  uint64_t data_size() const { return data_size_; }

  // Fills `n` bytes of tensor `index` starting at byte `offset` of that tensor.
  using FillFn = std::function<void(size_t index, uint64_t offset, uint8_t* dst, size_t n)>;

  // Writes the file; data are requested in chunks of at most `chunk` bytes, each a whole number
  // of blocks of the tensor's type. Throws ranklm::Error naming the path on I/O failure; a
  // failed write removes the partial file.
  void write(const std::string& path, const FillFn& fill, size_t chunk = size_t{1} << 24) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    kern::GgmlType type;
    uint64_t n_bytes;
    uint64_t offset;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Tensor> tensors_;
  uint64_t data_size_ = 0;
};

}  // namespace ranklm::gguf
