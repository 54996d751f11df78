#include "io/shard.h"

#include <hdf5.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "plan/identity.h"
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

// A rows x row_bytes uint8 dataset, chunked (about 1 MiB a chunk) and Fletcher32-checksummed.
hid_t create_bytes_dataset(hid_t parent, const std::string& name, int64_t rows, int64_t row_bytes) {
  const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(row_bytes)};
  H5 space(H5Screate_simple(2, dims, nullptr), H5Sclose, "dataspace of " + name);
  H5 dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "dataset properties");
  // Chunks of about 1 MiB that split the rows evenly (a partial last chunk is stored whole).
  const int64_t bytes = rows * row_bytes;
  const int64_t n_chunks = std::max<int64_t>(1, (bytes + (int64_t{1} << 20) - 1) >> 20);
  const int64_t chunk_rows = std::max<int64_t>(1, (rows + n_chunks - 1) / n_chunks);
  const hsize_t chunk[2] = {static_cast<hsize_t>(chunk_rows), static_cast<hsize_t>(row_bytes)};
  check(H5Pset_chunk(dcpl, 2, chunk), "chunking of " + name);
  check(H5Pset_fletcher32(dcpl), "Fletcher32 filter of " + name);
  const hid_t ds = H5Dcreate2(parent, name.c_str(), H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) fail("HDF5: creating dataset '{}' failed", name);
  return ds;
}

std::string file_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t h = 0xcbf29ce484222325ull;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    for (std::streamsize i = 0; i < n; ++i) {
      h ^= static_cast<uint8_t>(buf[static_cast<size_t>(i)]);
      h *= 0x100000001b3ull;
    }
  }
  return fmt::format("{:016x}", h);
}

}  // namespace

std::string shard_name(int rank) { return fmt::format("rank-{:05d}.h5", rank); }

