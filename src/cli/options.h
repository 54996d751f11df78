// Small helpers shared by the subcommands' option parsing.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

namespace ranklm::cli {

namespace po = boost::program_options;

// The options every model-running command shares: --model and --threads.
inline void add_model_options(po::options_description& desc, std::string& model, int& threads,
                              int default_threads) {
  desc.add_options()
      ("model,m", po::value<std::string>(&model)->required(), "GGUF model file")
      ("threads,t", po::value<int>(&threads)->default_value(default_threads), "worker threads");
}

// Parses args into vm; returns false (after printing help) when --help was given.
inline bool parse_options(const std::string& cmd, const std::string& synopsis,
                          po::options_description& desc, const std::vector<std::string>& args,
                          po::variables_map& vm,
                          const po::positional_options_description* pos = nullptr) {
  desc.add_options()("help,h", "show this help");
  auto parser = po::command_line_parser(args).options(desc);
  if (pos) parser.positional(*pos);
  po::store(parser.run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: ranklm " << cmd << " " << synopsis << "\n\n" << desc << "\n";
    return false;
  }
  po::notify(vm);
  return true;
}

}  // namespace ranklm::cli
