#include "cli/commands.h"
namespace ranklm::cli {
int cmd_generate(const std::vector<std::string>&) { return kExitUsage; }
}
