// ranklm-synth: writes a GGUF with the exact tensor shapes and types of a real model and random
// weights, so speed can be measured at real scale without downloading anything. The output is
// for speed only: its text is noise. Both ranklm and llama.cpp load it (the shape's
// architecture, its tensors from the registry in model/arch.h, a SentencePiece-style vocabulary
// of placeholder pieces).
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "cli/tool_main.h"
#include "io/gguf_writer.h"
#include "kernels/fp16.h"
#include "model/arch.h"
#include "util/error.h"

namespace po = boost::program_options;
using ranklm::kern::GgmlType;

namespace {

struct Shape {
  const char* name;
  const char* label;
  const char* arch;
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;  // head_dim 0: n_embd / n_head
  float rope_base;
  bool tied_output;
  bool llama3_rope;  // Llama 3.1-style frequency factors (factor 32, orig. context 8192)
  int64_t swa_window;  // gemma3: sliding window (every 6th layer global)
  int64_t n_expert, n_expert_used, n_ff_exp;  // mixtures of experts (0: dense)
};

// Hyperparameters as published in each model's config.json.
constexpr Shape kShapes[] = {
    {"tinyllama-1.1b", "TinyLlama-1.1B", "llama", 2048, 22, 32, 4, 0, 5632, 32000, 2048, 10000.0f, false, false, 0, 0, 0, 0},
    {"llama-3.2-1b", "Llama-3.2-1B", "llama", 2048, 16, 32, 8, 0, 8192, 128256, 131072, 500000.0f, true, true, 0, 0, 0, 0},
    {"llama-2-7b", "Llama-2-7B", "llama", 4096, 32, 32, 32, 0, 11008, 32000, 4096, 10000.0f, false, false, 0, 0, 0, 0},
    {"llama-3-8b", "Llama-3-8B", "llama", 4096, 32, 32, 8, 0, 14336, 128256, 8192, 500000.0f, false, false, 0, 0, 0, 0},
    {"llama-3-70b", "Llama-3-70B", "llama", 8192, 80, 64, 8, 0, 28672, 128256, 8192, 500000.0f, false, false, 0, 0, 0, 0},
    {"qwen3-0.6b", "Qwen3-0.6B", "qwen3", 1024, 28, 16, 8, 128, 3072, 151936, 40960, 1000000.0f, true, false, 0, 0, 0, 0},
    {"qwen3-8b", "Qwen3-8B", "qwen3", 4096, 36, 32, 8, 128, 12288, 151936, 40960, 1000000.0f, false, false, 0, 0, 0, 0},
    {"gemma3-270m", "Gemma-3-270M", "gemma3", 640, 18, 4, 1, 256, 2048, 262144, 32768, 1000000.0f, true, false, 512, 0, 0, 0},
    {"gemma3-1b", "Gemma-3-1B", "gemma3", 1152, 26, 4, 1, 256, 6912, 262144, 32768, 1000000.0f, true, false, 512, 0, 0, 0},
    // Mixtures of experts: every FFN 128 experts, 8 used per token (Qwen3 MoE); 8 experts, 2 used (Mixtral).
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", "qwen3moe", 2048, 48, 32, 4, 128, 6144, 151936, 40960, 1000000.0f, false, false, 0, 128, 8, 768},
    {"qwen3-235b-a22b", "Qwen3-235B-A22B", "qwen3moe", 4096, 94, 64, 4, 128, 12288, 151936, 40960, 1000000.0f, false, false, 0, 128, 8, 1536},
    {"mixtral-8x7b", "Mixtral-8x7B", "llama", 4096, 32, 32, 8, 0, 14336, 32000, 32768, 1000000.0f, false, false, 0, 8, 2, 14336},
    // A small MoE for speed runs: Qwen3-MoE attention, 16 experts of 1024, 4 used (about 2 GB at Q4_K_M).
    {"moe-16x4", "MoE-16x4 (small)", "qwen3moe", 2048, 24, 32, 4, 128, 6144, 151936, 40960, 1000000.0f, false, false, 0, 16, 4, 1024},
    // Small shapes for tests (a few MB); the same code paths as the real ones.
    {"test-small", "test-small", "llama", 256, 2, 4, 2, 0, 512, 512, 512, 10000.0f, false, false, 0, 0, 0, 0},
    {"test-small-tied", "test-small-tied", "llama", 256, 2, 4, 1, 0, 768, 512, 512, 500000.0f, true, true, 0, 0, 0, 0},
    // 8 layers of test-small's width: pipelines of 5 or 7 stages (rank counts 1..8 in tests).
    {"test-deep", "test-deep", "llama", 256, 8, 4, 2, 0, 512, 512, 512, 10000.0f, false, false, 0, 0, 0, 0},
    // About 60 MB in Q8_0: big enough that a repack takes a measurable time (kill tests).
    {"test-medium", "test-medium", "llama", 1024, 4, 16, 4, 0, 2816, 16000, 2048, 10000.0f, false, false, 0, 0, 0, 0},
    {"test-qwen3", "test-qwen3", "qwen3", 256, 4, 8, 2, 64, 512, 512, 512, 1000000.0f, false, false, 0, 0, 0, 0},
    {"test-gemma3", "test-gemma3", "gemma3", 256, 7, 4, 1, 64, 768, 512, 512, 1000000.0f, true, false, 8, 0, 0, 0},
    {"test-qwen3moe", "test-qwen3moe", "qwen3moe", 256, 4, 8, 2, 64, 512, 512, 512, 1000000.0f, false, false, 0, 8, 2, 256},
};

struct Mix {
  const char* name;
  uint32_t file_type;  // general.file_type (llama_ftype)
  GgmlType base;
  GgmlType output;
  GgmlType more_bits;  // attn_v / ffn_down in the layers llama-quantize favours
};

constexpr Mix kMixes[] = {
    {"f16", 1, GgmlType::F16, GgmlType::F16, GgmlType::F16},
    {"q8_0", 7, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0},
    {"q4_0", 2, GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::Q4_0},
    {"q4_k_m", 15, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q6_K},
};

// llama-quantize's choice of layers that get more bits in the _M mixes.
bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1).
float uniform(uint64_t& s) { return static_cast<float>(splitmix(s) >> 40) / 8388608.0f - 1.0f; }

