// libFuzzer target: the results-file reader that --resume uses, on arbitrary bytes.
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "batch/results.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  std::set<std::string> done;
  try {
    batch::parse_result_lines(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.jsonl", 1, done);
  } catch (const Error&) {
  }
  return 0;
}
