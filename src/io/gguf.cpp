#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "util/error.h"

namespace ranklm::gguf {

namespace {

constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;

// Smallest encoded size of one value of each type (for bounding counts before allocating).
uint64_t min_value_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) { return t <= 12; }

// Bounds-checked little-endian reader over the mapped bytes.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(size_t n, const std::string& field) const {
    if (n > remaining()) {
      fail("{}: truncated file: {} needs {} bytes at offset {}, but the file ends at {} ({} left); "
           "the file is incomplete, download or convert it again",
           path_, field, n, pos_, size_, remaining());
    }
  }

  template <typename T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& field) {
    const uint64_t len = read<uint64_t>(field + " (string length)");
    if (len > remaining()) {
      fail("{}: {}: string length {} exceeds the {} bytes left in the file at offset {}", path_,
           field, len, remaining(), pos_);
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

Value read_value(Cursor& c, const std::string& path, const std::string& key, ValueType type,
                 int depth) {
  Value v;
  v.type = type;
  switch (type) {
    case ValueType::U8: v.u = c.read<uint8_t>(key); break;
    case ValueType::I8: v.i = c.read<int8_t>(key); break;
    case ValueType::U16: v.u = c.read<uint16_t>(key); break;
    case ValueType::I16: v.i = c.read<int16_t>(key); break;
    case ValueType::U32: v.u = c.read<uint32_t>(key); break;
    case ValueType::I32: v.i = c.read<int32_t>(key); break;
    case ValueType::U64: v.u = c.read<uint64_t>(key); break;
    case ValueType::I64: v.i = c.read<int64_t>(key); break;
    case ValueType::F32: v.f = c.read<float>(key); break;
    case ValueType::F64: v.f = c.read<double>(key); break;
    case ValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(key);
      if (b > 1) fail("{}: {}: bool value {} is neither 0 nor 1", path, key, b);
      v.u = b;
      break;
    }
    case ValueType::STRING: v.s = c.read_string(key); break;
    case ValueType::ARRAY: {
      if (depth >= kMaxArrayDepth) {
        fail("{}: {}: arrays nested deeper than {} levels", path, key, kMaxArrayDepth);
      }
      const uint32_t et = c.read<uint32_t>(key + " (array element type)");
      if (!valid_value_type(et)) {
        fail("{}: {}: unknown array element type {} (valid: 0..12)", path, key, et);
      }
      v.elem_type = static_cast<ValueType>(et);
      const uint64_t n = c.read<uint64_t>(key + " (array length)");
      const uint64_t min = min_value_size(v.elem_type);
      if (n > c.remaining() / min) {
        fail("{}: {}: array of {} {} elements cannot fit in the {} bytes left in the file", path,
             key, n, value_type_name(v.elem_type), c.remaining());
      }
      v.arr.reserve(static_cast<size_t>(n));
      for (uint64_t k = 0; k < n; ++k) {
        v.arr.push_back(read_value(c, path, key, v.elem_type, depth + 1));
      }
      break;
    }
  }
  return v;
}

}  // namespace

const char* value_type_name(ValueType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
    case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64:
      return true;
    default:
      return false;
  }
}

std::string Value::to_string(size_t max_items) const {
  switch (type) {
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
      return std::to_string(u);
    case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
      return std::to_string(i);
    case ValueType::F32: case ValueType::F64: return fmt::format("{}", f);
    case ValueType::BOOL: return u ? "true" : "false";
    case ValueType::STRING: {
      std::string out = "\"";
      const size_t lim = 60;
      for (size_t k = 0; k < s.size() && k < lim; ++k) {
        const char ch = s[k];
        if (ch == '\n') out += "\\n";
        else if (ch == '"') out += "\\\"";
        else out += ch;
      }
      if (s.size() > lim) out += "...";
      return out + "\"";
    }
    case ValueType::ARRAY: {
      std::string out = fmt::format("[{} x {}] [", arr.size(), value_type_name(elem_type));
      for (size_t k = 0; k < arr.size() && k < max_items; ++k) {
        if (k) out += ", ";
        out += arr[k].to_string(max_items);
      }
      if (arr.size() > max_items) out += ", ...";
      return out + "]";
    }
  }
  return "?";
}

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::string s = "[";
  for (size_t k = 0; k < ne.size(); ++k) s += (k ? ", " : "") + std::to_string(ne[k]);
  return s + "]";
}

std::unique_ptr<File> File::open(const std::string& path) {
  std::unique_ptr<File> f(new File(std::make_unique<MappedFile>(path)));
  f->parse();
  return f;
}

std::unique_ptr<File> File::from_bytes(const std::string& name, std::vector<uint8_t> bytes) {
  std::unique_ptr<File> f(new File(std::make_unique<MappedFile>(name, std::move(bytes))));
  f->parse();
  return f;
}

std::unique_ptr<File> File::from_mapped(std::unique_ptr<MappedFile> map) {
  std::unique_ptr<File> f(new File(std::move(map)));
  f->parse();
  return f;
}

