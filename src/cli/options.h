// Small helpers shared by the subcommands' option parsing.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "util/error.h"

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

// The non-empty items of a comma-separated list.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) if (!item.empty()) out.push_back(item);
  return out;
}

// A comma-separated list of integers in [lo, hi]; a bad item throws an Error naming the option
// and the item.
template <typename T>
std::vector<T> parse_int_list(const std::string& opt, const std::string& s, long long lo,
                              long long hi) {
  std::vector<T> out;
  for (const std::string& item : split_list(s)) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < lo || v > hi) {
      fail("{}: '{}' is not an integer in {}..{} (expected a comma-separated list)", opt, item, lo, hi);
    }
    out.push_back(static_cast<T>(v));
  }
  return out;
}

}  // namespace ranklm::cli
