// Parity ladder step 2: single-rank logits against llama.cpp for every fixture model.
// Tolerances (normalized RMS error per prompt position): 1e-3 f32/f16, 5e-3 bf16, 2e-2 quantized.
// Greedy tokens must agree at every step until the reference's top-1 margin falls inside what the
// logit tolerance allows (margin < 0.05, or < 2 * tol * rms(logits)): such a near-tie may
// legitimately flip, after which the sequences are no longer comparable. The second bound matters
// for quantized files only: there llama.cpp itself, same file and CPU, differs from these
// references by 5e-3..1.6e-2 and flips greedy steps with margins up to 0.10 (tiny-llama-q4_k_m,
// step 7), because float summation order decides some activation-quantization roundings.
// docs/PARITY.md has the measurements and the commands.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/logits_json.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "model/model.h"
#include "test_util.h"

namespace ranklm {
namespace {

double tolerance_for(const std::string& name) {
  if (name.find("-f32") != std::string::npos || name.find("-f16") != std::string::npos) return 1e-3;
  if (name.find("-bf16") != std::string::npos) return 5e-3;
  // The quantized gemma3 fixtures amplify last-bit differences of attention about twice as much
  // as the others: llama.cpp itself, same file and CPU, moves by 3e-2 between its flash and
  // plain attention, and by 1.3e-2 between its AVX-512 and AVX2 builds (docs/PARITY.md). The
  // first prompt position, before any attention over other tokens, agrees to 1e-7.
  if (name.find("gemma3") != std::string::npos) return 4e-2;
  return 2e-2;
}

// "models/<name>", "new-arch/<name>" and "moe/<name>" of every fixture GGUF.
std::vector<std::string> fixture_models() {
  std::vector<std::string> names;
  for (const char* dir : {"models", "new-arch", "moe"}) {
    // Without the fixtures (CMake warned at configure time) there are no cases to list; test
    // discovery at build time must not throw.
    if (!std::filesystem::is_directory(test::fixture(dir))) continue;
    for (const auto& e : std::filesystem::directory_iterator(test::fixture(dir))) {
      if (e.path().extension() == ".gguf") names.push_back(std::string(dir) + "/" + e.path().stem().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// "models/tiny-llama-q4_0" -> "tiny_llama_q4_0" (a test name).
std::string case_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param.substr(info.param.find('/') + 1);
  for (auto& ch : n) if (ch == '-') ch = '_';
  return n;
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, MatchesLlamaCppLogitsAndGreedy) {
  const std::string base = test::fixture(GetParam());
  const auto ref = nlohmann::json::parse(test::read_file(base + ".ref.json"));
  auto file = gguf::File::open(base + ".gguf");
  auto model = Model::load(*file);
  kern::ThreadPool pool(2);
  const auto prompt = ref["prompt"].get<std::vector<int32_t>>();
  const auto ref_greedy = ref["greedy"].get<std::vector<int32_t>>();
  const LogitsReport r = compute_logits_report(*model, prompt, static_cast<int>(ref_greedy.size()), pool);

  ASSERT_EQ(r.n_vocab, ref["n_vocab"].get<int64_t>());
  ASSERT_EQ(r.logits.size(), ref["logits"].size());
  const double tol = tolerance_for(GetParam());
  double ref_rms = 0;
  for (size_t p = 0; p < r.logits.size(); ++p) {
    const auto ref_row = ref["logits"][p].get<std::vector<float>>();
    double err = 0, mag = 0;
    for (size_t i = 0; i < ref_row.size(); ++i) {
      err += std::pow(double(r.logits[p][i]) - ref_row[i], 2);
      mag += double(ref_row[i]) * ref_row[i];
    }
    const double nrmse = std::sqrt(err / mag);
    ref_rms = std::max(ref_rms, std::sqrt(mag / ref_row.size()));
    EXPECT_LT(nrmse, tol) << "position " << p;
  }
  for (size_t s = 0; s < ref_greedy.size(); ++s) {
    const auto& top = ref["greedy_top5"][s];
    const double margin = top[0][1].get<double>() - top[1][1].get<double>();
    if (margin < std::max(0.05, 2.0 * tol * ref_rms)) break;  // near-tie: the sequences may diverge from here
    ASSERT_EQ(r.greedy[s], ref_greedy[s]) << "greedy step " << s << " (reference margin " << margin << ")";
  }
}

// The accuracy judge of quantized files (../shared/fixtures/README.md): the file dequantized to
// F32 and run in f32 is the truth for those weights; ranklm's mean nRMSE to it over the prompt
// positions must be at most 1.25x llama.cpp's (its reference logits for the quantized file).
// Fairer than a fixed tolerance: random fixtures amplify summation-order differences.
void dequantize_to_f32(const std::string& src, const std::string& dst) {
  auto f = gguf::File::open(src);
  gguf::Writer w(f->alignment());
  for (const auto& [k, v] : f->metadata()) {
    if (k != "general.alignment" && k != "general.file_type") w.set(k, v);
  }
  for (const auto& t : f->tensors()) w.add_tensor(t.name, t.ne, kern::GgmlType::F32);
  std::vector<float> cur;
  size_t cur_index = SIZE_MAX;
  w.write(dst, [&](size_t index, uint64_t offset, uint8_t* out, size_t n) {
    const gguf::TensorInfo& t = f->tensors()[index];
    if (index != cur_index) {
      cur.resize(static_cast<size_t>(t.n_elements()));
      kern::traits(t.type).dequantize(t.data, cur.data(), t.n_elements());
      cur_index = index;
    }
    std::memcpy(out, reinterpret_cast<const uint8_t*>(cur.data()) + offset, n);
  });
}

double mean_nrmse(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& truth) {
  double sum = 0;
  for (size_t p = 0; p < truth.size(); ++p) {
    double err = 0, mag = 0;
    for (size_t i = 0; i < truth[p].size(); ++i) {
      err += std::pow(double(a[p][i]) - truth[p][i], 2);
      mag += double(truth[p][i]) * truth[p][i];
    }
    sum += std::sqrt(err / mag);
  }
  return sum / static_cast<double>(truth.size());
}

class AccuracyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AccuracyTest, AtMostAQuarterMoreErrorThanLlamaCppAgainstTheF32Truth) {
  const std::string base = test::fixture(GetParam());
  const auto ref = nlohmann::json::parse(test::read_file(base + ".ref.json"));
  const auto prompt = ref["prompt"].get<std::vector<int32_t>>();
  test::TempDir dir;
  dequantize_to_f32(base + ".gguf", dir.str() + "/truth.gguf");
  kern::ThreadPool pool(2);
  auto logits_of = [&](const std::string& path) {
    auto file = gguf::File::open(path);
    auto model = Model::load(*file);
    return compute_logits_report(*model, prompt, 0, pool).logits;
  };
  const auto truth = logits_of(dir.str() + "/truth.gguf");
  const auto ours = logits_of(base + ".gguf");
  const auto llama = ref["logits"].get<std::vector<std::vector<float>>>();
  const double e_ours = mean_nrmse(ours, truth), e_llama = mean_nrmse(llama, truth);
  RecordProperty("ranklm_nrmse", std::to_string(e_ours));
  RecordProperty("llamacpp_nrmse", std::to_string(e_llama));
  if (getenv("RANKLM_TEST_VERBOSE")) std::printf("%s: ranklm %.4f, llama.cpp %.4f\n", GetParam().c_str(), e_ours, e_llama);
  EXPECT_GT(e_llama, 0.0);
  EXPECT_LE(e_ours, 1.25 * e_llama) << "ranklm " << e_ours << ", llama.cpp " << e_llama << " against the f32 truth";
}

// The quantized fixtures (every file but the f32 / f16 / bf16 ones).
std::vector<std::string> quantized_fixtures() {
  std::vector<std::string> out;
  for (const std::string& n : fixture_models()) {
    if (n.find("-f32") == std::string::npos && n.find("-f16") == std::string::npos && n.find("-bf16") == std::string::npos) {
      out.push_back(n);
    }
  }
  return out;
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(AccuracyTest);
INSTANTIATE_TEST_SUITE_P(Fixtures, AccuracyTest, ::testing::ValuesIn(quantized_fixtures()),
                         case_name);

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ParityTest);
INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(fixture_models()),
                         case_name);

}  // namespace
}  // namespace ranklm
