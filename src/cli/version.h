// What `--version` prints for every binary: the version, the commit it was built from, the
// instruction-set levels compiled in, and the level this CPU gets (RANKLM_ISA may lower it).
#pragma once

#include <string>

namespace ranklm::cli {

std::string version_text(const char* program);

}  // namespace ranklm::cli
