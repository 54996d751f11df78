// ranklm-synth: writes a GGUF with the exact tensor shapes and types of a real model and random
// weights, so speed can be measured at real scale without downloading anything. The output is
// for speed only: its text is noise. Both ranklm and llama.cpp load it (Llama architecture, a
// SentencePiece-style vocabulary of placeholder pieces).
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli/tool_main.h"
#include "io/gguf_writer.h"
#include "kernels/fp16.h"
#include "util/error.h"

namespace po = boost::program_options;
using ranklm::kern::GgmlType;

namespace {

struct Shape {
  const char* name;
  const char* label;
  int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
  float rope_base;
  bool tied_output;
  bool llama3_rope;  // Llama 3.1-style frequency factors (factor 32, orig. context 8192)
};

// Hyperparameters as published in each model's config.json.
constexpr Shape kShapes[] = {
    {"tinyllama-1.1b", "TinyLlama-1.1B", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.0f, false, false},
    {"llama-3.2-1b", "Llama-3.2-1B", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0f, true, true},
    {"llama-2-7b", "Llama-2-7B", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0f, false, false},
    {"llama-3-8b", "Llama-3-8B", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0f, false, false},
    {"llama-3-70b", "Llama-3-70B", 8192, 80, 64, 8, 28672, 128256, 8192, 500000.0f, false, false},
    // Small shapes for tests (a few MB); the same code paths as the real ones.
    {"test-small", "test-small", 256, 2, 4, 2, 512, 512, 512, 10000.0f, false, false},
    {"test-small-tied", "test-small-tied", 256, 2, 4, 1, 768, 512, 512, 500000.0f, true, true},
    // 8 layers of test-small's width: pipelines of 5 or 7 stages (rank counts 1..8 in tests).
    {"test-deep", "test-deep", 256, 8, 4, 2, 512, 512, 512, 10000.0f, false, false},
    // About 60 MB in Q8_0: big enough that a repack takes a measurable time (kill tests).
    {"test-medium", "test-medium", 1024, 4, 16, 4, 2816, 16000, 2048, 10000.0f, false, false},
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

std::vector<float> llama3_factors(const Shape& sh) {
  const int64_t head_dim = sh.n_embd / sh.n_head;
  const double factor = 32.0, low = 1.0, high = 4.0, old_ctx = 8192.0;
  std::vector<float> out(static_cast<size_t>(head_dim / 2));
  for (size_t i = 0; i < out.size(); ++i) {
    const double freq = std::pow(sh.rope_base, -2.0 * static_cast<double>(i) / head_dim);
    const double wavelen = 2.0 * M_PI / freq;
    if (wavelen < old_ctx / high) {
      out[i] = 1.0f;
    } else if (wavelen > old_ctx / low) {
      out[i] = static_cast<float>(factor);
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      out[i] = static_cast<float>(1.0 / ((1.0 - smooth) / factor + smooth));
    }
  }
  return out;
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

int run(int argc, char** argv) {
  po::options_description opts(
      "usage: ranklm-synth --shape NAME --type TYPE -o OUT.gguf\n\n"
      "Writes a GGUF with a real model's shapes and random weights, for speed measurements only\n"
      "(its output text is noise).\n\noptions");
  std::string shape_name, type_name, out;
  uint64_t seed = 1;
  opts.add_options()
      ("shape", po::value(&shape_name), "model shape (see --list)")
      ("type", po::value(&type_name)->default_value("q4_0"), "f16, q8_0, q4_0 or q4_k_m")
      ("output,o", po::value(&out), "output GGUF path")
      ("seed", po::value(&seed)->default_value(1), "random seed (same seed, same file)")
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
    std::printf("%-16s %6s %6s %5s %4s %6s %7s\n", "shape", "n_embd", "layers", "heads", "kv",
                "n_ff", "vocab");
    for (const Shape& s : kShapes) {
      std::printf("%-16s %6ld %6ld %5ld %4ld %6ld %7ld\n", s.name, s.n_embd, s.n_layer, s.n_head,
                  s.n_head_kv, s.n_ff, s.n_vocab);
    }
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
  const std::string a = "llama.";
  const int64_t head_dim = sh->n_embd / sh->n_head;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", std::string("synthetic ") + sh->label + " " + mix->name +
                                   " (random weights, for speed measurements only)");
  w.set_u32("general.file_type", mix->file_type);
  w.set_u32(a + "context_length", static_cast<uint32_t>(sh->n_ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(sh->n_embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(sh->n_layer));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(sh->n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(sh->n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(sh->n_head_kv));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(head_dim));
  w.set_f32(a + "rope.freq_base", sh->rope_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_u32(a + "vocab_size", static_cast<uint32_t>(sh->n_vocab));
  add_vocab(w, sh->n_vocab);

  struct Plan {
    GgmlType type;
    bool norm;          // F32 vector near 1
    std::vector<float> values;  // F32 vector given explicitly
  };
  std::vector<Plan> plan;
  auto add = [&](const std::string& name, std::vector<int64_t> ne, GgmlType t, bool norm = false) {
    w.add_tensor(name, std::move(ne), t);
    plan.push_back({t, norm, {}});
  };
  const int64_t E = sh->n_embd, kv = sh->n_head_kv * head_dim;
  add("token_embd.weight", {E, sh->n_vocab}, mix->base);
  add("output_norm.weight", {E}, GgmlType::F32, true);
  if (!sh->tied_output) add("output.weight", {E, sh->n_vocab}, mix->output);
  if (sh->llama3_rope) {
    std::vector<float> f = llama3_factors(*sh);
    w.add_tensor("rope_freqs.weight", {static_cast<int64_t>(f.size())}, GgmlType::F32);
    plan.push_back({GgmlType::F32, false, std::move(f)});
  }
  for (int64_t i = 0; i < sh->n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const GgmlType more = use_more_bits(i, sh->n_layer) ? mix->more_bits : mix->base;
    add(b + "attn_norm.weight", {E}, GgmlType::F32, true);
    add(b + "attn_q.weight", {E, E}, mix->base);
    add(b + "attn_k.weight", {E, kv}, mix->base);
    add(b + "attn_v.weight", {E, kv}, more);
    add(b + "attn_output.weight", {E, E}, mix->base);
    add(b + "ffn_norm.weight", {E}, GgmlType::F32, true);
    add(b + "ffn_gate.weight", {E, sh->n_ff}, mix->base);
    add(b + "ffn_up.weight", {E, sh->n_ff}, mix->base);
    add(b + "ffn_down.weight", {sh->n_ff, E}, more);
  }

  uint64_t total = 0;
  for (size_t i = 0; i < w.n_tensors(); ++i) total += w.tensor_bytes(i);
  std::fprintf(stderr, "ranklm-synth: writing %s (%s %s, %zu tensors, %.2f GiB of weights)\n",
               out.c_str(), sh->label, mix->name, w.n_tensors(),
               static_cast<double>(total) / (1u << 30));
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
