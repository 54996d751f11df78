#include "io/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace ranklm::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747u;  // "GGUF"

struct Buf {
  std::string b;
  template <typename T>
  void pod(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    b += s;
  }
  void scalar(ValueType t, const Value& v) {
    switch (t) {
      case ValueType::U8: pod<uint8_t>(static_cast<uint8_t>(v.u)); break;
      case ValueType::I8: pod<int8_t>(static_cast<int8_t>(v.i)); break;
      case ValueType::U16: pod<uint16_t>(static_cast<uint16_t>(v.u)); break;
      case ValueType::I16: pod<int16_t>(static_cast<int16_t>(v.i)); break;
      case ValueType::U32: pod<uint32_t>(static_cast<uint32_t>(v.u)); break;
      case ValueType::I32: pod<int32_t>(static_cast<int32_t>(v.i)); break;
      case ValueType::F32: pod<float>(static_cast<float>(v.f)); break;
      case ValueType::BOOL: pod<uint8_t>(v.u ? 1 : 0); break;
      case ValueType::STRING: str(v.s); break;
      case ValueType::U64: pod<uint64_t>(v.u); break;
      case ValueType::I64: pod<int64_t>(v.i); break;
      case ValueType::F64: pod<double>(v.f); break;
      case ValueType::ARRAY:
        pod<uint32_t>(static_cast<uint32_t>(v.elem_type));
        pod<uint64_t>(v.arr.size());
        for (const Value& e : v.arr) scalar(v.elem_type, e);
        break;
    }
  }
};

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

void Writer::set(const std::string& key, Value v) {
  for (auto& [k, old] : kv_) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  kv_.emplace_back(key, std::move(v));
}

namespace {

// A scalar Value of type t; `fill` sets its payload field.
template <typename F>
Value scalar_value(ValueType t, F fill) {
  Value v;
  v.type = t;
  fill(v);
  return v;
}

// An array Value of element type t over xs; `fill(element, x)` sets each payload field.
template <typename T, typename F>
Value array_value(ValueType t, const std::vector<T>& xs, F fill) {
  Value v;
  v.type = ValueType::ARRAY;
  v.elem_type = t;
  v.arr.resize(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    v.arr[i].type = t;
    fill(v.arr[i], xs[i]);
  }
  return v;
}

}  // namespace

void Writer::set_u32(const std::string& key, uint32_t x) {
  set(key, scalar_value(ValueType::U32, [&](Value& v) { v.u = x; }));
}

void Writer::set_f32(const std::string& key, float x) {
  set(key, scalar_value(ValueType::F32, [&](Value& v) { v.f = x; }));
}

void Writer::set_bool(const std::string& key, bool x) {
  set(key, scalar_value(ValueType::BOOL, [&](Value& v) { v.u = x ? 1 : 0; }));
}

void Writer::set_string(const std::string& key, const std::string& x) {
  set(key, scalar_value(ValueType::STRING, [&](Value& v) { v.s = x; }));
}

void Writer::set_strings(const std::string& key, const std::vector<std::string>& xs) {
  set(key, array_value(ValueType::STRING, xs, [](Value& v, const std::string& x) { v.s = x; }));
}

void Writer::set_f32s(const std::string& key, const std::vector<float>& xs) {
  set(key, array_value(ValueType::F32, xs, [](Value& v, float x) { v.f = x; }));
}

void Writer::set_i32s(const std::string& key, const std::vector<int32_t>& xs) {
  set(key, array_value(ValueType::I32, xs, [](Value& v, int32_t x) { v.i = x; }));
}

size_t Writer::add_tensor(const std::string& name, std::vector<int64_t> ne, kern::GgmlType type) {
  const kern::TypeTraits& t = kern::traits(type);
  if (ne.empty() || ne.size() > 4) fail("gguf writer: tensor '{}': {} dimensions (1..4)", name, ne.size());
  int64_t n = 1;
  for (int64_t d : ne) {
    if (d <= 0) fail("gguf writer: tensor '{}': dimension {} must be positive", name, d);
    if (__builtin_mul_overflow(n, d, &n) || n > (int64_t{1} << 48)) {
      fail("gguf writer: tensor '{}': more than 2^48 elements", name);
    }
  }
  if (ne[0] % t.block_size != 0) {
    fail("gguf writer: tensor '{}': row length {} is not a multiple of the {} block size {}", name,
         ne[0], t.name, t.block_size);
  }
  Tensor x{name, std::move(ne), type, static_cast<uint64_t>(n / t.block_size) * t.type_size, 0};
  x.offset = align_up(data_size_, alignment_);
  data_size_ = x.offset + x.n_bytes;
  tensors_.push_back(std::move(x));
  return tensors_.size() - 1;
}

std::vector<uint8_t> Writer::header() const {
  Buf h;
  h.pod<uint32_t>(kMagic);
  h.pod<uint32_t>(3);
  h.pod<uint64_t>(tensors_.size());
  const bool has_alignment = alignment_ != 32;
  h.pod<uint64_t>(kv_.size() + (has_alignment ? 1 : 0));
  if (has_alignment) {
    h.str("general.alignment");
    h.pod<uint32_t>(static_cast<uint32_t>(ValueType::U32));
    h.pod<uint32_t>(static_cast<uint32_t>(alignment_));
  }
  for (const auto& [k, v] : kv_) {
    h.str(k);
    h.pod<uint32_t>(static_cast<uint32_t>(v.type));
    h.scalar(v.type, v);
  }
  for (const Tensor& t : tensors_) {
    h.str(t.name);
    h.pod<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) h.pod<uint64_t>(static_cast<uint64_t>(d));
    h.pod<uint32_t>(static_cast<uint32_t>(t.type));
    h.pod<uint64_t>(t.offset);
  }
  h.b.resize(align_up(h.b.size(), alignment_), '\0');
  return std::vector<uint8_t>(h.b.begin(), h.b.end());
}

void Writer::write(const std::string& path, const FillFn& fill, size_t chunk) const {
  const std::vector<uint8_t> hb = header();
  const std::string tmp = path + ".partial";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  auto bail = [&](const char* what) {
    const std::string err = std::strerror(errno);
    std::fclose(f);
    std::filesystem::remove(tmp);
    fail("{}: {} failed: {} (check free disk space)", tmp, what, err);
  };
  if (std::fwrite(hb.data(), 1, hb.size(), f) != hb.size()) bail("write");
  std::vector<uint8_t> buf;
  uint64_t pos = 0;
  static const uint8_t zeros[256] = {};
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    while (pos < t.offset) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(t.offset - pos, sizeof zeros));
      if (std::fwrite(zeros, 1, n, f) != n) bail("write");
      pos += n;
    }
    const size_t tsz = kern::traits(t.type).type_size;
    const size_t step = std::max(tsz, chunk / tsz * tsz);
    for (uint64_t off = 0; off < t.n_bytes; off += step) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(step, t.n_bytes - off));
      buf.resize(n);
      fill(i, off, buf.data(), n);
      if (std::fwrite(buf.data(), 1, n, f) != n) bail("write");
    }
    pos += t.n_bytes;
  }
  if (std::fflush(f) != 0) bail("flush");
  if (std::fclose(f) != 0) {
    std::filesystem::remove(tmp);
    fail("{}: close failed: {}", tmp, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("{}: cannot rename to {}: {}", tmp, path, ec.message());
}

}  // namespace ranklm::gguf
