#include "cli/version.h"

#include <fmt/format.h>

#include <cstdlib>

#include "kernels/cpu.h"
#include "cli/commit.h"  // generated at build time (tools/version.cmake)

namespace ranklm::cli {

std::string version_text(const char* program) {
  using kern::Isa;
  const Isa cpu = kern::detected_isa(), used = kern::active_isa();
  const char* forced = std::getenv("RANKLM_ISA");
  std::string chosen = kern::isa_name(used);
  if (used != cpu) chosen += fmt::format(" (lowered by RANKLM_ISA={})", forced ? forced : "?");
  return fmt::format(
      "{} {} (commit {})\n"
      "instruction-set levels compiled: scalar, avx2 (AVX2 + FMA + F16C), avx512 (AVX-512 F/BW/VL + VNNI)\n"
      "this CPU supports: {}; kernels use: {}\n",
      program, RANKLM_VERSION, RANKLM_COMMIT, kern::isa_name(cpu), chosen);
}

}  // namespace ranklm::cli
