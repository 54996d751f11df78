// GGUF reader: a valid handcrafted file parses; every corruption gives ranklm::Error naming the
// file and the field, never a crash (this test also runs under ASan/UBSan).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <cmath>
#include <map>
#include <optional>
#include <tuple>

#include "gguf_edit.h"
#include "io/gguf.h"
#include "model/model.h"
#include "test_util.h"
#include "util/error.h"

namespace ranklm {
namespace {

// Minimal GGUF writer for handcrafted files.
struct Writer {
  std::string b;
  template <typename T>
  Writer& pod(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Writer& str(const std::string& s) {
    pod<uint64_t>(s.size());
    b += s;
    return *this;
  }
};

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t offset;
};

// A file with one u32 key, one string key and the given tensors; `data_bytes` of payload.
std::string make_gguf(const std::vector<TensorSpec>& tensors, size_t data_bytes,
                      uint32_t version = 3, uint64_t n_tensors_override = UINT64_MAX,
                      uint64_t n_kv_override = UINT64_MAX) {
  Writer w;
  w.pod<uint32_t>(0x46554747u).pod<uint32_t>(version);
  w.pod<uint64_t>(n_tensors_override != UINT64_MAX ? n_tensors_override : tensors.size());
  w.pod<uint64_t>(n_kv_override != UINT64_MAX ? n_kv_override : 2);
  w.str("general.alignment").pod<uint32_t>(4).pod<uint32_t>(32);
  w.str("general.name").pod<uint32_t>(8).str("handmade");
  for (const auto& t : tensors) {
    w.str(t.name).pod<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (auto d : t.ne) w.pod<uint64_t>(d);
    w.pod<uint32_t>(t.type).pod<uint64_t>(t.offset);
  }
  while (w.b.size() % 32) w.b.push_back(0);
  for (size_t i = 0; i < data_bytes; ++i) w.b.push_back(static_cast<char>(i * 7));
  return w.b;
}

std::string write_tmp(const std::string& bytes, const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "ranklm_test_gguf";
  std::filesystem::create_directories(dir);
  const auto path = (dir / name).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// Opens the file and expects an Error whose one-line message holds every fragment.
void expect_error(const std::string& bytes, const std::string& name,
                  const std::vector<std::string>& fragments) {
  const std::string path = write_tmp(bytes, name);
  try {
    gguf::File::open(path);
    FAIL() << name << ": expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "error must be one line: " << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

const std::vector<TensorSpec> kGood = {
    {"a.weight", {64, 2}, 0, 0},    // F32: 512 bytes
    {"b.weight", {32, 3}, 8, 512},  // Q8_0: 3 blocks * 34 = 102 bytes
};

TEST(Gguf, ParsesHandmadeFile) {
  auto f = gguf::File::open(write_tmp(make_gguf(kGood, 640), "good.gguf"));
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->get_string("general.name"), "handmade");
  ASSERT_EQ(f->tensors().size(), 2u);
  const auto& b = f->tensor("b.weight");
  EXPECT_EQ(b.type, kern::GgmlType::Q8_0);
  EXPECT_EQ(b.n_bytes, 102u);
  EXPECT_EQ(b.n_elements(), 96);
  EXPECT_EQ(b.data - f->tensor("a.weight").data, 512);
}

TEST(Gguf, Version2Accepted) {
  auto f = gguf::File::open(write_tmp(make_gguf(kGood, 640, 2), "v2.gguf"));
  EXPECT_EQ(f->version(), 2u);
}

TEST(Gguf, ReadsEveryFixtureModel) {
  auto f = gguf::File::open(test::fixture("models/tiny-llama-q4_k_m.gguf"));
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 4);
  EXPECT_EQ(f->get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING).arr.size(), 512u);
}

TEST(GgufCorrupt, Empty) { expect_error("", "empty.gguf", {"magic"}); }

TEST(GgufCorrupt, BadMagic) {
  std::string b = make_gguf(kGood, 640);
  b[0] = 'X';
  expect_error(b, "magic.gguf", {"header.magic", "GGUF"});
}

TEST(GgufCorrupt, BadVersion) {
  expect_error(make_gguf(kGood, 640, 7), "version.gguf", {"header.version", "7", "2, 3"});
}

TEST(GgufCorrupt, TruncatedHeader) {
  const std::string b = make_gguf(kGood, 640);
  for (size_t cut : {size_t(6), size_t(20), size_t(40), size_t(90), size_t(150)}) {
    expect_error(b.substr(0, cut), "trunc" + std::to_string(cut) + ".gguf", {"trunc"});
  }
}

TEST(GgufCorrupt, TruncatedData) {
  const std::string b = make_gguf(kGood, 640);
  expect_error(b.substr(0, b.size() - 100), "truncdata.gguf", {"b.weight", "outside"});
}

TEST(GgufCorrupt, HugeTensorCount) {
  expect_error(make_gguf(kGood, 640, 3, uint64_t(1) << 60), "ntensors.gguf", {"header.n_tensors"});
}

TEST(GgufCorrupt, HugeKvCount) {
  expect_error(make_gguf(kGood, 640, 3, UINT64_MAX, uint64_t(1) << 62), "nkv.gguf", {"header.n_kv"});
}

TEST(GgufCorrupt, HugeStringLength) {
  std::string b = make_gguf(kGood, 640);
  // The first key's length field sits right after the 24-byte header.
  const uint64_t huge = uint64_t(1) << 40;
  std::memcpy(&b[24], &huge, 8);
  expect_error(b, "strlen.gguf", {"metadata[0].key", "string length"});
}

TEST(GgufCorrupt, OutOfFileTensor) {
  auto t = kGood;
  t[1].offset = 1 << 20;
  expect_error(make_gguf(t, 640), "outside.gguf", {"b.weight", "outside"});
}

TEST(GgufCorrupt, OverlappingTensors) {
  auto t = kGood;
  t[1].offset = 256;
  expect_error(make_gguf(t, 640), "overlap.gguf", {"overlaps", "a.weight", "b.weight"});
}

TEST(GgufCorrupt, UnknownType) {
  auto t = kGood;
  t[1].type = 99;
  expect_error(make_gguf(t, 640), "type.gguf", {"b.weight", "unknown tensor type id 99"});
}

TEST(GgufCorrupt, PartialBlock) {
  auto t = kGood;
  t[1].ne = {33, 3};
  expect_error(make_gguf(t, 640), "block.gguf", {"b.weight", "ne[0] = 33", "Q8_0"});
}

TEST(GgufCorrupt, MisalignedOffset) {
  auto t = kGood;
  t[1].offset = 516;
  expect_error(make_gguf(t, 640), "align.gguf", {"b.weight", "alignment"});
}

TEST(GgufCorrupt, BadDims) {
  auto t = kGood;
  t[0].ne = {};
  expect_error(make_gguf(t, 640), "ndims0.gguf", {"a.weight", "n_dims 0"});
  t[0].ne = {1, 1, 1, 1, 1};
  expect_error(make_gguf(t, 640), "ndims5.gguf", {"a.weight", "n_dims 5"});
  t = kGood;
  t[0].ne = {64, 0};
  expect_error(make_gguf(t, 640), "ne0.gguf", {"a.weight", "ne[1] = 0"});
}

TEST(GgufCorrupt, DuplicateTensor) {
  auto t = kGood;
  t[1].name = "a.weight";
  expect_error(make_gguf(t, 640), "dup.gguf", {"a.weight", "twice"});
}

TEST(GgufCorrupt, RandomByteFlipsNeverCrash) {
  // Fuzz the header region: each mutated file either parses or throws Error.
  const std::string good = make_gguf(kGood, 640);
  std::mt19937 rng(1234);
  for (int i = 0; i < 300; ++i) {
    std::string b = good;
    const size_t pos = rng() % 200;
    b[pos] = static_cast<char>(rng());
    const std::string path = write_tmp(b, "fuzz.gguf");
    try {
      gguf::File::open(path);
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace ranklm

namespace ranklm {

// ---------- hyperparameters and vocabularies that cannot run ----------

namespace {

// The message of loading the q8_0 fixture with one metadata change (or "" when it loads).
std::string load_edited(const std::map<std::string, std::optional<gguf::Value>>& meta) {
  test::TempDir dir;
  const std::string path = dir.str() + "/edited.gguf";
  test::edit_gguf(test::fixture("models/tiny-llama-q8_0.gguf"), path, meta);
  return test::error_message_of<Error>([&] {
    auto f = gguf::File::open(path);
    Model::load(*f);
  });
}

}  // namespace

TEST(Hyperparameters, ValuesThatGiveNaNLogitsAreRefusedNamingTheKey) {
  ASSERT_EQ(load_edited({}), "");  // the unedited copy loads
  const std::string eps = "llama.attention.layer_norm_rms_epsilon";
  for (const float bad : {std::nanf(""), 0.0f, -1e-5f, 2.0f}) {
    const std::string msg = load_edited({{eps, test::f32_value(bad)}});
    EXPECT_NE(msg.find("metadata '" + eps + "'"), std::string::npos) << bad << ": " << msg;
    EXPECT_NE(msg.find("must be a small positive number"), std::string::npos) << msg;
  }
  for (const float bad : {0.0f, -10000.0f, std::nanf(""), INFINITY}) {
    const std::string msg = load_edited({{"llama.rope.freq_base", test::f32_value(bad)}});
    EXPECT_NE(msg.find("metadata 'llama.rope.freq_base'"), std::string::npos) << bad << ": " << msg;
  }
  const std::string ctx = load_edited({{"llama.context_length", test::u32_value(0)}});
  EXPECT_NE(ctx.find("metadata 'llama.context_length': 0 out of range"), std::string::npos) << ctx;
}

TEST(Hyperparameters, AHeadCountThatDoesNotDivideTheWidthIsBlamedOnHeadCount) {
  auto f = gguf::File::open(test::fixture("models/tiny-llama-q8_0.gguf"));
  const int64_t n_embd = f->get_int("llama.embedding_length");
  const std::string msg = load_edited({{"llama.attention.head_count", test::u32_value(static_cast<uint32_t>(n_embd / 2 + 1))},
                                       {"llama.attention.head_count_kv", test::u32_value(1)}});
  EXPECT_NE(msg.find("metadata 'llama.attention.head_count': " + std::to_string(n_embd / 2 + 1) + " does not divide embedding_length"),
            std::string::npos) << msg;
}

TEST(Hyperparameters, AVocabularyThatDisagreesWithTheEmbeddingIsRefused) {
  auto f = gguf::File::open(test::fixture("models/tiny-llama-q8_0.gguf"));
  gguf::Value tokens = *f->find("tokenizer.ggml.tokens");
  const size_t n = tokens.arr.size();
  gguf::Value fewer = tokens;
  fewer.arr.resize(n / 2);
  gguf::Value more = tokens;
  for (size_t k = 0; k < n; ++k) {
    gguf::Value t = tokens.arr[0];
    t.s = "<extra_" + std::to_string(k) + ">";
    more.arr.push_back(t);
  }
  for (const gguf::Value* v : {&fewer, &more}) {
    std::map<std::string, std::optional<gguf::Value>> meta{{"tokenizer.ggml.tokens", *v}};
    for (const char* key : {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
      if (const gguf::Value* a = f->find(key)) {
        gguf::Value resized = *a;
        resized.arr.resize(v->arr.size(), a->arr.front());
        meta[key] = resized;
      }
    }
    const std::string msg = load_edited(meta);
    EXPECT_NE(msg.find("the vocabulary has " + std::to_string(v->arr.size()) + " tokens (metadata 'tokenizer.ggml.tokens') "
                       "but tensor 'token_embd.weight' has " + std::to_string(n) + " rows"),
              std::string::npos) << msg;
  }
}

}  // namespace ranklm

namespace ranklm {

// ---------- gemma3's sliding-window keys ----------

namespace {

// The hyperparameters of the gemma3 fixture with metadata changes, or the error message.
std::pair<HParams, std::string> gemma3_edited(const std::map<std::string, std::optional<gguf::Value>>& meta) {
  test::TempDir dir;
  const std::string path = dir.str() + "/edited.gguf";
  test::edit_gguf(test::fixture("new-arch/tiny-gemma3-q8_0.gguf"), path, meta);
  HParams hp;
  const std::string msg = test::error_message_of<Error>([&] {
    auto f = gguf::File::open(path);
    hp = read_hparams(*f);
  });
  return {hp, msg};
}

gguf::Value bool_array(std::initializer_list<bool> bits) {
  gguf::Value v;
  v.type = gguf::ValueType::ARRAY;
  v.elem_type = gguf::ValueType::BOOL;
  for (bool b : bits) {
    gguf::Value e;
    e.type = gguf::ValueType::BOOL;
    e.u = b ? 1 : 0;
    v.arr.push_back(e);
  }
  return v;
}

}  // namespace

TEST(Hyperparameters, Gemma3WindowPatternAsLlamaCppReadsIt) {
  const std::string key = "gemma3.attention.sliding_window_pattern";
  // No pattern key: every 6th layer global (the fixture has 6 layers).
  auto [def, e0] = gemma3_edited({});
  ASSERT_EQ(e0, "");
  EXPECT_EQ(def.swa_window, 8);
  EXPECT_EQ(def.swa_layers, (std::vector<uint8_t>{1, 1, 1, 1, 1, 0}));
  EXPECT_FLOAT_EQ(def.rope_base_swa, 10000.0f);
  // A period, 0 (every layer windowed), one boolean per layer.
  EXPECT_EQ(gemma3_edited({{key, test::u32_value(3)}}).first.swa_layers, (std::vector<uint8_t>{1, 1, 0, 1, 1, 0}));
  EXPECT_EQ(gemma3_edited({{key, test::u32_value(0)}}).first.swa_layers, (std::vector<uint8_t>{1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(gemma3_edited({{key, bool_array({true, false, false, true, false, true})}}).first.swa_layers,
            (std::vector<uint8_t>{1, 0, 0, 1, 0, 1}));
  // No window: no windowed layer at all.
  const HParams none = gemma3_edited({{"gemma3.attention.sliding_window", test::u32_value(0)}}).first;
  for (int64_t il = 0; il < none.n_layer; ++il) EXPECT_FALSE(none.windowed(il));
  EXPECT_FLOAT_EQ(gemma3_edited({{"gemma3.rope.freq_base_swa", test::f32_value(5e4f)}}).first.rope_base_swa, 5e4f);
  // Bad values name the key.
  for (const auto& [k, v, what] : std::vector<std::tuple<std::string, gguf::Value, std::string>>{
           {key, bool_array({true, false}), "one per layer"},
           {key, test::u32_value(99), "out of range"},
           {"gemma3.rope.freq_base_swa", test::f32_value(0.0f), "must be a positive number"},
           {"gemma3.final_logit_softcapping", test::f32_value(-1.0f), "must be >= 0"}}) {
    const std::string msg = gemma3_edited({{k, v}}).second;
    EXPECT_NE(msg.find("metadata '" + k + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

TEST(Hyperparameters, AnUnknownArchitectureIsRefusedNamingTheSupportedOnes) {
  test::TempDir dir;
  const std::string path = dir.str() + "/edited.gguf";
  gguf::Value v;
  v.type = gguf::ValueType::STRING;
  v.s = "mamba";
  test::edit_gguf(test::fixture("models/tiny-llama-q8_0.gguf"), path, {{"general.architecture", v}});
  auto f = gguf::File::open(path);
  const std::string msg = test::error_message_of<Error>([&] { read_hparams(*f); });
  EXPECT_NE(msg.find("'mamba' is not supported (supported: llama, qwen2, qwen3, qwen3moe, gemma3)"), std::string::npos) << msg;
}

}  // namespace ranklm
