// libFuzzer target: tokenizers (SentencePiece and byte-level BPE vocabularies from the fixtures)
// on arbitrary bytes: encode with and without special tokens, decode, and the literal-marked
// encoding chat prompts use. RANKLM_FUZZ_VOCABS names the vocabulary files (colon-separated).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {
std::vector<std::unique_ptr<ranklm::gguf::File>> g_files;
std::vector<std::unique_ptr<ranklm::Tokenizer>> g_toks;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* v = std::getenv("RANKLM_FUZZ_VOCABS");
  if (!v) return 0;
  std::stringstream ss(v);
  std::string path;
  while (std::getline(ss, path, ':')) {
    g_files.push_back(ranklm::gguf::File::open(path));
    g_toks.push_back(ranklm::Tokenizer::from_gguf(*g_files.back()));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  if (size == 0 || g_toks.empty()) return 0;
  const Tokenizer& tok = *g_toks[data[0] % g_toks.size()];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (const bool special : {false, true}) {
    const auto ids = tok.encode(text, special, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok.n_vocab()) __builtin_trap();  // every id must be in the vocabulary
    }
    (void)tok.decode(ids, special);
  }
  (void)tok.encode_with_literals(text, true);
  (void)tok.has_control_text(text);
  return 0;
}
