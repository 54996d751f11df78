#include "io/h5.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "util/checksum.h"
#include "util/error.h"
#include "util/rows.h"

namespace ranklm::h5 {

static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is a 64-bit id (HDF5 1.10 or later)");

namespace {

// A transient HDF5 id closed on scope exit.
class Id {
 public:
  Id(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
    if (id_ < 0) fail("HDF5: {} failed", what);
  }
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
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

}  // namespace

struct Node::Handle {
  hid_t id = -1;
  herr_t (*close)(hid_t) = nullptr;
  Handle(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id >= 0) close(id);
  }
};

Node::Node(std::shared_ptr<Handle> h, std::string path, std::string name, std::string hint)
    : h_(std::move(h)), path_(std::move(path)), name_(std::move(name)), hint_(std::move(hint)) {}

int64_t Node::id() const {
  if (!h_) fail("HDF5: use of an unopened object (a bug)");
  return h_->id;
}

void Node::damaged(const std::string& what) const {
  const std::string where = name_.empty() ? path_ : fmt::format("{}: {}", path_, name_);
  if (hint_.empty()) fail("{}: {}", where, what);
  fail("{}: {}; {}", where, what, hint_);
}

Node Node::create_file(const std::string& path) {
  quiet_hdf5();
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) fail("HDF5: creating {} failed", path);
  return Node(std::make_shared<Handle>(f, H5Fclose), path, "", "");
}

Node Node::open_file(const std::string& path, const std::string& hint) {
  quiet_hdf5();
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) fail("{}: cannot be read as an HDF5 file (truncated or damaged); {}", path, hint);
  return Node(std::make_shared<Handle>(f, H5Fclose), path, "", hint);
}

Node Node::create_group(const std::string& name) {
  Id gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose, "group properties");
  check(H5Pset_obj_track_times(gcpl, false), "time tracking of group " + name);
  const hid_t g = H5Gcreate2(id(), name.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT);
  if (g < 0) fail("HDF5: creating group '{}' in {} failed", name, path_);
  return Node(std::make_shared<Handle>(g, H5Gclose), path_, name, hint_);
}

Node Node::open_group(const std::string& name) const {
  if (!has_link(name)) damaged(fmt::format("group '{}' missing", name));
  const hid_t g = H5Gopen2(id(), name.c_str(), H5P_DEFAULT);
  if (g < 0) damaged(fmt::format("group '{}' cannot be opened", name));
  return Node(std::make_shared<Handle>(g, H5Gclose), path_, name, hint_);
}

bool Node::has_link(const std::string& link) const {
  // Every group on the way must exist before H5Lexists may be asked about the last name.
  size_t at = 0;
  for (;;) {
    const size_t slash = link.find('/', at);
    const std::string prefix = link.substr(0, slash);
    if (H5Lexists(id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) return true;
    at = slash + 1;
  }
}

Node Node::open_dataset(const std::string& link) const {
  if (!has_link(link)) damaged(fmt::format("no dataset '{}'", link));
  const hid_t d = H5Dopen2(id(), link.c_str(), H5P_DEFAULT);
  if (d < 0) damaged(fmt::format("dataset '{}' cannot be opened", link));
  return Node(std::make_shared<Handle>(d, H5Dclose), path_, link, hint_);
}

std::vector<std::string> Node::link_names() const {
  H5G_info_t info;
  check(H5Gget_info(id(), &info), "listing " + name_);
  if (info.nlinks > (hsize_t{1} << 20)) damaged(fmt::format("{} entries, more than 1 Mi", info.nlinks));
  std::vector<std::string> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0 || n > 4096) damaged("an entry's name cannot be read");
    std::string name(static_cast<size_t>(n) + 1, '\0');
    H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(n));
    out.push_back(std::move(name));
  }
  return out;
}

int64_t chunk_rows_for(int64_t rows, int64_t row_bytes) {
  const int64_t bytes = rows * row_bytes;
  const int64_t n_chunks = std::max<int64_t>(1, (bytes + (int64_t{1} << 20) - 1) >> 20);
  return std::max<int64_t>(1, (rows + n_chunks - 1) / n_chunks);
}

Node Node::create_bytes_dataset(const std::string& name, int64_t rows, int64_t row_bytes) {
  const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(row_bytes)};
  Id space(H5Screate_simple(2, dims, nullptr), H5Sclose, "dataspace of " + name);
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "dataset properties");
  const hsize_t chunk[2] = {static_cast<hsize_t>(chunk_rows_for(rows, row_bytes)), static_cast<hsize_t>(row_bytes)};
  check(H5Pset_chunk(dcpl, 2, chunk), "chunking of " + name);
  check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "fill time of " + name);
  check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_INCR), "allocation time of " + name);
  check(H5Pset_obj_track_times(dcpl, false), "time tracking of " + name);  // reproducible files
  const hid_t ds = H5Dcreate2(id(), name.c_str(), H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) fail("HDF5: creating dataset '{}' in {} failed", name, path_);
  return Node(std::make_shared<Handle>(ds, H5Dclose), path_, name, hint_);
}

void Node::flush() { check(H5Fflush(id(), H5F_SCOPE_GLOBAL), "flushing " + path_); }

// Each chunk is hashed just before it goes out, while it is in cache; rows that are not
// contiguous are gathered into one reused chunk buffer. The last chunk is padded to the full
// chunk size, as HDF5 stores edge chunks. H5Dwrite_chunk skips HDF5's chunk cache.
std::string Node::write_bytes(const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t stride) {
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
    check(H5Dwrite_chunk(id(), H5P_DEFAULT, 0, offset, chunk_bytes, p), "writing " + name_);
  }
  return h.hex();
}

