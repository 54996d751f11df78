// Collectives of a tensor-parallel group, built on point-to-point messages (so they run on MPI
// and on the fake world alike). A group is a list of world ranks; every member calls with the
// same group, length and options.
//
// Allreduce (sum) of vectors up to 32 KB (a decode step's hidden state): one round in which
// every member sends its vector to every other one and each adds all of them in group order
// (latency, not bandwidth, is what counts at that size).
//
// Ring allreduce (sum), above that: the vector is cut into one segment per member; in a reduce-scatter
// each member sends a segment to its right neighbour and adds the one from its left (size-1
// steps), after which member i holds the full sum of segment i+1; an allgather passes the
// summed segments round the ring (size-1 steps). Any group size works, not only powers of
// two; each member sends 2(size-1)/size of the vector. Segments larger than the message cap
// go as several messages. Every member ends with the same bits (each sum is made once, then
// copied).
//
// With Q8_0 compression the segments travel as Q8_0 blocks (32 values, one fp16 scale: 34
// bytes instead of 128): partial sums are quantized before each reduce-scatter send, and a
// summed segment is quantized once by its owner, who keeps the dequantized values too, so
// members still agree bit for bit. Each hop quantizes a partial sum, so the error relative to
// the summed vectors grows as sqrt((size + 1) / 2): about 0.5% at size 2, 1% at size 8 for
// normally distributed values.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"

namespace ranklm::comm {

struct Group {
  std::vector<int> ranks;  // world ranks, in ring order
  int index = 0;           // this rank's position in `ranks`
  int size() const { return static_cast<int>(ranks.size()); }
};

enum class Compression { kNone, kQ8_0 };

// What travels between ranks as f32 or as Q8_0 blocks: the all-reduce of a sum-mode TP plan, and
// the hidden states on pipeline hops (SwarmLLM's compression for slow links).
struct Payloads {
  Compression allreduce = Compression::kNone;
  Compression hops = Compression::kNone;
};

// Q8_0 blocks of n values (32 values and one fp16 scale each, the last block padded with
// zeros): their size, encoding, and decoding (add: added to x instead of stored).
size_t q8_bytes(int64_t n);
void q8_encode(const float* x, int64_t n, uint8_t* out);
void q8_decode(const uint8_t* in, int64_t n, float* x, bool add);

// Scratch space kept between calls (collectives run twice per layer).
struct RingBuffers {
  std::vector<uint8_t> send, recv;
};

// exchange_max_bytes: vectors up to this size take the one-round exchange (0: always the ring).
constexpr size_t kExchangeMaxBytes = size_t{32} << 10;
void ring_allreduce(Comm& c, const Group& g, float* data, int64_t n, Compression z, RingBuffers& buf,
                    size_t exchange_max_bytes = kExchangeMaxBytes);

// Every member contributes `counts[index]` floats (`mine`); all end with the members' parts
// concatenated in group order in `out` (sum of counts floats). Same ring, size-1 steps.
void ring_allgather(Comm& c, const Group& g, const float* mine, const std::vector<int64_t>& counts, float* out);

// The segments ring_allreduce cuts n values into for a group of `size` (aligned to 32 values
// with compression, so every segment but the last holds whole Q8_0 blocks).
std::vector<int64_t> ring_segments(int64_t n, int size, Compression z);

}  // namespace ranklm::comm
