// Writes a damaged copy of a GGUF file for end-to-end tests of what users meet (a bad
// conversion, a NaN in the weights):
//   damage_gguf IN OUT nan TENSOR          one float of an F32 tensor becomes NaN
//   damage_gguf IN OUT f32 KEY VALUE       a metadata float ("nan" allowed)
//   damage_gguf IN OUT u32 KEY VALUE       a metadata integer
//   damage_gguf IN OUT tokens N            the vocabulary cut (or padded) to N tokens
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "gguf_edit.h"
#include "util/error.h"

int main(int argc, char** argv) {
  using namespace ranklm;
  if (argc < 5) {
    std::fprintf(stderr, "usage: damage_gguf IN OUT (nan TENSOR | f32 KEY VALUE | u32 KEY VALUE | tokens N)\n");
    return 2;
  }
  const std::string in = argv[1], out = argv[2], what = argv[3];
  try {
    if (what == "nan") {
      const std::string name = argv[4];
      test::edit_gguf(in, out, {}, [&](const gguf::TensorInfo& t, uint8_t* bytes) {
        if (t.name == name) reinterpret_cast<float*>(bytes)[0] = std::nanf("");
      });
    } else if ((what == "f32" || what == "u32") && argc >= 6) {
      const gguf::Value v = what == "f32" ? test::f32_value(std::strtof(argv[5], nullptr))
                                          : test::u32_value(static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10)));
      test::edit_gguf(in, out, {{argv[4], v}});
    } else if (what == "tokens") {
      auto f = gguf::File::open(in);
      const size_t n = std::strtoul(argv[4], nullptr, 10);
      std::map<std::string, std::optional<gguf::Value>> meta;
      for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
        const gguf::Value* a = f->find(key);
        if (!a) continue;
        gguf::Value v = *a;
        const size_t had = v.arr.size();
        v.arr.resize(n, a->arr.front());
        for (size_t k = had; k < n && v.elem_type == gguf::ValueType::STRING; ++k) v.arr[k].s = "<extra_" + std::to_string(k) + ">";
        meta[key] = v;
      }
      test::edit_gguf(in, out, meta);
    } else {
      std::fprintf(stderr, "damage_gguf: unknown edit '%s'\n", what.c_str());
      return 2;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "damage_gguf: %s\n", e.what());
    return 1;
  }
  return 0;
}
