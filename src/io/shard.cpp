#include "io/shard.h"

#include <hdf5.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "io/gguf_writer.h"
#include "plan/identity.h"
#include "util/json_file.h"
#include "util/checksum.h"
#include "util/mmap_file.h"
#include "util/error.h"

namespace ranklm::shard {

namespace {

// An HDF5 handle closed on scope exit.
class H5 {
 public:
  H5(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
    if (id_ < 0) fail("HDF5: {} failed", what);
  }
  ~H5() {
    if (id_ >= 0) close_(id_);
  }
  H5(const H5&) = delete;
  H5& operator=(const H5&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

void quiet_hdf5() {
  static const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as our messages
    return true;
  }();
  (void)once;
}

void check(herr_t rc, const std::string& what) {
  if (rc < 0) fail("HDF5: {} failed", what);
}

void attr_int(hid_t obj, const char* name, int64_t v) {
  H5 space(H5Screate(H5S_SCALAR), H5Sclose, "dataspace");
  H5 a(H5Acreate2(obj, name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, H5T_NATIVE_INT64, &v), name);
}

void attr_ints(hid_t obj, const char* name, const std::vector<int64_t>& v) {
  const hsize_t n = v.size();
  H5 space(H5Screate_simple(1, &n, nullptr), H5Sclose, "dataspace");
  H5 a(H5Acreate2(obj, name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, H5T_NATIVE_INT64, v.data()), name);
}

void attr_double(hid_t obj, const char* name, double v) {
  H5 space(H5Screate(H5S_SCALAR), H5Sclose, "dataspace");
  H5 a(H5Acreate2(obj, name, H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, H5T_NATIVE_DOUBLE, &v), name);
}

void attr_string(hid_t obj, const char* name, const std::string& v) {
  H5 type(H5Tcopy(H5T_C_S1), H5Tclose, "string type");
  check(H5Tset_size(type, v.empty() ? 1 : v.size()), "string size");
  check(H5Tset_cset(type, H5T_CSET_UTF8), "string charset");
  H5 space(H5Screate(H5S_SCALAR), H5Sclose, "dataspace");
  H5 a(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, type, v.empty() ? "" : v.data()), name);
}

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
  if (s.begin % bs != 0 || s.end % bs != 0) {
    fail("tensor '{}': column slice [{}, {}) cuts {}-element blocks", t.name, s.begin, s.end, bs);
  }
  return {t.data + s.begin / bs * ts, full_row};
}

// Copies `rows` rows of `row_bytes` bytes, `stride` apart in src, to dst back to back.
void gather_rows(uint8_t* dst, const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t stride) {
  if (stride == row_bytes) {
    std::memcpy(dst, src, static_cast<size_t>(rows * row_bytes));
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * row_bytes, src + r * stride, static_cast<size_t>(row_bytes));
  }
}

// A group without modification times, so repacking the same model and plan twice gives the
// same bytes (and the same manifest checksums).
hid_t create_group(hid_t parent, const char* name) {
  H5 gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose, "group properties");
  check(H5Pset_obj_track_times(gcpl, false), "time tracking of group " + std::string(name));
  const hid_t g = H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
  if (g < 0) fail("HDF5: creating group '{}' failed", name);
  return g;
}

// Chunk rows for a rows x row_bytes dataset: chunks of about 1 MiB that split the rows evenly
// (a partial last chunk is stored whole).
int64_t chunk_rows_for(int64_t rows, int64_t row_bytes) {
  const int64_t bytes = rows * row_bytes;
  const int64_t n_chunks = std::max<int64_t>(1, (bytes + (int64_t{1} << 20) - 1) >> 20);
  return std::max<int64_t>(1, (rows + n_chunks - 1) / n_chunks);
}

