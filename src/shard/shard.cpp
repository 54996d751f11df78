#include "shard/shard.h"

#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/gguf_writer.h"
#include "io/h5.h"
#include "model/arch.h"
#include "plan/identity.h"
#include "util/checksum.h"
#include "util/error.h"
#include "util/json_file.h"
#include "util/mmap_file.h"
#include "util/rows.h"

namespace ranklm::shard {

namespace {

constexpr const char* kRepackHint = "the shard is damaged: rerun ranklm-repack for this rank";

// Where a part's rows start in the mapped GGUF and the distance between them: rows of a whole
// tensor or a row slice are contiguous; a column slice takes the same blocks of every row.
struct PartSource {
  const uint8_t* data;
  int64_t stride;
};

PartSource part_source(const Part& part) {
  const gguf::TensorInfo& t = *part.tensor;
  const kern::TypeTraits& tt = kern::traits(t.type);
  const int64_t bs = tt.block_size, ts = static_cast<int64_t>(tt.type_size);
  const int64_t full_row = t.ne[0] / bs * ts;
  const plan::Slice& s = part.slice;
  if (s.dim < 0) return {t.data, full_row};
  if (s.dim == 1) return {t.data + s.begin * full_row, full_row};
  if (s.dim == 2) return {t.data + s.begin * t.ne[1] * full_row, full_row};  // whole experts: contiguous
  if (s.begin % bs != 0 || s.end % bs != 0) {
    fail("tensor '{}': column slice [{}, {}) cuts {}-element blocks", t.name, s.begin, s.end, bs);
  }
  return {t.data + s.begin / bs * ts, full_row};
}

// The tensor's dataset, its checksum checked against the bytes read into dst (exactly n bytes).
void read_checked(const h5::Node& ds, uint8_t* dst, size_t n) {
  ds.read_bytes(dst, n);
  if (Fnv1a64x4::of(dst, n) != ds.get_string("checksum")) ds.damaged("data failed its checksum");
}

h5::Node open_tensor(const h5::Node& file, const std::string& name) {
  if (!file.has_link("tensors/" + name)) fail("{}: no tensor '{}' in this shard", file.path(), name);
  return file.open_dataset("tensors/" + name);
}

// The manifest's whole-file checksum (fnv1a64x4, util/checksum.h), read through a private map
// of the file just written (its pages are still in the page cache: no copy into a buffer).
std::string file_checksum(const std::string& path) {
  const MappedFile m(path);
  return Fnv1a64x4::of(m.data(), m.size());
}

}  // namespace

std::string shard_name(int rank) { return fmt::format("rank-{:05d}.h5", rank); }

std::vector<Part> rank_parts(const gguf::File& f, const plan::Plan& p, int rank) {
  const auto [stage, tpi] = p.where(rank);
  const plan::Stage& st = p.stages[stage];
  const plan::TpShape shape = plan::tp_shape(f);
  const plan::TpPart part = plan::tp_part(shape, st.tp(), tpi, p.tp_mode, p.ep);
  const bool tied = f.find_tensor(tensor_name(TensorId::kOutput)) == nullptr;
  std::vector<Part> out;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    bool held = false;
    plan::Slice slice;
    const std::optional<NamedTensor> nt = parse_tensor_name(n);
    if (const std::optional<int64_t> layer = layer_of(n)) {
      held = *layer >= st.layer_begin && *layer < st.layer_end;
      if (held && st.tp() > 1) slice = plan::tensor_slice(n, static_cast<int>(t.ne.size()), shape, part);
    } else if (nt && nt->id == TensorId::kTokEmbd) {
      held = stage == p.embedding_stage || (tied && stage == p.output_stage);
    } else if (nt && (nt->id == TensorId::kOutput || nt->id == TensorId::kOutputNorm)) {
      held = stage == p.output_stage;
    } else {
      held = true;  // rope factors and anything else global: every rank
    }
    if (held) out.push_back({&t, slice});
  }
  return out;
}

