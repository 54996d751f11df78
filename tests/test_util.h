// Shared helpers for tests: fixture paths and deterministic random data.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "plan/plan.h"

namespace ranklm::test {

// The identity of a TinyLlama-1.1B-shaped model (22 layers unless given), for plan tests.
inline plan::ModelIdentity tinyllama_identity(int64_t layers = 22) {
  plan::ModelIdentity m;
  m.name = "TinyLlama";
  m.arch = "llama";
  m.n_layer = layers;
  m.n_head = 32;
  m.n_head_kv = 4;
  m.n_embd = 2048;
  m.n_ff = 5632;
  m.n_vocab = 32000;
  m.gguf_hash = "0123456789abcdef";
  return m;
}

// Its tensor-parallel shape (block sizes left at 32).
inline plan::TpShape tinyllama_tp_shape() {
  plan::TpShape s;
  s.n_embd = 2048;
  s.n_head = 32;
  s.n_head_kv = 4;
  s.head_dim = 64;
  s.n_ff = 5632;
  return s;
}

// The fixtures: RANKLM_FIXTURES_DIR as configured, or $RANKLM_TEST_FIXTURES (the test that
// lists cases without fixtures points it at a missing directory).
inline std::string fixtures_dir() {
  const char* e = std::getenv("RANKLM_TEST_FIXTURES");
  return e && *e ? e : RANKLM_FIXTURES_DIR;
}

// Every fixture GGUF, sorted.
// Every fixture GGUF: models/ (llama, qwen2) and new-arch/ (qwen3, gemma3).
inline std::vector<std::string> fixture_models(std::initializer_list<const char*> dirs = {"/models", "/new-arch"}) {
  std::vector<std::string> out;
  for (const char* dir : dirs) {
    if (!std::filesystem::is_directory(fixtures_dir() + dir)) continue;  // no fixtures: no cases
    for (const auto& e : std::filesystem::directory_iterator(fixtures_dir() + dir)) {
      if (e.path().extension() == ".gguf") out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A stage split written for 4 layers, stretched to n_layer by growing its largest stage (the
// fixtures have 4 layers, the gemma3 ones 6: {2, 1, 1} becomes {4, 1, 1}, whose last stages
// hold a windowed and a global layer). Empty stays empty (an even split).
inline std::vector<int64_t> stretch_layers(std::vector<int64_t> split, int64_t n_layer) {
  if (split.empty()) return split;
  int64_t sum = 0;
  size_t big = 0;
  for (size_t i = 0; i < split.size(); ++i) {
    sum += split[i];
    if (split[i] > split[big]) big = i;
  }
  split[big] += n_layer - sum;
  return split;
}

// A fresh directory, removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("ranklm-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline std::string fixture(const std::string& rel) { return fixtures_dir() + "/" + rel; }

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The message of the ranklm::Error `f` throws, or "" when it throws none.
template <typename ErrorT>
std::string error_message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ErrorT& e) {
    return e.what();
  }
  return "";
}

// Normal random floats (never all zeros).
inline std::vector<float> random_floats(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace ranklm::test