// A rows x row_bytes uint8 dataset, chunked. Its checksum is stored as an attribute (fnv1a64x4
// of the bytes, checked on every read): HDF5's Fletcher32 filter took a third of the repack
// time. No fill values are written: every chunk is written whole by write_bytes.
hid_t create_bytes_dataset(hid_t parent, const std::string& name, int64_t rows, int64_t row_bytes) {
  const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(row_bytes)};
  H5 space(H5Screate_simple(2, dims, nullptr), H5Sclose, "dataspace of " + name);
  H5 dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "dataset properties");
  const hsize_t chunk[2] = {static_cast<hsize_t>(chunk_rows_for(rows, row_bytes)), static_cast<hsize_t>(row_bytes)};
  check(H5Pset_chunk(dcpl, 2, chunk), "chunking of " + name);
  check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "fill time of " + name);
  check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_INCR), "allocation time of " + name);
  check(H5Pset_obj_track_times(dcpl, false), "time tracking of " + name);  // reproducible files
  const hid_t ds = H5Dcreate2(parent, name.c_str(), H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) fail("HDF5: creating dataset '{}' failed", name);
  return ds;
}

// Writes rows x row_bytes bytes (rows `stride` bytes apart in src) into a dataset made by
// create_bytes_dataset, chunk by chunk with H5Dwrite_chunk: straight to the file, no pass
// through HDF5's chunk cache. Each chunk is hashed just before it goes out, while it is in
// cache; rows that are not contiguous (column slices) are gathered into one reused chunk
// buffer. The last chunk is padded to the full chunk size, as HDF5 stores edge chunks.
// Returns the checksum of all the bytes.
std::string write_bytes(hid_t ds, const std::string& name, const uint8_t* src, int64_t rows, int64_t row_bytes,
                        int64_t stride) {
  const int64_t chunk_rows = chunk_rows_for(rows, row_bytes);
  const size_t chunk_bytes = static_cast<size_t>(chunk_rows * row_bytes);
  Fnv1a64x4 h;
  std::vector<uint8_t> buf;
  for (int64_t r = 0; r < rows; r += chunk_rows) {
    const int64_t n_rows = std::min(chunk_rows, rows - r);
    const size_t n = static_cast<size_t>(n_rows * row_bytes);
    const uint8_t* p = src + r * stride;
    if (n < chunk_bytes || stride != row_bytes) {
      buf.resize(chunk_bytes);
      gather_rows(buf.data(), p, n_rows, row_bytes, stride);
      std::memset(buf.data() + n, 0, chunk_bytes - n);
      p = buf.data();
    }
    h.update(p, n);
    const hsize_t offset[2] = {static_cast<hsize_t>(r), 0};
    check(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, offset, chunk_bytes, p), "writing " + name);
  }
  return h.hex();
}

int64_t root_int(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) fail("{}: attribute '{}' missing: not a ranklm shard of this version", path, name);
  H5 at(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, name);
  // One integer: an attribute of another shape or type would be read past `v`.
  H5 space(H5Aget_space(at), H5Sclose, name);
  H5 ty(H5Aget_type(at), H5Tclose, name);
  if (H5Sget_simple_extent_npoints(space) != 1 || H5Tget_class(ty) != H5T_INTEGER) {
    fail("{}: attribute '{}' is not one integer; the shard is damaged: rerun ranklm-repack for this rank", path, name);
  }
  int64_t v = 0;
  check(H5Aread(at, H5T_NATIVE_INT64, &v), name);
  return v;
}

std::vector<int64_t> read_ints_attr(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) fail("{}: attribute '{}' missing: not a ranklm shard of this version", path, name);
  H5 at(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, name);
  H5 space(H5Aget_space(at), H5Sclose, name);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  H5 ty(H5Aget_type(at), H5Tclose, name);
  if (n < 0 || n > (hssize_t{1} << 20) || H5Tget_class(ty) != H5T_INTEGER) {
    fail("{}: attribute '{}' is damaged ({} values); the shard is damaged: rerun ranklm-repack for this rank", path, name, n);
  }
  std::vector<int64_t> v(static_cast<size_t>(n));
  check(H5Aread(at, H5T_NATIVE_INT64, v.data()), name);
  return v;
}