uint64_t part_size(const Part& part) {
  const gguf::TensorInfo& t = *part.tensor;
  const kern::TypeTraits& tt = kern::traits(t.type);
  const plan::Slice& s = part.slice;
  if (s.dim < 0) return t.n_bytes;
  const uint64_t full_row = static_cast<uint64_t>(t.ne[0] / tt.block_size) * tt.type_size;
  if (s.dim == 1) return static_cast<uint64_t>(s.end - s.begin) * full_row;
  if (s.dim == 2) return static_cast<uint64_t>((s.end - s.begin) * t.ne[1]) * full_row;
  return t.n_bytes / full_row * static_cast<uint64_t>((s.end - s.begin) / tt.block_size) * tt.type_size;
}

PartBytes part_layout(const Part& part) {
  const gguf::TensorInfo& t = *part.tensor;
  const kern::TypeTraits& tt = kern::traits(t.type);
  PartBytes out;
  out.ne = t.ne;
  out.rows = 1;
  for (size_t i = 1; i < t.ne.size(); ++i) out.rows *= t.ne[i];
  out.row_bytes = t.ne[0] / tt.block_size * static_cast<int64_t>(tt.type_size);
  const plan::Slice& s = part.slice;
  if (s.dim == 1) {
    out.rows = s.end - s.begin;
    out.ne[1] = out.rows;
  } else if (s.dim == 2) {
    out.rows = (s.end - s.begin) * t.ne[1];
    out.ne[2] = s.end - s.begin;
  } else if (s.dim == 0) {
    out.row_bytes = (s.end - s.begin) / tt.block_size * static_cast<int64_t>(tt.type_size);
    out.ne[0] = s.end - s.begin;
  }
  return out;
}

PartBytes part_bytes(const Part& part) {
  PartBytes out = part_layout(part);
  const PartSource src = part_source(part);
  out.data.resize(static_cast<size_t>(out.rows * out.row_bytes));
  gather_rows(out.data.data(), src.data, out.rows, out.row_bytes, src.stride);
  return out;
}

namespace {

// Scalar metadata repeated as readable attributes of /metadata (strings up to 16 KiB).
void write_metadata(h5::Node& file, const gguf::File& f) {
  h5::Node meta = file.create_group("metadata");
  for (const auto& [key, v] : f.metadata()) {
    if (v.type == gguf::ValueType::STRING) {
      if (v.s.size() <= 16384) meta.set_string(key.c_str(), v.s);
    } else if (v.is_float()) {
      meta.set_double(key.c_str(), v.f);
    } else if (v.is_integer() || v.type == gguf::ValueType::BOOL) {
      const bool is_signed = v.type == gguf::ValueType::I8 || v.type == gguf::ValueType::I16 ||
                             v.type == gguf::ValueType::I32 || v.type == gguf::ValueType::I64;
      meta.set_int(key.c_str(), is_signed ? v.i : static_cast<int64_t>(v.u));
    }
  }
}

}  // namespace