std::vector<Part> rank_parts(const gguf::File& f, const plan::Plan& p, int rank) {
  const auto [stage, tpi] = p.where(rank);
  const plan::Stage& st = p.stages[stage];
  const plan::TpShape shape = plan::tp_shape(f);
  const plan::TpPart part = plan::tp_part(shape, st.tp(), tpi);
  const bool tied = f.find_tensor("output.weight") == nullptr;
  std::vector<Part> out;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    bool held = false;
    plan::Slice slice;
    if (n.rfind("blk.", 0) == 0) {
      const int64_t layer = std::stoll(n.substr(4, n.find('.', 4) - 4));
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

PartBytes part_bytes(const Part& part) {
  const gguf::TensorInfo& t = *part.tensor;
  const kern::TypeTraits& tt = kern::traits(t.type);
  const int64_t bs = tt.block_size, ts = static_cast<int64_t>(tt.type_size);
  const int64_t cols = t.ne[0];
  int64_t rows = 1;
  for (size_t i = 1; i < t.ne.size(); ++i) rows *= t.ne[i];
  const int64_t full_row = cols / bs * ts;
  PartBytes out;
  out.ne = t.ne;
  const plan::Slice& s = part.slice;
  if (s.dim < 0) {
    out.rows = rows;
    out.row_bytes = full_row;
    out.data.assign(t.data, t.data + rows * full_row);
  } else if (s.dim == 1) {
    out.rows = s.end - s.begin;
    out.row_bytes = full_row;
    out.ne[1] = out.rows;
    out.data.assign(t.data + s.begin * full_row, t.data + s.end * full_row);
  } else {
    if (s.begin % bs != 0 || s.end % bs != 0) {
      fail("tensor '{}': column slice [{}, {}) cuts {}-element blocks", t.name, s.begin, s.end, bs);
    }
    out.rows = rows;
    out.row_bytes = (s.end - s.begin) / bs * ts;
    out.ne[0] = s.end - s.begin;
    out.data.resize(static_cast<size_t>(out.rows * out.row_bytes));
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(out.data.data() + r * out.row_bytes, t.data + r * full_row + s.begin / bs * ts,
                  static_cast<size_t>(out.row_bytes));
    }
  }
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
    attr_string(file, "model_name", p.model.name);
    attr_string(file, "architecture", p.model.arch);
    attr_string(file, "plan", plan::to_json(p).dump());
    // The GGUF header, metadata and tensor table, byte for byte: hyperparameters, tokenizer and
    // chat template exactly as the source file had them. Scalar metadata is repeated as
    // readable attributes of /metadata.
    {
      const int64_t n = static_cast<int64_t>(f.data_offset());
      H5 ds(create_bytes_dataset(file, "gguf_header", 1, n), H5Dclose, "gguf_header");
      check(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, f.bytes()), "writing gguf_header");
    }
    {
      H5 meta(H5Gcreate2(file, "metadata", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, "group metadata");
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
    H5 tensors(H5Gcreate2(file, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, "group tensors");
    for (const Part& pt : parts) {
      const PartBytes b = part_bytes(pt);
      const std::string& name = pt.tensor->name;
      H5 ds(create_bytes_dataset(tensors, name, b.rows, b.row_bytes), H5Dclose, name);
      check(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, b.data.data()), "writing " + name);
      attr_string(ds, "ggml_type", std::string(kern::type_name(pt.tensor->type)));
      attr_int(ds, "ggml_type_id", static_cast<int64_t>(pt.tensor->type));
      attr_ints(ds, "shape", pt.tensor->ne);
      attr_int(ds, "slice_dim", pt.slice.dim);
      attr_int(ds, "slice_begin", pt.slice.dim < 0 ? 0 : pt.slice.begin);
      attr_int(ds, "slice_end", pt.slice.dim < 0 ? pt.tensor->ne[0] : pt.slice.end);
      attr_ints(ds, "slice_shape", b.ne);
      done += b.data.size();
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

DatasetRead read_dataset(const std::string& path, const std::string& name) {
  quiet_hdf5();
  H5 file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, "opening " + path);
  const std::string full = "tensors/" + name;
  const hid_t id = H5Dopen2(file, full.c_str(), H5P_DEFAULT);
  if (id < 0) fail("{}: no tensor '{}' in this shard", path, name);
  H5 ds(id, H5Dclose, name);
  H5 space(H5Dget_space(ds), H5Sclose, "dataspace");
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(space) != 2) fail("{}: tensor '{}': dataset is not 2-D", path, name);
  H5Sget_simple_extent_dims(space, dims, nullptr);
  DatasetRead r;
  r.bytes.rows = static_cast<int64_t>(dims[0]);
  r.bytes.row_bytes = static_cast<int64_t>(dims[1]);
  r.bytes.data.resize(dims[0] * dims[1]);
  if (H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, r.bytes.data.data()) < 0) {
    fail("{}: tensor '{}': data failed its checksum or could not be read; the shard is damaged, "
         "rerun ranklm-repack for this rank", path, name);
  }
  auto read_int = [&](const char* a) {
    H5 at(H5Aopen(ds, a, H5P_DEFAULT), H5Aclose, a);
    int64_t v = 0;
    check(H5Aread(at, H5T_NATIVE_INT64, &v), a);
    return v;
  };
  auto read_ints = [&](const char* a) {
    H5 at(H5Aopen(ds, a, H5P_DEFAULT), H5Aclose, a);
    H5 sp(H5Aget_space(at), H5Sclose, a);
    std::vector<int64_t> v(static_cast<size_t>(H5Sget_simple_extent_npoints(sp)));
    check(H5Aread(at, H5T_NATIVE_INT64, v.data()), a);
    return v;
  };
  r.full_ne = read_ints("shape");
  r.bytes.ne = read_ints("slice_shape");
  r.slice.dim = static_cast<int>(read_int("slice_dim"));
  r.slice.begin = read_int("slice_begin");
  r.slice.end = read_int("slice_end");
  if (r.slice.dim < 0) r.slice = {};
  {
    H5 at(H5Aopen(ds, "ggml_type", H5P_DEFAULT), H5Aclose, "ggml_type");
    H5 ty(H5Aget_type(at), H5Tclose, "type");
    std::string s(H5Tget_size(ty), '\0');
    check(H5Aread(at, ty, s.data()), "ggml_type");
    r.type = s.c_str();
  }
  return r;
}

}  // namespace ranklm::shard