std::string read_string_attr(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) fail("{}: attribute '{}' missing: not a ranklm shard of this version", path, name);
  H5 at(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, name);
  H5 ty(H5Aget_type(at), H5Tclose, name);
  const size_t size = H5Tget_size(ty);
  if (H5Tget_class(ty) != H5T_STRING || H5Tis_variable_str(ty) != 0 || size == 0 || size > (size_t{256} << 20)) {
    fail("{}: attribute '{}' is not a fixed-length string of at most 256 MiB; the shard is damaged: rerun ranklm-repack "
         "for this rank", path, name);
  }
  std::string s(size, '\0');
  check(H5Aread(at, ty, s.data()), name);
  return s.c_str();
}

hid_t open_tensor(hid_t file, const std::string& path, const std::string& name) {
  const std::string full = "tensors/" + name;
  const htri_t group = H5Lexists(file, "tensors", H5P_DEFAULT);
  const htri_t exists = group > 0 ? H5Lexists(file, full.c_str(), H5P_DEFAULT) : group;
  if (exists == 0) fail("{}: no tensor '{}' in this shard", path, name);
  const hid_t id = exists > 0 ? H5Dopen2(file, full.c_str(), H5P_DEFAULT) : -1;
  if (id < 0) fail("{}: tensor '{}' cannot be opened: the shard is damaged; rerun ranklm-repack for this rank", path, name);
  return id;
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
  const plan::TpPart part = plan::tp_part(shape, st.tp(), tpi, p.tp_mode);
  const bool tied = f.find_tensor("output.weight") == nullptr;
  std::vector<Part> out;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    bool held = false;
    plan::Slice slice;
    if (n.rfind("blk.", 0) == 0) {
      const int64_t layer = plan::layer_of(n).value_or(-1);
      held = layer >= st.layer_begin && layer < st.layer_end;
      if (held && st.tp() > 1) slice = plan::tensor_slice(n, static_cast<int>(t.ne.size()), shape, part);
    } else if (n == "token_embd.weight") {
      held = stage == p.embedding_stage || (tied && stage == p.output_stage);
    } else if (n == "output.weight" || n == "output_norm.weight") {
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

ShardWritten write_shard(const gguf::File& f, const plan::Plan& p, int rank, const std::string& dir,
                         const std::function<void(uint64_t, uint64_t)>& progress) {
  quiet_hdf5();
  const auto [stage, tpi] = p.where(rank);
  const plan::Stage& st = p.stages[stage];
  const std::vector<Part> parts = rank_parts(f, p, rank);
  uint64_t total = 0, done = 0;
  for (const Part& pt : parts) total += part_size(pt);
  const std::string path = dir + "/" + shard_name(rank);
  const std::string tmp = path + ".partial";
  std::filesystem::remove(tmp);
  {
    H5 file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose, "creating " + tmp);
    attr_string(file, "format", "ranklm-shard");
    attr_int(file, "format_version", kShardFormatVersion);
    attr_int(file, "rank", rank);
    attr_int(file, "world_size", p.world_size);
    attr_int(file, "stage", stage);
    attr_int(file, "tp_index", tpi);
    attr_int(file, "tp_size", st.tp());
    attr_ints(file, "layers", {st.layer_begin, st.layer_end});
    attr_string(file, "plan_hash", plan::plan_hash(p));
    attr_string(file, "model_hash", p.model.gguf_hash);
    attr_int(file, "gguf_file_size", static_cast<int64_t>(f.file_size()));
    attr_string(file, "model_name", p.model.name);
    attr_string(file, "architecture", p.model.arch);
    attr_string(file, "plan", plan::to_json(p).dump());
    // The GGUF header, metadata and tensor table, byte for byte: hyperparameters, tokenizer and
    // chat template exactly as the source file had them. Scalar metadata is repeated as
    // readable attributes of /metadata.
    {
      const int64_t n = static_cast<int64_t>(f.data_offset());
      H5 ds(create_bytes_dataset(file, "gguf_header", 1, n), H5Dclose, "gguf_header");
      attr_string(ds, "checksum", write_bytes(ds, "gguf_header", f.bytes(), 1, n, n));
    }
    {
      H5 meta(create_group(file, "metadata"), H5Gclose, "group metadata");
      for (const auto& [key, v] : f.metadata()) {
        if (v.type == gguf::ValueType::STRING) {
          if (v.s.size() <= 16384) attr_string(meta, key.c_str(), v.s);
        } else if (v.is_float()) {
          attr_double(meta, key.c_str(), v.f);
        } else if (v.is_integer() || v.type == gguf::ValueType::BOOL) {
          attr_int(meta, key.c_str(), v.type == gguf::ValueType::I8 || v.type == gguf::ValueType::I16 ||
                                              v.type == gguf::ValueType::I32 || v.type == gguf::ValueType::I64
                                          ? v.i
                                          : static_cast<int64_t>(v.u));
        }
      }
    }
    H5 tensors(create_group(file, "tensors"), H5Gclose, "group tensors");
    for (const Part& pt : parts) {
      // Rows go to HDF5 straight from the mapped GGUF (column slices gathered a chunk at a time).
      const PartBytes b = part_layout(pt);
      const PartSource src = part_source(pt);
      const std::string& name = pt.tensor->name;
      H5 ds(create_bytes_dataset(tensors, name, b.rows, b.row_bytes), H5Dclose, name);
      attr_string(ds, "checksum", write_bytes(ds, name, src.data, b.rows, b.row_bytes, src.stride));
      attr_string(ds, "ggml_type", std::string(kern::type_name(pt.tensor->type)));
      attr_int(ds, "ggml_type_id", static_cast<int64_t>(pt.tensor->type));
      attr_ints(ds, "shape", pt.tensor->ne);
      attr_int(ds, "slice_dim", pt.slice.dim);
      attr_int(ds, "slice_begin", pt.slice.dim < 0 ? 0 : pt.slice.begin);
      attr_int(ds, "slice_end", pt.slice.dim < 0 ? pt.tensor->ne[0] : pt.slice.end);
      attr_ints(ds, "slice_shape", b.ne);
      done += static_cast<uint64_t>(b.rows * b.row_bytes);
      if (progress) progress(done, total);
    }
    check(H5Fflush(file, H5F_SCOPE_GLOBAL), "flushing " + tmp);
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
DatasetRead read_dataset_in(hid_t file, const std::string& path, const std::string& name) {
  H5 ds(open_tensor(file, path, name), H5Dclose, name);
  H5 space(H5Dget_space(ds), H5Sclose, "dataspace");
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(space) != 2) fail("{}: tensor '{}': dataset is not 2-D", path, name);
  H5Sget_simple_extent_dims(space, dims, nullptr);
  DatasetRead r;
  r.bytes.rows = static_cast<int64_t>(dims[0]);
  r.bytes.row_bytes = static_cast<int64_t>(dims[1]);
  if (dims[1] != 0 && dims[0] > UINT64_MAX / dims[1]) fail("{}: tensor '{}': impossible dimensions; the shard is damaged", path, name);
  // Whole chunks are stored (the last may pass the edge), so storage is at least the data.
  if (H5Dget_storage_size(ds) < dims[0] * dims[1]) {
    fail("{}: tensor '{}': {} x {} bytes declared, {} stored; the shard is damaged, rerun ranklm-repack for this rank",
         path, name, dims[0], dims[1], H5Dget_storage_size(ds));
  }
  r.bytes.data.resize(dims[0] * dims[1]);
  if (H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, r.bytes.data.data()) < 0) {
    fail("{}: tensor '{}': data could not be read; the shard is damaged, rerun ranklm-repack for "
         "this rank", path, name);
  }
  if (Fnv1a64x4::of(r.bytes.data.data(), r.bytes.data.size()) != read_string_attr(ds, "checksum", path)) {
    fail("{}: tensor '{}': data failed its checksum; the shard is damaged, rerun ranklm-repack for "
         "this rank", path, name);
  }
  auto read_int = [&](const char* a) { return root_int(ds, a, path); };
  auto read_ints = [&](const char* a) { return read_ints_attr(ds, a, path); };
  r.full_ne = read_ints("shape");
  r.bytes.ne = read_ints("slice_shape");
  r.slice.dim = static_cast<int>(read_int("slice_dim"));
  r.slice.begin = read_int("slice_begin");
  r.slice.end = read_int("slice_end");
  if (r.slice.dim < 0) r.slice = {};
  r.type = read_string_attr(ds, "ggml_type", path);
  return r;
}

}  // namespace