ShardWritten write_shard(const gguf::File& f, const plan::Plan& p, int rank, const std::string& dir,
                         const std::function<void(uint64_t, uint64_t)>& progress) {
  const auto [stage, tpi] = p.where(rank);
  const plan::Stage& st = p.stages[stage];
  const std::vector<Part> parts = rank_parts(f, p, rank);
  uint64_t total = 0, done = 0;
  for (const Part& pt : parts) total += part_size(pt);
  const std::string path = dir + "/" + shard_name(rank);
  const std::string tmp = path + ".partial";
  std::filesystem::remove(tmp);
  {
    h5::Node file = h5::Node::create_file(tmp);
    file.set_string("format", "ranklm-shard");
    file.set_int("format_version", kShardFormatVersion);
    file.set_int("rank", rank);
    file.set_int("world_size", p.world_size);
    file.set_int("stage", stage);
    file.set_int("tp_index", tpi);
    file.set_int("tp_size", st.tp());
    file.set_ints("layers", {st.layer_begin, st.layer_end});
    file.set_string("plan_hash", plan::plan_hash(p));
    file.set_string("model_hash", p.model.gguf_hash);
    file.set_int("gguf_file_size", static_cast<int64_t>(f.file_size()));
    file.set_string("model_name", p.model.name);
    file.set_string("architecture", p.model.arch);
    file.set_string("plan", plan::to_json(p).dump());
    // The GGUF header, metadata and tensor table, byte for byte: hyperparameters, tokenizer and
    // chat template exactly as the source file had them.
    {
      const int64_t n = static_cast<int64_t>(f.data_offset());
      h5::Node ds = file.create_bytes_dataset("gguf_header", 1, n);
      ds.set_string("checksum", ds.write_bytes(f.bytes(), 1, n, n));
    }
    write_metadata(file, f);
    h5::Node tensors = file.create_group("tensors");
    for (const Part& pt : parts) {
      // Rows go to HDF5 straight from the mapped GGUF (column slices gathered a chunk at a time).
      const PartBytes b = part_layout(pt);
      const PartSource src = part_source(pt);
      h5::Node ds = tensors.create_bytes_dataset(pt.tensor->name, b.rows, b.row_bytes);
      ds.set_string("checksum", ds.write_bytes(src.data, b.rows, b.row_bytes, src.stride));
      ds.set_string("ggml_type", std::string(kern::type_name(pt.tensor->type)));
      ds.set_int("ggml_type_id", static_cast<int64_t>(pt.tensor->type));
      ds.set_ints("shape", pt.tensor->ne);
      ds.set_int("slice_dim", pt.slice.dim);
      ds.set_int("slice_begin", pt.slice.dim < 0 ? 0 : pt.slice.begin);
      ds.set_int("slice_end", pt.slice.dim < 0 ? pt.tensor->ne[0] : pt.slice.end);
      ds.set_ints("slice_shape", b.ne);
      done += static_cast<uint64_t>(b.rows * b.row_bytes);
      if (progress) progress(done, total);
    }
    file.flush();
  }
  ShardWritten w;
  w.path = path;
  w.tensor_bytes = done;
  w.bytes = std::filesystem::file_size(tmp);
  w.checksum = file_checksum(tmp);
  std::filesystem::rename(tmp, path);
  return w;
}

namespace {

// One tensor of an open shard, its checksum verified.
DatasetRead read_dataset_in(const h5::Node& file, const std::string& name) {
  const h5::Node ds = open_tensor(file, name);
  const std::vector<int64_t> dims = ds.dims();
  if (dims.size() != 2) ds.damaged("the dataset is not 2-D");
  if (dims[1] != 0 && dims[0] > INT64_MAX / dims[1]) ds.damaged("impossible dimensions");
  DatasetRead r;
  r.bytes.rows = dims[0];
  r.bytes.row_bytes = dims[1];
  r.bytes.data.resize(static_cast<size_t>(dims[0] * dims[1]));
  read_checked(ds, r.bytes.data.data(), r.bytes.data.size());
  r.full_ne = ds.get_ints("shape");
  r.bytes.ne = ds.get_ints("slice_shape");
  r.slice.dim = static_cast<int>(ds.get_int("slice_dim"));
  r.slice.begin = ds.get_int("slice_begin");
  r.slice.end = ds.get_int("slice_end");
  if (r.slice.dim < 0) r.slice = {};
  r.type = ds.get_string("ggml_type");
  return r;
}

h5::Node open_shard_file(const std::string& path, int rank) {
  if (!std::filesystem::exists(path)) {
    fail("{}: missing; rerun ranklm-repack for rank {} (--ranks {})", path, rank, rank);
  }
  return h5::Node::open_file(path, fmt::format("rerun ranklm-repack for rank {} (--ranks {})", rank, rank));
}

}  // namespace

DatasetRead read_dataset(const std::string& path, const std::string& name) {
  return read_dataset_in(h5::Node::open_file(path, kRepackHint), name);
}

std::pair<uint64_t, uint64_t> first_chunk_location(const std::string& path, const std::string& name) {
  return open_tensor(open_shard_file(path, 0), name).first_chunk();
}

