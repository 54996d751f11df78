// The exit-code policy of the stand-alone tools (ranklm-synth, ranklm-repack), the same as the
// ranklm binary's: a command-line mistake prints the problem and exits 2; a bad input file or a
// failed run prints one "error:" line and exits 1.
#pragma once

#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <exception>
#include <string_view>

#include "cli/version.h"
#include "util/error.h"

namespace ranklm::cli {

inline int run_tool(const char* name, int (*run)(int, char**), int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::fputs(version_text(name).c_str(), stdout);
    return 0;
  }
  try {
    return run(argc, argv);
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s: %s (see --help)\n", name, e.what());
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s (see --help)\n", name, e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace ranklm::cli