DatasetRead read_dataset(const std::string& path, const std::string& name) {
  quiet_hdf5();
  H5 file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, "opening " + path);
  return read_dataset_in(file, path, name);
}

namespace {

std::string root_string(hid_t file, const char* name, const std::string& path) {
  return read_string_attr(file, name, path);
}

hid_t open_shard_file(const std::string& path, int rank) {
  quiet_hdf5();
  if (!std::filesystem::exists(path)) {
    fail("{}: missing; rerun ranklm-repack for rank {} (--ranks {})", path, rank, rank);
  }
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    fail("{}: cannot be read as an HDF5 file (truncated or damaged); rerun ranklm-repack for rank "
         "{} (--ranks {})", path, rank, rank);
  }
  return f;
}

}  // namespace

std::pair<uint64_t, uint64_t> first_chunk_location(const std::string& path, const std::string& name) {
  H5 file(open_shard_file(path, 0), H5Fclose, path);
  H5 ds(open_tensor(file, path, name), H5Dclose, name);
  H5 space(H5Dget_space(ds), H5Sclose, "dataspace");
  hsize_t offset[2] = {0, 0};
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  check(H5Dget_chunk_info(ds, space, 0, offset, &mask, &addr, &size), "chunk info of " + name);
  return {static_cast<uint64_t>(addr), static_cast<uint64_t>(size)};
}

