// HDF5 shards: one file per rank holding only that rank's tensors, already sliced for tensor
// parallelism, blocks copied in their GGUF type (never requantized). This module is the only
// code that includes <hdf5.h>. The format is in docs/FORMATS.md ("HDF5 shards").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "plan/plan.h"
#include "plan/tp_slice.h"

namespace ranklm::shard {

constexpr int kShardFormatVersion = 1;

// One tensor a rank holds: the GGUF tensor and the part of it (slice.dim -1: whole).
struct Part {
  const gguf::TensorInfo* tensor;
  plan::Slice slice;
};

// Every tensor rank `rank` of plan `p` holds, in GGUF order: its stage's layers (sliced for
// its TP index), the embedding on the first stage, the output norm and head (and the embedding
// again when the head is tied to it) on the last, rope factors wherever there are layers.
std::vector<Part> rank_parts(const gguf::File& f, const plan::Plan& p, int rank);

// The bytes of one part, as rows x row_bytes (a vector is one row): whole rows for a row slice,
// the blocks [begin, end) of every row for a column slice.
struct PartBytes {
  int64_t rows = 0, row_bytes = 0;
  std::vector<int64_t> ne;  // GGUF shape of the slice
  std::vector<uint8_t> data;
};
PartBytes part_bytes(const Part& part);
// Bytes part_bytes would return, without copying.
uint64_t part_size(const Part& part);

// Shard file name of a rank: rank-00003.h5.
std::string shard_name(int rank);

struct ShardWritten {
  std::string path;
  uint64_t bytes = 0;       // file size
  uint64_t tensor_bytes = 0;
  std::string checksum;     // FNV-1a 64 of the file, 16 hex digits
};

// Writes DIR/rank-NNNNN.h5 for `rank`: under a temporary name, renamed once complete, so a
// killed write never leaves a file that looks finished. progress(bytes_done, bytes_total) is
// called after each tensor.
ShardWritten write_shard(const gguf::File& f, const plan::Plan& p, int rank, const std::string& dir,
                         const std::function<void(uint64_t, uint64_t)>& progress = {});

// Reads one dataset's bytes back (tests, inspection): rows x row_bytes and its slice attributes.
struct DatasetRead {
  PartBytes bytes;
  std::string type;
  std::vector<int64_t> full_ne;
  plan::Slice slice;
};
DatasetRead read_dataset(const std::string& path, const std::string& name);

}  // namespace ranklm::shard