std::string describe_shard(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("{}: no such file", path);
  const h5::Node file = h5::Node::open_file(path, kRepackHint);
  std::string out = fmt::format("shard: {}\nformat: {} version {}\n", path, file.get_string("format"),
                                file.get_int("format_version"));
  out += fmt::format("rank {} of {}: stage {}, TP index {} of {}\n", file.get_int("rank"), file.get_int("world_size"),
                     file.get_int("stage"), file.get_int("tp_index"), file.get_int("tp_size"));
  out += fmt::format("model: {} ({}), model hash {}, plan hash {}\n", file.get_string("model_name"),
                     file.get_string("architecture"), file.get_string("model_hash"), file.get_string("plan_hash"));
  const std::vector<std::string> names = file.open_group("tensors").link_names();
  out += fmt::format("\ntensors ({}):\n  {:<36} {:<6} {:<18} {:<22} {:>12}\n", names.size(), "name", "type",
                     "full shape", "slice", "bytes");
  uint64_t total = 0;
  for (const std::string& name : names) {
    const DatasetRead d = read_dataset_in(file, name);
    std::string shape, slice = "whole";
    for (size_t k = 0; k < d.full_ne.size(); ++k) shape += (k ? " x " : "") + std::to_string(d.full_ne[k]);
    if (d.slice.dim >= 0) {
      slice = fmt::format("{} [{}, {})", d.slice.dim == 0 ? "cols" : d.slice.dim == 1 ? "rows" : "experts", d.slice.begin,
                          d.slice.end);
    }
    const uint64_t bytes = d.bytes.data.size();
    total += bytes;
    out += fmt::format("  {:<36} {:<6} {:<18} {:<22} {:>12}\n", name, d.type, shape, slice, bytes);
  }
  out += fmt::format("  total tensor bytes: {}\n", total);
  return out;
}

namespace {

[[noreturn]] void fail_rank_count(const std::string& where, int64_t planned, int started) {
  fail("{}: {} rank{} planned, {} started: start the job with mpirun -np {}{} (or make a plan for {} "
       "ranks: ranklm plan --layout spread under mpirun -np {}, then ranklm-repack)", where, planned,
       planned == 1 ? "" : "s", started, planned, planned == 1 ? " or without mpirun" : "", started, started);
}

}  // namespace

ShardHeader check_shard(const std::string& dir, int rank, int world_size) {
  const std::string mpath = dir + "/manifest.json";
  if (!std::filesystem::exists(mpath)) fail("{}: missing; is {} the output directory of ranklm-repack?", mpath, dir);
  const nlohmann::json manifest = read_json_file(mpath, "the manifest");
  if (!manifest.is_object() || !manifest.contains("plan_hash") || !manifest["plan_hash"].is_string()) {
    fail("{}: not a ranklm-repack manifest (no 'plan_hash')", mpath);
  }
  // The rank count first: a job started with the wrong -np would otherwise report a missing or
  // foreign shard file, which no rerun of ranklm-repack can fix.
  const bool manifest_counts = manifest.contains("plan") && manifest["plan"].is_object() &&
                               manifest["plan"].contains("world_size");
  if (manifest.contains("plan") && manifest["plan"].is_object() && manifest["plan"].contains("world_size") &&
      manifest["plan"]["world_size"].is_number_integer()) {
    const int64_t planned = manifest["plan"]["world_size"].get<int64_t>();
    if (planned != world_size) {
      fail_rank_count(dir, planned, world_size);
    }
  }
  const std::string path = dir + "/" + shard_name(rank);
  const h5::Node file = open_shard_file(path, rank);
  ShardHeader h;
  if (!file.has_attr("format") || file.get_string("format") != "ranklm-shard") fail("{}: not a ranklm shard", path);
  h.format_version = file.get_int("format_version");
  if (h.format_version != kShardFormatVersion) {
    fail("{}: shard format version {} (this build reads version {}); rerun ranklm-repack with this "
         "build", path, h.format_version, kShardFormatVersion);
  }
  h.rank = file.get_int("rank");
  h.world_size = file.get_int("world_size");
  h.stage = file.get_int("stage");
  h.tp_index = file.get_int("tp_index");
  h.tp_size = file.get_int("tp_size");
  h.plan_hash = file.get_string("plan_hash");
  h.model_hash = file.get_string("model_hash");
  h.plan_json = file.get_string("plan");
  if (h.world_size != world_size) {
    if (!manifest_counts) fail_rank_count(path, h.world_size, world_size);
    fail("{}: made for {} ranks, but {} plans {}: this shard comes from another plan; rerun ranklm-repack "
         "for rank {}", path, h.world_size, mpath, world_size, rank);
  }
  if (h.rank != rank) fail("{}: holds rank {}, not rank {}; the file was renamed or copied over", path, h.rank, rank);
  if (h.plan_hash != manifest["plan_hash"].get<std::string>()) {
    fail("{}: made for plan {}, but {} is for plan {}: this shard comes from another plan or model; "
         "rerun ranklm-repack for rank {}", path, h.plan_hash, mpath, manifest["plan_hash"].get<std::string>(), rank);
  }
  return h;
}

