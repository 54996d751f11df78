// libFuzzer target: plan.json as a user (or a shard's 'plan' attribute) gives it.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "plan/plan.h"
#include "util/error.h"
#include "util/json_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ranklm;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const plan::Plan p = plan::from_json(parse_json_bounded(text, "fuzz plan.json"), "fuzz plan.json");
    (void)plan::plan_hash(p);
    (void)plan::plan_table(p);
    (void)plan::from_json(plan::to_json(p), "round trip");
  } catch (const Error&) {
  }
  return 0;
}
