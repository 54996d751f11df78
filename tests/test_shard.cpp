// HDF5 shards: for every fixture model and plans of 1 to 4 ranks (PP only, TP only, both,
// uneven layer splits), the shards' slices put back together give every GGUF tensor byte for
// byte; replicated copies are identical; files are complete (no .partial left).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "shard/shard.h"
#include "plan/identity.h"
#include "plan/plan.h"
#include "test_util.h"
#include "util/checksum.h"
#include "util/error.h"

using namespace ranklm;
namespace fs = std::filesystem;

namespace {

struct PlanCase {
  const char* label;
  int ranks, pp, tp;
  std::vector<int64_t> layers;
};

using test::fixture_models;
using test::TempDir;

// Puts shard datasets back into the GGUF layout and compares with the file.
void expect_reassembles(const gguf::File& f, const plan::Plan& p, const std::string& dir, const std::string& label) {
  std::map<std::string, std::vector<uint8_t>> rebuilt;
  std::map<std::string, std::vector<int>> covered;  // per byte: how many shards wrote it
  for (int r = 0; r < p.world_size; ++r) {
    const std::string path = dir + "/" + shard::shard_name(r);
    ASSERT_TRUE(fs::exists(path)) << label << " " << path;
    ASSERT_FALSE(fs::exists(path + ".partial")) << label;
    for (const shard::Part& part : shard::rank_parts(f, p, r)) {
      const gguf::TensorInfo& t = *part.tensor;
      const shard::DatasetRead d = shard::read_dataset(path, t.name);
      ASSERT_EQ(d.full_ne, t.ne) << label << " " << t.name;
      ASSERT_EQ(d.type, std::string(kern::type_name(t.type))) << label << " " << t.name;
      auto& buf = rebuilt[t.name];
      auto& cov = covered[t.name];
      if (buf.empty()) {
        buf.assign(t.n_bytes, 0);
        cov.assign(t.n_bytes, 0);
      }
      const kern::TypeTraits& tt = kern::traits(t.type);
      const int64_t full_row = t.ne[0] / tt.block_size * static_cast<int64_t>(tt.type_size);
      for (int64_t row = 0; row < d.bytes.rows; ++row) {
        int64_t dst_row = row, dst_col = 0;
        if (d.slice.dim == 1) dst_row = d.slice.begin + row;
        if (d.slice.dim == 0) dst_col = d.slice.begin / tt.block_size * static_cast<int64_t>(tt.type_size);
        for (int64_t b = 0; b < d.bytes.row_bytes; ++b) {
          const size_t at = static_cast<size_t>(dst_row * full_row + dst_col + b);
          const uint8_t v = d.bytes.data[static_cast<size_t>(row * d.bytes.row_bytes + b)];
          if (cov[at]++ > 0) {
            ASSERT_EQ(buf[at], v) << label << " " << t.name << ": replicated copies differ";
          }
          buf[at] = v;
        }
      }
    }
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    ASSERT_TRUE(rebuilt.count(t.name)) << label << ": no shard holds " << t.name;
    const auto& cov = covered[t.name];
    for (size_t i = 0; i < cov.size(); ++i) ASSERT_GT(cov[i], 0) << label << " " << t.name << " byte " << i;
    ASSERT_EQ(0, std::memcmp(rebuilt[t.name].data(), t.data, t.n_bytes)) << label << " " << t.name;
  }
}

}  // namespace

TEST(Shard, EveryFixtureAndPlanReassemblesByteForByte) {
  const std::vector<PlanCase> cases = {
      {"1 rank", 1, 1, 1, {}},
      {"PP 2", 2, 2, 1, {}},
      {"TP 2", 2, 1, 2, {}},
      {"PP 3 uneven", 3, 3, 1, {2, 1, 1}},
      {"PP 2 x TP 2, uneven", 4, 2, 2, {3, 1}},
      {"TP 4", 4, 1, 4, {}},
  };
  int written = 0, refused = 0;
  for (const std::string& model : fixture_models()) {
    auto f = gguf::File::open(model);
    const plan::ModelIdentity id = plan::model_identity(*f);
    for (const PlanCase& c : cases) {
      const std::string label = fs::path(model).filename().string() + " " + c.label;
      plan::Plan p;
      try {
        p = plan::make_plan(id, c.ranks, c.pp, c.tp, test::stretch_layers(c.layers, id.n_layer));
        plan::check_tp_slicing(*f, p);
      } catch (const Error& e) {
        // Only TP sizes that the model's head or block counts rule out may be refused.
        EXPECT_GT(c.tp, 1) << label << ": " << e.what();
        ++refused;
        continue;
      }
      TempDir dir;
      for (int r = 0; r < p.world_size; ++r) shard::write_shard(*f, p, r, dir.str());
      expect_reassembles(*f, p, dir.str(), label);
      ++written;
    }
  }
  EXPECT_GE(written, 16 * 4);  // every fixture at least with 1 rank and the PP plans
  std::printf("plans written: %d, refused: %d\n", written, refused);
}

namespace {

std::string error_of(const std::function<void()>& f) { return test::error_message_of<Error>(f); }

void repack_all(const gguf::File& f, const plan::Plan& p, const std::string& dir) {
  for (int r = 0; r < p.world_size; ++r) shard::write_shard(f, p, r, dir);
  // The manifest ranklm-repack writes; the loader checks shards against its plan hash.
  std::ofstream(dir + "/manifest.json") << nlohmann::json{{"plan_hash", plan::plan_hash(p)}, {"plan", plan::to_json(p)}}.dump();
}

}  // namespace

