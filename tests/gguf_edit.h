// Copies a GGUF file with changes: metadata keys set or removed, tensor bytes patched. Tests use
// it to make the damaged or inconsistent models that users meet (a bad conversion, a NaN).
#pragma once

#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "io/gguf.h"
#include "io/gguf_writer.h"

namespace ranklm::test {

// meta: key -> new value (nullopt removes the key). patch(tensor, bytes) may change a tensor's
// bytes after they are copied.
inline void edit_gguf(const std::string& src, const std::string& dst,
                      const std::map<std::string, std::optional<gguf::Value>>& meta,
                      const std::function<void(const gguf::TensorInfo&, uint8_t*)>& patch = {}) {
  auto f = gguf::File::open(src);
  gguf::Writer w(f->alignment());
  for (const auto& [k, v] : f->metadata()) {
    if (k == "general.alignment") continue;
    auto it = meta.find(k);
    if (it == meta.end()) {
      w.set(k, v);
    } else if (it->second) {
      w.set(k, *it->second);
    }
  }
  for (const auto& [k, v] : meta) {
    if (v && !f->find(k)) w.set(k, *v);
  }
  for (const auto& t : f->tensors()) w.add_tensor(t.name, t.ne, t.type);
  std::map<size_t, std::string> patched;  // tensor index -> its bytes after patch()
  w.write(dst, [&](size_t index, uint64_t offset, uint8_t* out, size_t n) {
    const gguf::TensorInfo& t = f->tensors()[index];
    if (!patch) {
      std::memcpy(out, t.data + offset, n);
      return;
    }
    // Patch the whole tensor once, then hand out its pieces.
    auto it = patched.find(index);
    if (it == patched.end()) {
      std::string bytes(reinterpret_cast<const char*>(t.data), t.n_bytes);
      patch(t, reinterpret_cast<uint8_t*>(bytes.data()));
      it = patched.emplace(index, std::move(bytes)).first;
    }
    std::memcpy(out, it->second.data() + offset, n);
  });
}

inline gguf::Value f32_value(float x) {
  gguf::Value v;
  v.type = gguf::ValueType::F32;
  v.f = x;
  return v;
}

inline gguf::Value u32_value(uint32_t x) {
  gguf::Value v;
  v.type = gguf::ValueType::U32;
  v.u = x;
  return v;
}

}  // namespace ranklm::test
