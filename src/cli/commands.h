// Subcommands of the ranklm binary. Each parses its own options (Boost.Program_options, with
// --help) and returns the process exit code. Library errors propagate as ranklm::Error to main.
#pragma once

#include <string>
#include <vector>

namespace ranklm::cli {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;   // bad input file, failed run
constexpr int kExitUsage = 2;   // bad command line

int cmd_inspect(const std::vector<std::string>& args);
int cmd_logits(const std::vector<std::string>& args);
int cmd_generate(const std::vector<std::string>& args);
int cmd_run(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_plan(const std::vector<std::string>& args);
int cmd_serve(const std::vector<std::string>& args);

// Default thread count: the cores this process may run on.
int default_threads();

}  // namespace ranklm::cli