void random_bytes(uint64_t& s, uint8_t* p, size_t n) {
  while (n >= 8) {
    const uint64_t v = splitmix(s);
    std::memcpy(p, &v, 8);
    p += 8;
    n -= 8;
  }
  const uint64_t v = splitmix(s);
  std::memcpy(p, &v, n);
}

constexpr float kStd = 0.02f;  // weight standard deviation, as in typical initialisations
const float kAmp = kStd * std::sqrt(3.0f);  // uniform [-kAmp, kAmp] has standard deviation kStd

void put_half(uint8_t* p, float v) {
  const uint16_t h = ranklm::kern::fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Fills whole blocks of a quantized or float tensor with random values of standard deviation
// near kStd: random quants with a fixed scale.
void fill_matrix(GgmlType type, uint64_t& s, uint8_t* dst, size_t n) {
  using namespace ranklm::kern;
  switch (type) {
    case GgmlType::F16:
      for (size_t i = 0; i < n / 2; ++i) put_half(dst + 2 * i, kAmp * uniform(s));
      return;
    case GgmlType::F32:
      for (size_t i = 0; i < n / 4; ++i) {
        const float v = kAmp * uniform(s);
        std::memcpy(dst + 4 * i, &v, 4);
      }
      return;
    case GgmlType::Q8_0:
      for (size_t b = 0; b < n / sizeof(BlockQ8_0); ++b) {
        uint8_t* p = dst + b * sizeof(BlockQ8_0);
        put_half(p, kAmp / 127.0f * (0.75f + 0.25f * uniform(s)));
        random_bytes(s, p + 2, QK);
        for (int i = 0; i < QK; ++i) if (p[2 + i] == 0x80) p[2 + i] = 0x81;  // -128 is not produced
      }
      return;
    case GgmlType::Q4_0:
      for (size_t b = 0; b < n / sizeof(BlockQ4_0); ++b) {
        uint8_t* p = dst + b * sizeof(BlockQ4_0);
        put_half(p, kAmp / 8.0f * (0.75f + 0.25f * uniform(s)));
        random_bytes(s, p + 2, QK / 2);
      }
      return;
    case GgmlType::Q5_0:
      for (size_t b = 0; b < n / sizeof(BlockQ5_0); ++b) {
        uint8_t* p = dst + b * sizeof(BlockQ5_0);
        put_half(p, kAmp / 16.0f * (0.75f + 0.25f * uniform(s)));
        random_bytes(s, p + 2, 4 + QK / 2);
      }
      return;
    case GgmlType::Q4_K:
      for (size_t b = 0; b < n / sizeof(BlockQ4_K); ++b) {
        auto* q = reinterpret_cast<BlockQ4_K*>(dst + b * sizeof(BlockQ4_K));
        random_bytes(s, q->scales, sizeof q->scales);
        random_bytes(s, q->qs, sizeof q->qs);
        const float d = kAmp / (7.5f * 32.0f);
        put_half(reinterpret_cast<uint8_t*>(&q->d), d);
        put_half(reinterpret_cast<uint8_t*>(&q->dmin), d * 7.5f);
      }
      return;
    case GgmlType::Q6_K:
      for (size_t b = 0; b < n / sizeof(BlockQ6_K); ++b) {
        auto* q = reinterpret_cast<BlockQ6_K*>(dst + b * sizeof(BlockQ6_K));
        random_bytes(s, q->ql, sizeof q->ql);
        random_bytes(s, q->qh, sizeof q->qh);
        for (auto& sc : q->scales) sc = static_cast<int8_t>(16 + (splitmix(s) % 32));
        put_half(reinterpret_cast<uint8_t*>(&q->d), kAmp / (32.0f * 32.0f));
      }
      return;
    default:
      ranklm::fail("ranklm-synth: no generator for type {}", type_name(type));
  }
}

ranklm::HParams hparams_of(const Shape& sh) {
  ranklm::HParams hp;
  hp.arch = sh.arch;
  hp.n_embd = sh.n_embd;
  hp.n_layer = sh.n_layer;
  hp.n_head = sh.n_head;
  hp.n_head_kv = sh.n_head_kv;
  hp.head_dim = sh.head_dim > 0 ? sh.head_dim : sh.n_embd / sh.n_head;
  hp.n_ff = sh.n_ff;
  hp.n_vocab = sh.n_vocab;
  hp.n_ctx_train = sh.n_ctx;
  hp.rms_eps = 1e-5f;
  hp.rope.n_dims = static_cast<int>(hp.head_dim);
  hp.rope.freq_base = sh.rope_base;
  hp.tied_output = sh.tied_output;
  if (sh.llama3_rope) hp.llama3_rope = ranklm::Llama3Rope{32.0, 1.0, 4.0, 8192.0};
  hp.swa_window = sh.swa_window;
  hp.n_expert = sh.n_expert;
  hp.n_expert_used = sh.n_expert_used;
  hp.n_ff_exp = sh.n_ff_exp;
  // The blocks the architecture switches on decide the tensors (model_tensors).
  ranklm::find_arch(sh.arch)->blocks(hp);
  return hp;
}

// A type whose blocks fit `cols`, as llama-quantize falls back for rows that are not whole
// K-quant super-blocks (Gemma's 640 and 1152 columns).
GgmlType fitting(GgmlType t, int64_t cols) {
  const int64_t block = ranklm::kern::traits(t).block_size;
  if (cols % block == 0) return t;
  return t == GgmlType::Q6_K ? GgmlType::Q8_0 : GgmlType::Q5_0;
}

void add_vocab(ranklm::gguf::Writer& w, int64_t n_vocab) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  tokens.reserve(static_cast<size_t>(n_vocab));
  const char* specials[] = {"<unk>", "<s>", "</s>"};
  const int32_t special_types[] = {2, 3, 3};  // unknown, control, control
  for (int i = 0; i < 3; ++i) {
    tokens.emplace_back(specials[i]);
    scores.push_back(0.0f);
    types.push_back(special_types[i]);
  }
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.emplace_back(buf);
    scores.push_back(0.0f);
    types.push_back(6);  // byte
  }
  for (int64_t i = static_cast<int64_t>(tokens.size()); i < n_vocab; ++i) {
    tokens.push_back("\xE2\x96\x81w" + std::to_string(i));  // "▁w<i>": placeholder pieces
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_f32s("tokenizer.ggml.scores", scores);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
}

