// HDF5 shards: one file per rank holding only that rank's tensors, already sliced for tensor
// parallelism, blocks copied in their GGUF type (never requantized). This module says which part
// of which tensor goes to which rank and what the file holds; the HDF5 calls are io/h5.h's. The
// format is in docs/FORMATS.md ("HDF5 shards").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
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
// The same shape fields without the bytes (data left empty).
PartBytes part_layout(const Part& part);
// Bytes part_bytes would return, without copying.
uint64_t part_size(const Part& part);

// Shard file name of a rank: rank-00003.h5.
std::string shard_name(int rank);

struct ShardWritten {
  std::string path;
  uint64_t bytes = 0;       // file size
  uint64_t tensor_bytes = 0;
  std::string checksum;     // fnv1a64x4 of the whole file (util/checksum.h)
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

// Where the stored bytes of a tensor's first chunk lie in the shard file (byte offset and size);
// for tests and repair tools that need to point at a tensor's data on disk.
std::pair<uint64_t, uint64_t> first_chunk_location(const std::string& path, const std::string& name);

// A human-readable summary of a shard (ranklm inspect): its place in the plan, the model, and
// every tensor with type, full shape, slice and stored bytes.
std::string describe_shard(const std::string& path);

// A shard's root attributes.
struct ShardHeader {
  int64_t format_version = 0, rank = -1, world_size = 0, stage = 0, tp_index = 0, tp_size = 0;
  std::string plan_hash, model_hash, plan_json;
};
// Opens DIR/rank-NNNNN.h5 for `rank` of a job of `world_size` ranks and checks, naming the file
// and what to do on failure: the manifest is there, the file exists and is a complete HDF5 file,
// format and version, rank and world size, and that it belongs to the manifest's plan.
ShardHeader check_shard(const std::string& dir, int rank, int world_size);

// What rank `rank` of a job of `world_size` ranks runs, from its own shard only: the file's
// tensors (sliced, under their GGUF names, each read through its checksum) with the whole
// model's metadata, as an in-memory GGUF (`file`); the whole model's tensor table (`model`,
// shapes and types, no data); and the plan the shard was made for.
struct RankFile {
  ShardHeader header;
  plan::Plan plan;
  std::unique_ptr<gguf::File> model;  // header only
  std::unique_ptr<gguf::File> file;
};
RankFile load_rank_file(const std::string& dir, int rank, int world_size);

}  // namespace ranklm::shard