namespace {

// The stored GGUF header, checked against its checksum and the shard's model hash.
std::vector<uint8_t> read_header(const h5::Node& file, const ShardHeader& h) {
  if (!file.has_link("gguf_header")) fail("{}: dataset 'gguf_header' missing", file.path());
  const h5::Node ds = file.open_dataset("gguf_header");
  const int64_t n = ds.n_elements();
  if (n > (int64_t{256} << 20)) ds.damaged(fmt::format("{} bytes, more than 256 MiB", n));
  std::vector<uint8_t> header(static_cast<size_t>(n));
  read_checked(ds, header.data(), header.size());
  if (plan::fnv1a64_hex(header.data(), header.size()) != h.model_hash) {
    fail("{}: the stored GGUF header does not match the shard's model hash; rerun ranklm-repack", file.path());
  }
  return header;
}

}  // namespace

RankFile load_rank_file(const std::string& dir, int rank, int world_size) {
  RankFile out;
  out.header = check_shard(dir, rank, world_size);
  const std::string path = dir + "/" + shard_name(rank);
  out.plan = plan::from_json(parse_json_bounded(out.header.plan_json, path + ": attribute 'plan'"), path + ": attribute 'plan'");
  const h5::Node file = open_shard_file(path, rank);
  out.model = gguf::File::header_only(path, read_header(file, out.header));
  // This rank's tensors in GGUF order, with their stored (sliced) shapes, under the model's
  // metadata: a GGUF image of just this part.
  gguf::Writer w(out.model->alignment());
  for (const auto& [k, v] : out.model->metadata()) {
    if (k != "general.alignment") w.set(k, v);
  }
  std::vector<h5::Node> datasets;
  for (const gguf::TensorInfo& t : out.model->tensors()) {
    if (!file.has_link("tensors/" + t.name)) continue;
    h5::Node ds = open_tensor(file, t.name);
    std::vector<int64_t> slice = ds.get_ints("slice_shape");
    // A slice is the tensor cut along one dimension: as many dimensions, none larger.
    bool fits = slice.size() == t.ne.size();
    for (size_t k = 0; fits && k < slice.size(); ++k) fits = slice[k] >= 1 && slice[k] <= t.ne[k];
    if (!fits) ds.damaged("attribute 'slice_shape' does not fit the tensor's shape");
    w.add_tensor(t.name, std::move(slice), t.type);
    datasets.push_back(std::move(ds));
  }
  if (datasets.empty()) fail("{}: holds no tensors; rerun ranklm-repack for rank {}", path, rank);
  // The image lives in anonymous memory, so the pages of tensors the model repacks can be
  // given back after packing (as for a mapped GGUF) and nothing is zeroed up front.
  const std::vector<uint8_t> header = w.header();
  auto image = MappedFile::anonymous(path, header.size() + w.data_size());
  std::memcpy(image->mutable_data(), header.data(), header.size());
  for (size_t i = 0; i < datasets.size(); ++i) {
    read_checked(datasets[i], image->mutable_data() + header.size() + w.tensor_offset(i), w.tensor_bytes(i));
  }
  out.file = gguf::File::from_mapped(std::move(image));
  return out;
}

}  // namespace ranklm::shard