std::string describe_shard(const std::string& path) {
  quiet_hdf5();
  if (!std::filesystem::exists(path)) fail("{}: no such file", path);
  const hid_t fid = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (fid < 0) fail("{}: cannot be read as an HDF5 file (truncated or damaged?)", path);
  H5 file(fid, H5Fclose, path);
  std::string out = fmt::format("shard: {}\nformat: {} version {}\n", path, root_string(file, "format", path),
                                root_int(file, "format_version", path));
  out += fmt::format("rank {} of {}: stage {}, TP index {} of {}\n", root_int(file, "rank", path),
                     root_int(file, "world_size", path), root_int(file, "stage", path),
                     root_int(file, "tp_index", path), root_int(file, "tp_size", path));
  out += fmt::format("model: {} ({}), model hash {}, plan hash {}\n", root_string(file, "model_name", path),
                     root_string(file, "architecture", path), root_string(file, "model_hash", path),
                     root_string(file, "plan_hash", path));
  H5 group(H5Gopen2(file, "tensors", H5P_DEFAULT), H5Gclose, "group tensors");
  H5G_info_t info;
  check(H5Gget_info(group, &info), "tensor list");
  out += fmt::format("\ntensors ({}):\n  {:<36} {:<6} {:<18} {:<22} {:>12}\n", info.nlinks, "name", "type",
                     "full shape", "slice", "bytes");
  uint64_t total = 0;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string name(static_cast<size_t>(std::max<ssize_t>(n, 0)) + 1, '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(std::max<ssize_t>(n, 0)));
    const DatasetRead d = read_dataset_in(file, path, name);
    std::string shape, slice = "whole";
    for (size_t k = 0; k < d.full_ne.size(); ++k) shape += (k ? " x " : "") + std::to_string(d.full_ne[k]);
    if (d.slice.dim >= 0) {
      slice = fmt::format("{} [{}, {})", d.slice.dim == 0 ? "cols" : "rows", d.slice.begin, d.slice.end);
    }
    const uint64_t bytes = d.bytes.data.size();
    total += bytes;
    out += fmt::format("  {:<36} {:<6} {:<18} {:<22} {:>12}\n", name, d.type, shape, slice, bytes);
  }
  out += fmt::format("  total tensor bytes: {}\n", total);
  return out;
}

