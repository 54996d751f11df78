// libFuzzer target: the HDF5 shard reader's attributes. A real one-rank shard of a fixture model
// (RANKLM_FUZZ_MODEL) is made once; each input rewrites some of its attributes (root header
// fields, the plan JSON, checksums, tensor shapes and slices, types) with fuzzed strings,
// integers or integer arrays, then the shard is checked, loaded and described as ranklm does.
#include <hdf5.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "shard/shard.h"
#include "plan/identity.h"
#include "plan/plan.h"
#include "util/error.h"

namespace {

std::string g_src, g_dir;  // the pristine shard, the work directory
std::string g_tensor;      // the first tensor's dataset
std::string g_plan;        // the plan attribute as written

const char* const kRoot[] = {"format", "format_version", "rank", "world_size", "stage", "tp_index",
                             "tp_size", "plan_hash", "model_hash", "plan", "model_name", "architecture"};
const char* const kTensor[] = {"checksum", "shape", "slice_shape", "slice_dim", "slice_begin", "slice_end", "ggml_type"};

void put_attr(hid_t obj, const char* name, int kind, const uint8_t* p, size_t n) {
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  if (kind == 0) {  // a fixed-length string
    const hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, n > 0 ? n : 1);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(obj, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    std::string s(reinterpret_cast<const char*>(p), n);
    if (s.empty()) s.push_back('\0');
    if (a >= 0) H5Awrite(a, ty, s.data()), H5Aclose(a);
    H5Sclose(sp), H5Tclose(ty);
    return;
  }
  std::vector<int64_t> v;  // kind 1: one integer; kind 2: an array of them
  for (size_t k = 0; k + 8 <= n || (v.empty() && k < 1); k += 8) {
    int64_t x = 0;
    for (size_t b = 0; b < 8 && k + b < n; ++b) x |= static_cast<int64_t>(p[k + b]) << (8 * b);
    v.push_back(x);
    if (kind == 1) break;
  }
  const hsize_t dims[1] = {v.size()};
  const hid_t sp = kind == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr);
  const hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT);
  if (a >= 0) H5Awrite(a, H5T_NATIVE_INT64, v.data()), H5Aclose(a);
  H5Sclose(sp);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace ranklm;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const char* model = std::getenv("RANKLM_FUZZ_MODEL");
  if (!model) return 0;
  const std::string base = (std::filesystem::temp_directory_path() / ("ranklm-fuzz-shard-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(base + "/src");
  std::filesystem::create_directories(base + "/work");
  auto f = gguf::File::open(model);
  const plan::Plan p = plan::make_plan(plan::model_identity(*f), 1, 1, 1, {});
  shard::write_shard(*f, p, 0, base + "/src");
  for (const char* d : {"/src", "/work"}) {
    std::ofstream(base + d + "/manifest.json") << "{\"plan_hash\": \"" << plan::plan_hash(p) << "\"}";
  }
  g_src = base + "/src/" + shard::shard_name(0);
  g_dir = base + "/work";
  g_tensor = "tensors/" + f->tensors().front().name;
  g_plan = plan::to_json(p).dump();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  if (g_src.empty()) return 0;
  const std::string path = g_dir + "/" + shard::shard_name(0);
  std::filesystem::copy_file(g_src, path, std::filesystem::copy_options::overwrite_existing);
  {
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    if (file < 0) return 0;
    const hid_t tensor = H5Dopen2(file, g_tensor.c_str(), H5P_DEFAULT);
    size_t at = 0;
    while (at + 3 <= size) {
      const uint8_t sel = data[at], kind = data[at + 1] % 3;
      const size_t n = std::min<size_t>(data[at + 2] % 64, size - at - 3);
      const uint8_t* p = data + at + 3;
      at += 3 + n;
      constexpr size_t n_root = sizeof(kRoot) / sizeof(kRoot[0]), n_tensor = sizeof(kTensor) / sizeof(kTensor[0]);
      const size_t k = sel % (n_root + n_tensor + 1);
      if (k < n_root && std::string(kRoot[k]) == "plan" && kind != 0) {
        // Splice the bytes into the real plan JSON: mostly valid JSON with wrong values.
        std::string pj = g_plan;
        const size_t pos = n > 0 ? p[0] % (pj.size() + 1) : 0;
        const std::string ins(reinterpret_cast<const char*>(p) + (n > 0), n > 0 ? n - 1 : 0);
        pj = kind == 1 ? pj.substr(0, pos) + ins + pj.substr(pos) : pj.substr(0, pos) + ins + pj.substr(std::min(pj.size(), pos + ins.size()));
        put_attr(file, "plan", 0, reinterpret_cast<const uint8_t*>(pj.data()), pj.size());
      } else if (k < n_root) {
        put_attr(file, kRoot[k], kind, p, n);
      } else if (k < n_root + n_tensor) {
        if (tensor >= 0) put_attr(tensor, kTensor[k - n_root], kind, p, n);
      } else {
        const hid_t h = H5Dopen2(file, "gguf_header", H5P_DEFAULT);
        if (h >= 0) put_attr(h, "checksum", kind, p, n), H5Dclose(h);
      }
    }
    if (tensor >= 0) H5Dclose(tensor);
    H5Fclose(file);
  }
  try {
    (void)shard::check_shard(g_dir, 0, 1);
  } catch (const Error&) {
  }
  try {
    (void)shard::load_rank_file(g_dir, 0, 1);
  } catch (const Error&) {
  }
  try {
    (void)shard::describe_shard(path);
  } catch (const Error&) {
  }
  return 0;
}