void print_shapes() {
  std::printf("%-16s %-8s %6s %6s %5s %4s %5s %6s %7s %8s\n", "shape", "arch", "n_embd", "layers", "heads", "kv",
              "head", "n_ff", "vocab", "experts");
  for (const Shape& s : kShapes) {
    const std::string experts = s.n_expert > 0 ? fmt::format("{}/{}x{}", s.n_expert_used, s.n_expert, s.n_ff_exp) : "-";
    std::printf("%-16s %-8s %6ld %6ld %5ld %4ld %5ld %6ld %7ld %8s\n", s.name, s.arch, s.n_embd, s.n_layer, s.n_head,
                s.n_head_kv, s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head, s.n_ff, s.n_vocab, experts.c_str());
  }
}

int run(int argc, char** argv) {
  po::options_description opts(
      "usage: ranklm-synth --shape NAME --type TYPE -o OUT.gguf\n\n"
      "Writes a GGUF with a real model's shapes and random weights, for speed measurements only\n"
      "(its output text is noise).\n\noptions");
  std::string shape_name, type_name, out;
  uint64_t seed = 1;
  bool no_data = false;
  opts.add_options()
      ("shape", po::value(&shape_name), "model shape (see --list)")
      ("type", po::value(&type_name)->default_value("q4_0"), "f16, q8_0, q4_0 or q4_k_m")
      ("output,o", po::value(&out), "output GGUF path")
      ("seed", po::value(&seed)->default_value(1), "random seed (same seed, same file)")
      ("no-data", po::bool_switch(&no_data), "leave the weights out: a sparse file of the full size (zeros), for ranklm plan on shapes too large to write; not for running")
      ("list", "list the shapes and exit")
      ("help,h", "show this help");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  if (vm.count("list")) {
    print_shapes();
    return 0;
  }
  if (shape_name.empty() || out.empty()) {
    std::fprintf(stderr, "ranklm-synth: --shape and --output are required (see --help)\n");
    return 2;
  }
  const Shape* sh = nullptr;
  for (const Shape& s : kShapes) if (shape_name == s.name) sh = &s;
  const Mix* mix = nullptr;
  for (const Mix& m : kMixes) if (type_name == m.name) mix = &m;
  if (!sh) {
    std::string names;
    for (const Shape& s : kShapes) names += std::string(names.empty() ? "" : ", ") + s.name;
    std::fprintf(stderr, "ranklm-synth: --shape '%s' is not known (known: %s)\n", shape_name.c_str(), names.c_str());
    return 2;
  }
  if (!mix) {
    std::fprintf(stderr, "ranklm-synth: --type '%s' is not known (known: f16, q8_0, q4_0, q4_k_m)\n", type_name.c_str());
    return 2;
  }

  ranklm::gguf::Writer w;
  const ranklm::HParams hp = hparams_of(*sh);
  ranklm::write_hparams(w, hp);
  w.set_string("general.name", std::string("synthetic ") + sh->label + " " + mix->name +
                                   " (random weights, for speed measurements only)");
  w.set_u32("general.file_type", mix->file_type);
  add_vocab(w, sh->n_vocab);

  struct Plan {
    GgmlType type;
    bool norm;          // F32 vector near 1
    std::vector<float> values;  // F32 vector given explicitly
  };
  std::vector<Plan> plan;
  if (hp.llama3_rope) {
    // As converted Llama 3.1 files carry them (llama.cpp reads only the tensor).
    std::vector<float> f = ranklm::llama3_freq_factors(hp);
    w.add_tensor(ranklm::tensor_name(ranklm::TensorId::kRopeFreqs), {static_cast<int64_t>(f.size())}, GgmlType::F32);
    plan.push_back({GgmlType::F32, false, std::move(f)});
  }
  using ranklm::TensorId;
  for (const ranklm::TensorDecl& t : ranklm::model_tensors(hp)) {
    GgmlType type = mix->base;
    if (t.ne.size() == 1 || t.id == TensorId::kFfnGateInp) {
      type = GgmlType::F32;  // norms, and the MoE router (llama-quantize keeps it in F32)
    } else if (t.id == TensorId::kOutput) {
      type = mix->output;
    } else if ((t.id == TensorId::kAttnV || t.id == TensorId::kFfnDown || t.id == TensorId::kFfnDownExps) &&
               use_more_bits(t.layer, hp.n_layer)) {
      type = mix->more_bits;
    }
    if (t.ne.size() >= 2 && type != GgmlType::F32) type = fitting(type, t.ne[0]);
    w.add_tensor(ranklm::tensor_name(t.id, t.layer), t.ne, type);
    plan.push_back({type, t.ne.size() == 1, {}});
  }

  uint64_t total = 0;
  for (size_t i = 0; i < w.n_tensors(); ++i) total += w.tensor_bytes(i);
  std::fprintf(stderr, "ranklm-synth: writing %s (%s %s, %zu tensors, %.2f GiB of weights)\n",
               out.c_str(), sh->label, mix->name, w.n_tensors(),
               static_cast<double>(total) / (1u << 30));
  if (no_data) {
    // The header and tensor table, then a hole of the data's size: the file reads as the model
    // (every size, type and offset) with zero weights, taking no disk space.
    const std::vector<uint8_t> head = w.header();
    {
      std::ofstream f(out, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(head.data()), static_cast<std::streamsize>(head.size()));
      if (!f) ranklm::fail("{}: cannot write the file", out);
    }
    std::filesystem::resize_file(out, head.size() + w.data_size());
    std::fprintf(stderr, "ranklm-synth: done (no data: a sparse file for ranklm plan, not for running)\n");
    return 0;
  }
  w.write(out, [&](size_t idx, uint64_t off, uint8_t* dst, size_t n) {
    const Plan& p = plan[idx];
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + idx * 0x9E3779B97F4A7C15ull + off;
    if (!p.values.empty()) {
      std::memcpy(dst, reinterpret_cast<const uint8_t*>(p.values.data()) + off, n);
    } else if (p.norm) {
      for (size_t i = 0; i < n / 4; ++i) {
        const float v = 1.0f + 0.1f * uniform(s);
        std::memcpy(dst + 4 * i, &v, 4);
      }
    } else {
      fill_matrix(p.type, s, dst, n);
    }
  });
  std::fprintf(stderr, "ranklm-synth: done\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ranklm::cli::run_tool("ranklm-synth", &run, argc, argv); }
