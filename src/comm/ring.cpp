#include "comm/ring.h"

#include <algorithm>
#include <cstring>

#include "kernels/types.h"

namespace ranklm::comm {

namespace {

constexpr size_t kMaxMessage = size_t{4} << 20;  // bytes per message; larger segments are split
constexpr int64_t kQ8Block = 32;
constexpr size_t kQ8BlockBytes = 34;

}  // namespace

size_t q8_bytes(int64_t n) { return static_cast<size_t>((n + kQ8Block - 1) / kQ8Block) * kQ8BlockBytes; }

// Q8_0 of n values (the last block padded with zeros).
void q8_encode(const float* x, int64_t n, uint8_t* out) {
  const kern::TypeTraits& t = kern::traits(kern::GgmlType::Q8_0);
  const int64_t whole = n / kQ8Block * kQ8Block;
  if (whole > 0) t.quantize(x, out, whole);
  if (whole < n) {
    float tail[kQ8Block] = {};
    std::copy(x + whole, x + n, tail);
    t.quantize(tail, out + q8_bytes(whole), kQ8Block);
  }
}

// Decodes n values; add: add them to x instead of storing.
void q8_decode(const uint8_t* in, int64_t n, float* x, bool add) {
  const kern::TypeTraits& t = kern::traits(kern::GgmlType::Q8_0);
  float tmp[kQ8Block];
  for (int64_t b = 0; b < n; b += kQ8Block) {
    const int64_t m = std::min(kQ8Block, n - b);
    t.dequantize(in + static_cast<size_t>(b / kQ8Block) * kQ8BlockBytes, tmp, kQ8Block);
    if (add) {
      for (int64_t j = 0; j < m; ++j) x[b + j] += tmp[j];
    } else {
      std::copy(tmp, tmp + m, x + b);
    }
  }
}

namespace {

// Sends sbytes to `right` and receives rbytes from `left` at once, in messages of at most
// kMaxMessage bytes (both sides cut the same way).
void exchange(Comm& c, int right, const void* sbuf, size_t sbytes, int left, void* rbuf, size_t rbytes) {
  std::vector<Request> reqs;
  auto pieces = [](size_t n) { return std::max<size_t>(1, (n + kMaxMessage - 1) / kMaxMessage); };
  for (size_t k = 0, np = pieces(rbytes); k < np; ++k) {
    const size_t off = k * kMaxMessage;
    reqs.push_back(c.irecv(static_cast<uint8_t*>(rbuf) + off, std::min(kMaxMessage, rbytes - std::min(rbytes, off)), left, Tag::kRing));
  }
  for (size_t k = 0, np = pieces(sbytes); k < np; ++k) {
    const size_t off = k * kMaxMessage;
    reqs.push_back(c.isend(static_cast<const uint8_t*>(sbuf) + off, std::min(kMaxMessage, sbytes - std::min(sbytes, off)), right, Tag::kRing));
  }
  for (Request& r : reqs) c.wait(r, "a tensor-parallel allreduce step");
}

int mod(int a, int p) { return ((a % p) + p) % p; }

}  // namespace

std::vector<int64_t> ring_segments(int64_t n, int size, Compression z) {
  std::vector<int64_t> off(static_cast<size_t>(size) + 1, 0);
  const int64_t unit = z == Compression::kQ8_0 ? kQ8Block : 1;
  const int64_t units = (n + unit - 1) / unit;
  for (int k = 0; k <= size; ++k) off[k] = std::min(n, units * k / size * unit);
  return off;
}

namespace {

// Small vectors (decode: one token's hidden state): one round instead of 2(p-1). Every member
// sends its whole vector to every other one, and each adds the p vectors in group order, so
// all end with the same bits. The bytes each member sends grow as (p-1) n, which is why large
// vectors take the ring.
void exchange_allreduce(Comm& c, const Group& g, float* data, int64_t n, Compression z, RingBuffers& buf) {
  const int p = g.size();
  const size_t bytes = z == Compression::kQ8_0 ? q8_bytes(n) : static_cast<size_t>(n) * sizeof(float);
  buf.send.resize(bytes);
  buf.recv.resize(bytes * static_cast<size_t>(p));
  if (z == Compression::kQ8_0) {
    q8_encode(data, n, buf.send.data());
  } else {
    std::memcpy(buf.send.data(), data, bytes);
  }
  std::vector<Request> reqs;
  for (int k = 0; k < p; ++k) {
    if (k != g.index) reqs.push_back(c.irecv(buf.recv.data() + bytes * static_cast<size_t>(k), bytes, g.ranks[k], Tag::kRing));
  }
  for (int k = 0; k < p; ++k) {
    if (k != g.index) reqs.push_back(c.isend(buf.send.data(), bytes, g.ranks[k], Tag::kRing));
  }
  std::memcpy(buf.recv.data() + bytes * static_cast<size_t>(g.index), buf.send.data(), bytes);
  for (Request& r : reqs) c.wait(r, "a tensor-parallel allreduce");
  for (int k = 0; k < p; ++k) {
    const uint8_t* src = buf.recv.data() + bytes * static_cast<size_t>(k);
    if (z == Compression::kQ8_0) {
      q8_decode(src, n, data, k > 0);
    } else {
      const auto* v = reinterpret_cast<const float*>(src);
      if (k == 0) {
        std::memcpy(data, v, static_cast<size_t>(n) * sizeof(float));
      } else {
        for (int64_t j = 0; j < n; ++j) data[j] += v[j];
      }
    }
  }
}

}  // namespace

void ring_allreduce(Comm& c, const Group& g, float* data, int64_t n, Compression z, RingBuffers& buf,
                    size_t exchange_max_bytes) {
  const int p = g.size();
  if (p <= 1 || n <= 0) return;
  if (static_cast<size_t>(n) * sizeof(float) <= exchange_max_bytes) return exchange_allreduce(c, g, data, n, z, buf);
  const int i = g.index;
  const int right = g.ranks[mod(i + 1, p)], left = g.ranks[mod(i - 1, p)];
  const std::vector<int64_t> off = ring_segments(n, p, z);
  auto len = [&](int k) { return off[k + 1] - off[k]; };
  int64_t max_len = 0;
  for (int k = 0; k < p; ++k) max_len = std::max(max_len, len(k));

  if (z == Compression::kNone) {
    buf.recv.resize(static_cast<size_t>(max_len) * sizeof(float));
    auto* tmp = reinterpret_cast<float*>(buf.recv.data());
    for (int s = 0; s < p - 1; ++s) {  // reduce-scatter
      const int ks = mod(i - s, p), kr = mod(i - s - 1, p);
      exchange(c, right, data + off[ks], static_cast<size_t>(len(ks)) * sizeof(float), left, tmp,
               static_cast<size_t>(len(kr)) * sizeof(float));
      float* dst = data + off[kr];
      for (int64_t j = 0; j < len(kr); ++j) dst[j] += tmp[j];
    }
    for (int s = 0; s < p - 1; ++s) {  // allgather
      const int ks = mod(i + 1 - s, p), kr = mod(i - s, p);
      exchange(c, right, data + off[ks], static_cast<size_t>(len(ks)) * sizeof(float), left, data + off[kr],
               static_cast<size_t>(len(kr)) * sizeof(float));
    }
    return;
  }

  // Q8_0: segment k's blocks live at q8_bytes(off[k]) in a buffer of the whole vector.
  buf.send.resize(q8_bytes(max_len));
  buf.recv.resize(q8_bytes(n) + kQ8BlockBytes);
  uint8_t* q = buf.recv.data();
  auto qseg = [&](int k) { return q + q8_bytes(off[k]); };
  for (int s = 0; s < p - 1; ++s) {  // reduce-scatter on quantized partial sums
    const int ks = mod(i - s, p), kr = mod(i - s - 1, p);
    q8_encode(data + off[ks], len(ks), buf.send.data());
    exchange(c, right, buf.send.data(), q8_bytes(len(ks)), left, qseg(kr), q8_bytes(len(kr)));
    q8_decode(qseg(kr), len(kr), data + off[kr], true);
  }
  // The owner quantizes its sum once and keeps what the others will decode.
  const int own = mod(i + 1, p);
  q8_encode(data + off[own], len(own), qseg(own));
  q8_decode(qseg(own), len(own), data + off[own], false);
  for (int s = 0; s < p - 1; ++s) {  // allgather: blocks are forwarded as received
    const int ks = mod(i + 1 - s, p), kr = mod(i - s, p);
    exchange(c, right, qseg(ks), q8_bytes(len(ks)), left, qseg(kr), q8_bytes(len(kr)));
    q8_decode(qseg(kr), len(kr), data + off[kr], false);
  }
}

void ring_allgather(Comm& c, const Group& g, const float* mine, const std::vector<int64_t>& counts, float* out) {
  const int p = g.size();
  const int i = g.index;
  std::vector<int64_t> off(static_cast<size_t>(p) + 1, 0);
  for (int k = 0; k < p; ++k) off[k + 1] = off[k] + counts[static_cast<size_t>(k)];
  std::copy(mine, mine + counts[static_cast<size_t>(i)], out + off[i]);
  if (p <= 1) return;
  const int right = g.ranks[mod(i + 1, p)], left = g.ranks[mod(i - 1, p)];
  for (int s = 0; s < p - 1; ++s) {
    const int ks = mod(i - s, p), kr = mod(i - s - 1, p);
    exchange(c, right, out + off[ks], static_cast<size_t>(counts[ks]) * sizeof(float), left, out + off[kr],
             static_cast<size_t>(counts[kr]) * sizeof(float));
  }
}

}  // namespace ranklm::comm
