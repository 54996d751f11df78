// libFuzzer target: the GGUF reader on arbitrary bytes (whole files and shard-style header-only
// images), then what the loader reads from a parsed file (hyperparameters, identity, model).
#include <cstdint>
#include <vector>

#include "io/gguf.h"
#include "model/model.h"
#include "plan/identity.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  std::vector<uint8_t> bytes(data, data + size);
  try {
    auto f = gguf::File::from_bytes("fuzz.gguf", bytes);
    for (const auto& [k, v] : f->metadata()) (void)v.to_string(4);
    for (const auto& t : f->tensors()) (void)t.shape_string();
    try {
      (void)plan::model_identity(*f);
    } catch (const Error&) {
    }
    (void)Model::load(*f);
  } catch (const Error&) {
  }
  try {
    (void)gguf::File::header_only("fuzz-header.gguf", std::move(bytes));
  } catch (const Error&) {
  }
  return 0;
}