ShardHeader check_shard(const std::string& dir, int rank, int world_size) {
  const std::string mpath = dir + "/manifest.json";
  if (!std::filesystem::exists(mpath)) fail("{}: missing; is {} the output directory of ranklm-repack?", mpath, dir);
  const nlohmann::json manifest = read_json_file(mpath, "the manifest");
  if (!manifest.is_object() || !manifest.contains("plan_hash") || !manifest["plan_hash"].is_string()) {
    fail("{}: not a ranklm-repack manifest (no 'plan_hash')", mpath);
  }
  const std::string path = dir + "/" + shard_name(rank);
  H5 file(open_shard_file(path, rank), H5Fclose, path);
  ShardHeader h;
  if (root_string(file, "format", path) != "ranklm-shard") fail("{}: not a ranklm shard", path);
  h.format_version = root_int(file, "format_version", path);
  if (h.format_version != kShardFormatVersion) {
    fail("{}: shard format version {} (this build reads version {}); rerun ranklm-repack with this "
         "build", path, h.format_version, kShardFormatVersion);
  }
  h.rank = root_int(file, "rank", path);
  h.world_size = root_int(file, "world_size", path);
  h.stage = root_int(file, "stage", path);
  h.tp_index = root_int(file, "tp_index", path);
  h.tp_size = root_int(file, "tp_size", path);
  h.plan_hash = root_string(file, "plan_hash", path);
  h.model_hash = root_string(file, "model_hash", path);
  h.plan_json = root_string(file, "plan", path);
  if (h.world_size != world_size) {
    fail("{}: shards were made for {} ranks, this job has {}: rerun ranklm plan and ranklm-repack "
         "for {} ranks (or start the job with {})", path, h.world_size, world_size, world_size, h.world_size);
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
std::vector<uint8_t> read_header(hid_t file, const std::string& path, const ShardHeader& h) {
  std::vector<uint8_t> header;
  const hid_t id = H5Dopen2(file, "gguf_header", H5P_DEFAULT);
  if (id < 0) fail("{}: dataset 'gguf_header' missing", path);
  H5 ds(id, H5Dclose, "gguf_header");
  H5 space(H5Dget_space(ds), H5Sclose, "dataspace");
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n < 0 || n > (hssize_t{256} << 20) || H5Dget_storage_size(ds) < static_cast<hsize_t>(n)) {
    fail("{}: 'gguf_header' is damaged ({} bytes declared, {} stored); rerun ranklm-repack", path, n, H5Dget_storage_size(ds));
  }
  header.resize(static_cast<size_t>(n));
  if (H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, header.data()) < 0 ||
      Fnv1a64x4::of(header.data(), header.size()) != read_string_attr(ds, "checksum", path)) {
    fail("{}: 'gguf_header' failed its checksum; the shard is damaged, rerun ranklm-repack", path);
  }
  if (plan::fnv1a64_hex(header.data(), header.size()) != h.model_hash) {
    fail("{}: the stored GGUF header does not match the shard's model hash; rerun ranklm-repack", path);
  }
  return header;
}

// Reads tensor `name` of an open shard into dst (exactly `bytes` bytes), checking its checksum.
void read_tensor_into(hid_t file, const std::string& path, const std::string& name, uint8_t* dst, size_t bytes) {
  H5 ds(open_tensor(file, path, name), H5Dclose, name);
  H5 space(H5Dget_space(ds), H5Sclose, "dataspace of " + name);
  if (static_cast<size_t>(H5Sget_simple_extent_npoints(space)) != bytes) {
    fail("{}: tensor '{}' holds {} bytes, its attributes say {}; the shard is damaged, rerun ranklm-repack",
         path, name, H5Sget_simple_extent_npoints(space), bytes);
  }
  if (H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
    fail("{}: tensor '{}': its data cannot be read (damaged file?); rerun ranklm-repack", path, name);
  }
  if (Fnv1a64x4::of(dst, bytes) != read_string_attr(ds, "checksum", path)) {
    fail("{}: tensor '{}': data failed its checksum; the shard is damaged, rerun ranklm-repack for "
         "this rank", path, name);
  }
}

}  // namespace