TEST(Shard, OneRankShardHoldsTheGgufHeaderAndEveryTensorByteForByte) {
  for (const std::string& model : fixture_models()) {
    auto f = gguf::File::open(model);
    const plan::Plan p = plan::make_plan(plan::model_identity(*f), 1, 0, 0, {});
    TempDir dir;
    repack_all(*f, p, dir.str());
    const shard::RankFile rf = shard::load_rank_file(dir.str(), 0, 1);
    // The header, metadata and tensor table as the source had them.
    ASSERT_EQ(rf.model->data_offset(), f->data_offset()) << model;
    EXPECT_EQ(0, std::memcmp(rf.model->bytes(), f->bytes(), f->data_offset())) << model;
    // Every tensor, whole, in the rank's image.
    ASSERT_EQ(rf.file->tensors().size(), f->tensors().size()) << model;
    for (const gguf::TensorInfo& t : f->tensors()) {
      const gguf::TensorInfo& g = rf.file->tensor(t.name);
      ASSERT_EQ(g.n_bytes, t.n_bytes) << model << " " << t.name;
      EXPECT_EQ(0, std::memcmp(g.data, t.data, t.n_bytes)) << model << " " << t.name;
    }
  }
}

TEST(Shard, DamagedWrongAndForeignShardsFailNamingTheProblem) {
  const std::string model = std::string(RANKLM_FIXTURES_DIR) + "/models/tiny-llama-q4_0.gguf";
  auto f = gguf::File::open(model);
  const plan::ModelIdentity id = plan::model_identity(*f);
  const plan::Plan p = plan::make_plan(id, 1, 0, 0, {});
  TempDir dir;
  repack_all(*f, p, dir.str());
  const std::string path = dir.str() + "/" + shard::shard_name(0);
  const std::string pristine = path + ".orig";
  fs::copy_file(path, pristine);

  // One flipped byte in a tensor's stored data: the read of that tensor fails, naming it.
  const std::string victim = "blk.1.ffn_up.weight";
  const auto [addr, size] = shard::first_chunk_location(path, victim);
  ASSERT_GT(size, 0u);
  {
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(addr + size / 2));
    char c = 0;
    io.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    io.seekp(static_cast<std::streamoff>(addr + size / 2));
    io.write(&c, 1);
  }
  std::string e = error_of([&] { shard::load_rank_file(dir.str(), 0, 1); });
  EXPECT_NE(e.find(victim), std::string::npos) << e;
  EXPECT_NE(e.find("checksum"), std::string::npos) << e;

  // Truncated: not readable as HDF5, with what to do.
  fs::copy_file(pristine, path, fs::copy_options::overwrite_existing);
  fs::resize_file(path, fs::file_size(path) / 2);
  e = error_of([&] { shard::check_shard(dir.str(), 0, 1); });
  EXPECT_NE(e.find("truncated or damaged"), std::string::npos) << e;
  EXPECT_NE(e.find("ranklm-repack"), std::string::npos) << e;

  // The wrong rank count for the job.
  fs::copy_file(pristine, path, fs::copy_options::overwrite_existing);
  e = error_of([&] { shard::check_shard(dir.str(), 0, 8); });
  EXPECT_NE(e.find("1 rank planned, 8 started: start the job with mpirun -np 1"), std::string::npos) << e;

  // A shard of another plan (same model, 2 stages) copied in: refused.
  TempDir other;
  const plan::Plan p2 = plan::make_plan(id, 2, 2, 1, {});
  repack_all(*f, p2, other.str());
  fs::copy_file(other.str() + "/" + shard::shard_name(0), path, fs::copy_options::overwrite_existing);
  e = error_of([&] { shard::check_shard(dir.str(), 0, 1); });
  EXPECT_NE(e.find("made for 2 ranks"), std::string::npos) << e;
  // Same world size, different plan: caught by the plan hash.
  TempDir third;
  const plan::Plan p3 = plan::make_plan(id, 2, 2, 1, {3, 1});
  repack_all(*f, p3, third.str());
  fs::copy_file(other.str() + "/" + shard::shard_name(1), third.str() + "/" + shard::shard_name(1),
                fs::copy_options::overwrite_existing);
  e = error_of([&] { shard::check_shard(third.str(), 1, 2); });
  EXPECT_NE(e.find("another plan"), std::string::npos) << e;

  // Missing shard.
  fs::remove(path);
  e = error_of([&] { shard::check_shard(dir.str(), 0, 1); });
  EXPECT_NE(e.find("missing; rerun ranklm-repack for rank 0"), std::string::npos) << e;
}

TEST(Checksum, Fnv1a64x4IsTheSameInAnyPiecesAndSeesEveryByte) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  const std::string whole = Fnv1a64x4::of(data.data(), data.size());
  EXPECT_EQ(whole.size(), 16u);
  for (const size_t piece : {1, 5, 31, 32, 33, 100, 999}) {
    Fnv1a64x4 h;
    for (size_t at = 0; at < data.size(); at += piece) h.update(data.data() + at, std::min(piece, data.size() - at));
    EXPECT_EQ(h.hex(), whole) << piece;
  }
  for (const size_t at : {0, 7, 500, 990, 999}) {  // words and the byte-wise tail
    auto d = data;
    d[at] ^= 1;
    EXPECT_NE(Fnv1a64x4::of(d.data(), d.size()), whole) << at;
  }
  EXPECT_NE(Fnv1a64x4::of(data.data(), 999), whole);  // length matters
}