std::unique_ptr<File> File::header_only(const std::string& name, std::vector<uint8_t> bytes) {
  std::unique_ptr<File> f(new File(std::make_unique<MappedFile>(name, std::move(bytes))));
  f->header_only_ = true;
  f->parse();
  return f;
}

namespace {

// One entry of the tensor table up to its offset: name, shape (each dimension and the element
// count checked for overflow), type, and the byte size.
TensorInfo read_tensor_info(Cursor& c, const std::string& p, uint64_t k) {
  TensorInfo ti;
  ti.name = c.read_string(fmt::format("tensor[{}].name", k));
  const std::string tf = fmt::format("tensor '{}'", ti.name);
  const uint32_t n_dims = c.read<uint32_t>(tf + " n_dims");
  if (n_dims == 0 || n_dims > kMaxDims) {
    fail("{}: {}: n_dims {} out of range 1..{}", p, tf, n_dims, kMaxDims);
  }
  int64_t n_el = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = c.read<uint64_t>(fmt::format("{} ne[{}]", tf, d));
    if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail("{}: {}: ne[{}] = {} out of range 1..2^63-1", p, tf, d, ne);
    }
    if (static_cast<uint64_t>(n_el) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne) {
      fail("{}: {}: element count overflows 64 bits (ne[{}] = {})", p, tf, d, ne);
    }
    n_el *= static_cast<int64_t>(ne);
    ti.ne.push_back(static_cast<int64_t>(ne));
  }
  const uint32_t type_id = c.read<uint32_t>(tf + " type");
  const kern::TypeTraits* tt = kern::find_type(type_id);
  if (!tt) {
    fail("{}: {}: unknown tensor type id {}; this file needs a newer reader or is corrupt", p,
         tf, type_id);
  }
  ti.type = tt->type;
  if (ti.ne[0] % tt->block_size != 0) {
    fail("{}: {}: ne[0] = {} is not a whole number of {} blocks ({} elements each)", p, tf,
         ti.ne[0], tt->name, tt->block_size);
  }
  const uint64_t blocks = static_cast<uint64_t>(n_el / tt->block_size);
  if (blocks > std::numeric_limits<uint64_t>::max() / tt->type_size) {
    fail("{}: {}: byte size overflows 64 bits", p, tf);
  }
  ti.n_bytes = blocks * tt->type_size;
  return ti;
}

}  // namespace

void File::parse() {
  const std::string& p = map_->path();
  Cursor c(p, map_->data(), map_->size());
  if (map_->size() < 4) {
    fail("{}: not a GGUF file: {} bytes is shorter than the 4-byte magic", p, map_->size());
  }
  const uint32_t magic = c.read<uint32_t>("header.magic");
  if (magic != 0x46554747u) {  // "GGUF" little-endian
    fail("{}: header.magic: expected \"GGUF\" (0x46554747), found 0x{:08x}; not a GGUF file", p,
         magic);
  }
  version_ = c.read<uint32_t>("header.version");
  if (version_ != 2 && version_ != 3) {
    fail("{}: header.version: {} is not supported (supported: 2, 3); convert the model again "
         "with a current llama.cpp",
         p, version_);
  }
  const uint64_t n_tensors = c.read<uint64_t>("header.n_tensors");
  const uint64_t n_kv = c.read<uint64_t>("header.n_kv");
  constexpr uint64_t kMinKv = 8 + 4 + 1;
  constexpr uint64_t kMinTensor = 8 + 4 + 4 + 8 + 8;
  if (n_kv > c.remaining() / kMinKv) {
    fail("{}: header.n_kv: {} key-value pairs cannot fit in the {} bytes left (each needs at "
         "least {})",
         p, n_kv, c.remaining(), kMinKv);
  }
  if (n_tensors > c.remaining() / kMinTensor) {
    fail("{}: header.n_tensors: {} tensors cannot fit in the {} bytes left (each needs at least "
         "{})",
         p, n_tensors, c.remaining(), kMinTensor);
  }

  kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string field = fmt::format("metadata[{}]", k);
    std::string key = c.read_string(field + ".key");
    const uint32_t t = c.read<uint32_t>(fmt::format("metadata '{}' type", key));
    if (!valid_value_type(t)) {
      fail("{}: metadata '{}': unknown value type {} (valid: 0..12)", p, key, t);
    }
    Value v = read_value(c, p, fmt::format("metadata '{}'", key), static_cast<ValueType>(t), 0);
    if (kv_index_.count(key)) fail("{}: metadata '{}': key appears twice", p, key);
    kv_index_[key] = kv_.size();
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    if (a->type != ValueType::U32) {
      fail("{}: metadata 'general.alignment': type {} (expected u32)", p, value_type_name(a->type));
    }
    if (a->u == 0 || (a->u & (a->u - 1)) != 0) {
      fail("{}: metadata 'general.alignment': {} is not a power of two", p, a->u);
    }
    alignment_ = a->u;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo ti = read_tensor_info(c, p, k);
    const std::string tf = fmt::format("tensor '{}'", ti.name);
    ti.offset = c.read<uint64_t>(tf + " offset");
    if (tensor_index_.count(ti.name)) fail("{}: {}: tensor name appears twice", p, tf);
    tensor_index_[ti.name] = tensors_.size();
    tensors_.push_back(std::move(ti));
  }

  // The data section starts at the next multiple of the alignment after the header.
  const uint64_t hdr_end = c.pos();
  data_offset_ = (hdr_end + alignment_ - 1) / alignment_ * alignment_;
  if (header_only_) return;  // no data section to check tensors against
  if (!tensors_.empty() && data_offset_ > map_->size()) {
    fail("{}: data section: starts at offset {} but the file is only {} bytes; the file is "
         "truncated",
         p, data_offset_, map_->size());
  }
  const uint64_t data_size = map_->size() > data_offset_ ? map_->size() - data_offset_ : 0;
  for (auto& ti : tensors_) {
    if (ti.offset % alignment_ != 0) {
      fail("{}: tensor '{}': offset {} is not a multiple of the alignment {}", p, ti.name,
           ti.offset, alignment_);
    }
    if (ti.offset > data_size || ti.n_bytes > data_size - ti.offset) {
      fail("{}: tensor '{}': bytes {}..{} of the data section lie outside it ({} bytes); the "
           "file is truncated or corrupt",
           p, ti.name, ti.offset, ti.offset + ti.n_bytes, data_size);
    }
    ti.data = map_->data() + data_offset_ + ti.offset;
  }
  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_off;
  for (const auto& ti : tensors_) by_off.push_back(&ti);
  std::sort(by_off.begin(), by_off.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_off.size(); ++k) {
    const TensorInfo* a = by_off[k - 1];
    const TensorInfo* b = by_off[k];
    if (a->offset + a->n_bytes > b->offset) {
      fail("{}: tensor '{}' (bytes {}..{}) overlaps tensor '{}' (starting at {})", p, a->name,
           a->offset, a->offset + a->n_bytes, b->name, b->offset);
    }
  }
}

