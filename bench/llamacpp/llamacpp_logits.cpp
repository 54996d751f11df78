// llamacpp_logits: llama.cpp's logits for given token ids, in the JSON schema of `ranklm logits`
// (n_vocab, prompt, logits at every prompt position from one batch, greedy, greedy_top5).
// A measuring probe for bench/, built against llama.cpp by build.sh; not part of ranklm.
//
//   llamacpp_logits MODEL.gguf 1,5,9 [--greedy N] [--threads T] [--flash-attn -1|0|1] [--no-repack]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

void top5(const float* l, int nv, std::string& out) {
  std::vector<int> idx(nv);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + 5, idx.end(), [&](int a, int b) { return l[a] > l[b]; });
  out += "[";
  for (int k = 0; k < 5; ++k) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s[%d,%.9g]", k ? "," : "", idx[k], l[idx[k]]);
    out += buf;
  }
  out += "]";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... [--greedy N] [--threads T] [--flash-attn -1|0|1] [--no-repack]\n", argv[0]);
    return 2;
  }
  const char* path = argv[1];
  std::vector<llama_token> ids;
  {
    std::stringstream ss(argv[2]);
    std::string x;
    while (std::getline(ss, x, ',')) ids.push_back(std::atoi(x.c_str()));
  }
  int n_greedy = 0, threads = 1, fa = -1;
  bool repack = true;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--greedy" && i + 1 < argc) n_greedy = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--flash-attn" && i + 1 < argc) fa = std::atoi(argv[++i]);
    else if (a == "--no-repack") repack = false;
    else {
      std::fprintf(stderr, "unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  if (ids.empty()) {
    std::fprintf(stderr, "no token ids\n");
    return 2;
  }
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.use_extra_bufts = repack;
  llama_model* m = llama_model_load_from_file(path, mp);
  if (!m) {
    std::fprintf(stderr, "%s: cannot load\n", path);
    return 1;
  }
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(ids.size() + n_greedy + 8);
  cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(std::max<size_t>(ids.size(), 32));
  cp.n_threads = cp.n_threads_batch = threads;
  cp.flash_attn_type = static_cast<llama_flash_attn_type>(fa);
  llama_context* c = llama_init_from_model(m, cp);
  llama_batch b = llama_batch_init(static_cast<int32_t>(ids.size()), 0, 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    b.token[i] = ids[i];
    b.pos[i] = static_cast<llama_pos>(i);
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = 0;
    b.logits[i] = 1;
  }
  b.n_tokens = static_cast<int32_t>(ids.size());
  if (llama_decode(c, b)) {
    std::fprintf(stderr, "decode failed\n");
    return 1;
  }
  const int nv = llama_vocab_n_tokens(llama_model_get_vocab(m));
  std::string out = "{\"n_vocab\": " + std::to_string(nv) + ", \"prompt\": [";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
  out += "], \"logits\": [";
  for (size_t i = 0; i < ids.size(); ++i) {
    const float* l = llama_get_logits_ith(c, static_cast<int32_t>(i));
    out += i ? ",[" : "[";
    for (int k = 0; k < nv; ++k) {
      char buf[32];
      std::snprintf(buf, sizeof buf, k ? ",%.9g" : "%.9g", l[k]);
      out += buf;
    }
    out += "]";
  }
  out += "], \"greedy\": [";
  std::string tops = "[";
  const float* l = llama_get_logits_ith(c, static_cast<int32_t>(ids.size()) - 1);
  for (int s = 0; s < n_greedy; ++s) {
    if (s) tops += ",";
    top5(l, nv, tops);
    llama_token best = static_cast<llama_token>(std::max_element(l, l + nv) - l);
    out += (s ? "," : "") + std::to_string(best);
    llama_batch one = llama_batch_get_one(&best, 1);
    if (llama_decode(c, one)) {
      std::fprintf(stderr, "decode failed\n");
      return 1;
    }
    l = llama_get_logits_ith(c, -1);
  }
  out += "], \"greedy_top5\": " + tops + "]}\n";
  std::fputs(out.c_str(), stdout);
  llama_batch_free(b);
  llama_free(c);
  llama_model_free(m);
  return 0;
}
