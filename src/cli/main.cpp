// ranklm: distributed LLM inference over MPI. This file dispatches subcommands and owns the
// error policy: library code throws ranklm::Error with a complete message; we print it on one
// line and exit non-zero.
#include <sys/resource.h>

#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/version.h"
#include "util/error.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: ranklm <command> [options]\n"
               "\n"
               "commands:\n"
               "  run        batch job: a prompt file (text or OpenAI Batch JSONL) to a resumable results file\n"
               "  serve      the model behind an OpenAI-compatible HTTP endpoint (chat, completions, streaming)\n"
               "  generate   generate text from a prompt (streams tokens, reports tokens/s)\n"
               "  logits     print prompt logits and a greedy continuation as JSON (parity probe)\n"
               "  inspect    print a GGUF file's metadata and tensor table\n"
               "  bench      prefill / decode throughput, llama-bench style (-m -t -p -n -r -o)\n"
               "  plan       split a model over N ranks (pipeline stages x tensor parallel)\n"
               "\n"
               "run 'ranklm <command> --help' for the options of a command; 'ranklm --version' for the\n"
               "version, the commit and the instruction-set level in use.\n");
}

}  // namespace

namespace {

int dispatch(int argc, char** argv) {
  using namespace ranklm::cli;
  if (argc < 2) {
    usage(stderr);
    return kExitUsage;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(stdout);
    return kExitOk;
  }
  if (cmd == "--version" || cmd == "version") {
    std::fputs(version_text("ranklm").c_str(), stdout);
    return kExitOk;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "inspect") return cmd_inspect(args);
    if (cmd == "logits") return cmd_logits(args);
    if (cmd == "generate") return cmd_generate(args);
    if (cmd == "run") return cmd_run(args);
    if (cmd == "bench") return cmd_bench(args);
    if (cmd == "plan") return cmd_plan(args);
    if (cmd == "serve") return cmd_serve(args);
    std::fprintf(stderr, "ranklm: unknown command '%s'\n", cmd.c_str());
    usage(stderr);
    return kExitUsage;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "ranklm %s: %s (see 'ranklm %s --help')\n", cmd.c_str(), e.what(), cmd.c_str());
    return kExitUsage;
  } catch (const ranklm::UsageError& e) {
    std::fprintf(stderr, "ranklm %s: %s (see 'ranklm %s --help')\n", cmd.c_str(), e.what(), cmd.c_str());
    return kExitUsage;
  } catch (const ranklm::Error& e) {
    std::fprintf(stderr, "ranklm %s: error: %s\n", cmd.c_str(), e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    struct rlimit lim {};
    std::string bound;
    if (::getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
      bound = " (the process may use " + std::to_string(lim.rlim_cur >> 20) + " MiB of address space: ulimit -v)";
    }
    std::fprintf(stderr, "ranklm %s: error: out of memory%s; give the job more memory or use smaller settings (--parallel, -c)\n",
                 cmd.c_str(), bound.c_str());
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ranklm %s: internal error: %s\n", cmd.c_str(), e.what());
    return kExitError;
  }
}

}  // namespace

// Every command has closed its files and ended MPI when dispatch returns. The process then ends
// without running library destructors: OpenBLAS's exit handler joins its worker threads, which
// spin for ever when a memory limit (ulimit -v) refuses their buffers.
int main(int argc, char** argv) {
  const int code = dispatch(argc, argv);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}