const Value* File::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(const std::string& name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) fail("{}: tensor '{}' is missing; the file does not hold a complete model", path(), name);
  return *t;
}

std::optional<std::string> File::get_string_opt(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::STRING) {
    fail("{}: metadata '{}': type {} (expected string)", path(), key, value_type_name(v->type));
  }
  return v->s;
}

std::string File::get_string(const std::string& key) const {
  auto s = get_string_opt(key);
  if (!s) fail("{}: metadata '{}' is missing", path(), key);
  return *s;
}

std::optional<int64_t> File::get_int_opt(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) {
    fail("{}: metadata '{}': type {} (expected an integer)", path(), key, value_type_name(v->type));
  }
  if (v->type == ValueType::U64 && v->u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail("{}: metadata '{}': value {} out of range", path(), key, v->u);
  }
  switch (v->type) {
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
      return static_cast<int64_t>(v->u);
    default:
      return v->i;
  }
}

int64_t File::get_int(const std::string& key) const {
  auto i = get_int_opt(key);
  if (!i) fail("{}: metadata '{}' is missing", path(), key);
  return *i;
}

std::optional<double> File::get_float_opt(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(*get_int_opt(key));
  fail("{}: metadata '{}': type {} (expected a number)", path(), key, value_type_name(v->type));
}

double File::get_float(const std::string& key) const {
  auto f = get_float_opt(key);
  if (!f) fail("{}: metadata '{}' is missing", path(), key);
  return *f;
}

std::optional<bool> File::get_bool_opt(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::BOOL) {
    fail("{}: metadata '{}': type {} (expected bool)", path(), key, value_type_name(v->type));
  }
  return v->u != 0;
}

const Value* File::get_array_opt(const std::string& key, ValueType elem) const {
  const Value* v = find(key);
  if (!v) return nullptr;
  if (v->type != ValueType::ARRAY) {
    fail("{}: metadata '{}': type {} (expected an array of {})", path(), key,
         value_type_name(v->type), value_type_name(elem));
  }
  const bool int_ok = (elem == ValueType::I32) &&
                      (v->elem_type == ValueType::I32 || v->elem_type == ValueType::U32 ||
                       v->elem_type == ValueType::I8 || v->elem_type == ValueType::U8 ||
                       v->elem_type == ValueType::I16 || v->elem_type == ValueType::U16 ||
                       v->elem_type == ValueType::I64 || v->elem_type == ValueType::U64);
  const bool float_ok = (elem == ValueType::F32) &&
                        (v->elem_type == ValueType::F32 || v->elem_type == ValueType::F64);
  if (v->elem_type != elem && !int_ok && !float_ok) {
    fail("{}: metadata '{}': array of {} (expected {})", path(), key,
         value_type_name(v->elem_type), value_type_name(elem));
  }
  return v;
}

const Value& File::get_array(const std::string& key, ValueType elem) const {
  const Value* v = get_array_opt(key, elem);
  if (!v) fail("{}: metadata '{}' is missing", path(), key);
  return *v;
}

}  // namespace ranklm::gguf