std::vector<int64_t> Node::dims() const {
  Id space(H5Dget_space(id()), H5Sclose, "dataspace of " + name_);
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd < 0 || nd > 8) damaged(fmt::format("{} dimensions", nd));
  hsize_t d[8] = {};
  H5Sget_simple_extent_dims(space, d, nullptr);
  std::vector<int64_t> out;
  for (int i = 0; i < nd; ++i) {
    if (d[i] > static_cast<hsize_t>(INT64_MAX)) damaged("impossible dimensions");
    out.push_back(static_cast<int64_t>(d[i]));
  }
  return out;
}

int64_t Node::n_elements() const {
  Id space(H5Dget_space(id()), H5Sclose, "dataspace of " + name_);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n < 0) damaged("its size cannot be read");
  return static_cast<int64_t>(n);
}

uint64_t Node::storage_size() const { return H5Dget_storage_size(id()); }

void Node::read_bytes(uint8_t* dst, size_t n) const {
  if (static_cast<uint64_t>(n_elements()) != n) damaged(fmt::format("holds {} bytes, {} expected", n_elements(), n));
  // Whole chunks are stored (the last may pass the edge), so storage is at least the data.
  if (storage_size() < n) damaged(fmt::format("{} bytes declared, {} stored", n, storage_size()));
  if (n > 0 && H5Dread(id(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) damaged("its data cannot be read");
}

std::pair<uint64_t, uint64_t> Node::first_chunk() const {
  Id space(H5Dget_space(id()), H5Sclose, "dataspace of " + name_);
  hsize_t offset[2] = {0, 0};
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  check(H5Dget_chunk_info(id(), space, 0, offset, &mask, &addr, &size), "chunk info of " + name_);
  return {static_cast<uint64_t>(addr), static_cast<uint64_t>(size)};
}

void Node::set_int(const char* name, int64_t v) {
  Id space(H5Screate(H5S_SCALAR), H5Sclose, "dataspace");
  Id a(H5Acreate2(id(), name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, H5T_NATIVE_INT64, &v), name);
}

void Node::set_ints(const char* name, const std::vector<int64_t>& v) {
  const hsize_t n = v.size();
  Id space(H5Screate_simple(1, &n, nullptr), H5Sclose, "dataspace");
  Id a(H5Acreate2(id(), name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, H5T_NATIVE_INT64, v.data()), name);
}

void Node::set_double(const char* name, double v) {
  Id space(H5Screate(H5S_SCALAR), H5Sclose, "dataspace");
  Id a(H5Acreate2(id(), name, H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, H5T_NATIVE_DOUBLE, &v), name);
}

void Node::set_string(const char* name, const std::string& v) {
  Id type(H5Tcopy(H5T_C_S1), H5Tclose, "string type");
  check(H5Tset_size(type, v.empty() ? 1 : v.size()), "string size");
  check(H5Tset_cset(type, H5T_CSET_UTF8), "string charset");
  Id space(H5Screate(H5S_SCALAR), H5Sclose, "dataspace");
  Id a(H5Acreate2(id(), name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, name);
  check(H5Awrite(a, type, v.empty() ? "" : v.data()), name);
}

bool Node::has_attr(const char* name) const { return H5Aexists(id(), name) > 0; }

int64_t Node::get_int(const char* name) const {
  if (!has_attr(name)) damaged(fmt::format("attribute '{}' missing", name));
  Id at(H5Aopen(id(), name, H5P_DEFAULT), H5Aclose, name);
  // One integer: an attribute of another shape or type would be read past `v`.
  Id space(H5Aget_space(at), H5Sclose, name);
  Id ty(H5Aget_type(at), H5Tclose, name);
  if (H5Sget_simple_extent_npoints(space) != 1 || H5Tget_class(ty) != H5T_INTEGER) {
    damaged(fmt::format("attribute '{}' is not one integer", name));
  }
  int64_t v = 0;
  check(H5Aread(at, H5T_NATIVE_INT64, &v), name);
  return v;
}

std::vector<int64_t> Node::get_ints(const char* name) const {
  if (!has_attr(name)) damaged(fmt::format("attribute '{}' missing", name));
  Id at(H5Aopen(id(), name, H5P_DEFAULT), H5Aclose, name);
  Id space(H5Aget_space(at), H5Sclose, name);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  Id ty(H5Aget_type(at), H5Tclose, name);
  if (n < 0 || n > (hssize_t{1} << 20) || H5Tget_class(ty) != H5T_INTEGER) {
    damaged(fmt::format("attribute '{}' is not a list of at most 1 Mi integers ({} values)", name, n));
  }
  std::vector<int64_t> v(static_cast<size_t>(n));
  if (n > 0) check(H5Aread(at, H5T_NATIVE_INT64, v.data()), name);
  return v;
}

std::string Node::get_string(const char* name) const {
  if (!has_attr(name)) damaged(fmt::format("attribute '{}' missing", name));
  Id at(H5Aopen(id(), name, H5P_DEFAULT), H5Aclose, name);
  Id ty(H5Aget_type(at), H5Tclose, name);
  Id space(H5Aget_space(at), H5Sclose, name);
  const size_t size = H5Tget_size(ty);
  if (H5Tget_class(ty) != H5T_STRING || H5Tis_variable_str(ty) != 0 || size == 0 || size > (size_t{256} << 20) ||
      H5Sget_simple_extent_npoints(space) != 1) {
    damaged(fmt::format("attribute '{}' is not one fixed-length string of at most 256 MiB", name));
  }
  std::string s(size, '\0');
  check(H5Aread(at, ty, s.data()), name);
  return s.c_str();
}

}  // namespace ranklm::h5
