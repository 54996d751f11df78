// Shared helpers for tests: fixture paths and deterministic random data.
#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace ranklm::test {

inline std::string fixtures_dir() { return RANKLM_FIXTURES_DIR; }
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
