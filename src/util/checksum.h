// fnv1a64x4: four FNV-1a-64 lanes over little-endian 64-bit words (word i in lane i % 4), the
// last bytes that do not fill 32 going into lane 0 one by one, then FNV-1a-64 over the four
// lanes' 8-byte values; 16 hex digits. A word-wise FNV-1a that runs at memory speed, for
// integrity checks of shards (not a cryptographic hash).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <fmt/format.h>

namespace ranklm {

// Plain FNV-1a-64 of bytes, continuing from h (the offset basis to start; a previous result to
// chain): plan and model identity hashes, batch record ids and seeds.
constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Basis) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

class Fnv1a64x4 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0 && pending_ > 0) {  // complete a started group first
      buf_[pending_++] = *p++;
      --n;
      if (pending_ == 32) {
        mix(buf_);
        pending_ = 0;
      }
    }
    if (pending_ > 0) return;  // the group is still incomplete and n is used up
    for (; n >= 32; n -= 32, p += 32) mix(p);
    std::memcpy(buf_, p, n);
    pending_ = n;
  }

  std::string hex() const {
    uint64_t l[4] = {lane_[0], lane_[1], lane_[2], lane_[3]};
    for (size_t i = 0; i < pending_; ++i) l[0] = (l[0] ^ buf_[i]) * kPrime;
    uint64_t h = kBasis;
    const auto* b = reinterpret_cast<const uint8_t*>(l);
    for (size_t i = 0; i < sizeof l; ++i) h = (h ^ b[i]) * kPrime;
    return fmt::format("{:016x}", h);
  }

  static std::string of(const void* data, size_t n) {
    Fnv1a64x4 h;
    h.update(data, n);
    return h.hex();
  }

 private:
  static constexpr uint64_t kBasis = 0xcbf29ce484222325ull;
  static constexpr uint64_t kPrime = 0x100000001b3ull;
  void mix(const uint8_t* p) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + 8 * k, 8);
      lane_[k] = (lane_[k] ^ w) * kPrime;
    }
  }
  uint64_t lane_[4] = {kBasis, kBasis, kBasis, kBasis};
  uint8_t buf_[32] = {};
  size_t pending_ = 0;
};

}  // namespace ranklm