RankFile load_rank_file(const std::string& dir, int rank, int world_size) {
  RankFile out;
  out.header = check_shard(dir, rank, world_size);
  const std::string path = dir + "/" + shard_name(rank);
  out.plan = plan::from_json(parse_json_bounded(out.header.plan_json, path + ": attribute 'plan'"), path + ": attribute 'plan'");
  H5 file(open_shard_file(path, rank), H5Fclose, path);
  out.model = gguf::File::header_only(path, read_header(file, path, out.header));
  // This rank's tensors in GGUF order, with their stored (sliced) shapes, under the model's
  // metadata: a GGUF image of just this part.
  gguf::Writer w(out.model->alignment());
  for (const auto& [k, v] : out.model->metadata()) {
    if (k != "general.alignment") w.set(k, v);
  }
  std::vector<std::string> names;
  for (const gguf::TensorInfo& t : out.model->tensors()) {
    const std::string full = "tensors/" + t.name;
    if (H5Lexists(file, full.c_str(), H5P_DEFAULT) <= 0) continue;
    H5 ds(open_tensor(file, path, t.name), H5Dclose, t.name);
    std::vector<int64_t> slice = read_ints_attr(ds, "slice_shape", path);
    // A slice is the tensor cut along one dimension: as many dimensions, none larger.
    bool fits = slice.size() == t.ne.size();
    for (size_t k = 0; fits && k < slice.size(); ++k) fits = slice[k] >= 1 && slice[k] <= t.ne[k];
    if (!fits) fail("{}: tensor '{}': attribute 'slice_shape' does not fit the tensor's shape; the shard is damaged", path, t.name);
    w.add_tensor(t.name, std::move(slice), t.type);
    names.push_back(t.name);
  }
  if (names.empty()) fail("{}: holds no tensors; rerun ranklm-repack for rank {}", path, rank);
  // The image lives in anonymous memory, so the pages of tensors the model repacks can be
  // given back after packing (as for a mapped GGUF) and nothing is zeroed up front.
  const std::vector<uint8_t> header = w.header();
  auto image = MappedFile::anonymous(path, header.size() + w.data_size());
  std::memcpy(image->mutable_data(), header.data(), header.size());
  for (size_t i = 0; i < names.size(); ++i) {
    read_tensor_into(file, path, names[i], image->mutable_data() + header.size() + w.tensor_offset(i), w.tensor_bytes(i));
  }
  out.file = gguf::File::from_mapped(std::move(image));
  return out;
}

std::unique_ptr<gguf::File> load_single_rank_model(const std::string& dir) {
  const ShardHeader h = check_shard(dir, 0, 1);
  const std::string path = dir + "/" + shard_name(0);
  // One open of the file for the header, its size and every tensor.
  H5 file(open_shard_file(path, 0), H5Fclose, path);
  const std::vector<uint8_t> header = read_header(file, path, h);
  const int64_t file_size = root_int(file, "gguf_file_size", path);
  if (file_size < static_cast<int64_t>(header.size())) fail("{}: 'gguf_file_size' {} is smaller than the header", path, file_size);
  // The image: the header, then (untouched, zero) pages where the data goes; parsed once
  // (which checks every tensor's place against the size), then each tensor's bytes are read
  // into their place. The image is memory this process owns, so filling it after parsing is
  // safe.
  auto image = MappedFile::anonymous(path, static_cast<size_t>(file_size));
  std::memcpy(image->mutable_data(), header.data(), header.size());
  auto model = gguf::File::from_mapped(std::move(image));
  for (const gguf::TensorInfo& t : model->tensors()) {
    H5 ds(open_tensor(file, path, t.name), H5Dclose, t.name);
    if (root_int(ds, "slice_dim", path) >= 0) {
      fail("{}: tensor '{}' is a slice; a single-rank load needs whole tensors (use a 1-rank plan)", path, t.name);
    }
    read_tensor_into(file, path, t.name, const_cast<uint8_t*>(t.data), t.n_bytes);
  }
  return model;
}

}  // namespace ranklm::shard
