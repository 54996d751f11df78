// ranklm inspect FILE.gguf | SHARD.h5: metadata and tensor table, or what a shard holds.
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "cli/options.h"
#include "io/gguf.h"
#include "shard/shard.h"

namespace ranklm::cli {

namespace {

// Metadata, tensor names and shard attributes come from the file: control bytes (ESC, BEL, a
// carriage return) are shown as \xNN instead of being sent to the terminal. Line ends kept.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\n') || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

int cmd_inspect(const std::vector<std::string>& args) {
  po::options_description desc("inspect options");
  std::string path;
  int max_items = 8;
  desc.add_options()
      ("file", po::value<std::string>(&path)->required(), "GGUF file or HDF5 shard (.h5) to inspect")
      ("array-items", po::value<int>(&max_items)->default_value(8), "array elements to show");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  if (!parse_options("inspect", "FILE.gguf | SHARD.h5", desc, args, vm, &pos)) return kExitOk;

  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".h5") == 0) {
    std::fputs(printable(shard::describe_shard(path)).c_str(), stdout);
    return kExitOk;
  }
  auto f = gguf::File::open(path);
  std::printf("file: %s\n", printable(f->path()).c_str());
  std::printf("gguf version: %u, alignment: %llu, data offset: %llu, size: %zu bytes\n",
              f->version(), static_cast<unsigned long long>(f->alignment()),
              static_cast<unsigned long long>(f->data_offset()), f->file_size());
  std::printf("\nmetadata (%zu keys):\n", f->metadata().size());
  for (const auto& [k, v] : f->metadata()) {
    std::printf("  %-45s %-7s %s\n", printable(k).c_str(), gguf::value_type_name(v.type),
                printable(v.to_string(static_cast<size_t>(max_items))).c_str());
  }
  std::printf("\ntensors (%zu):\n", f->tensors().size());
  std::printf("  %-36s %-6s %-22s %12s %12s\n", "name", "type", "shape", "bytes", "offset");
  uint64_t total = 0;
  for (const auto& t : f->tensors()) {
    std::printf("  %-36s %-6s %-22s %12llu %12llu\n", printable(t.name).c_str(),
                std::string(kern::type_name(t.type)).c_str(), t.shape_string().c_str(),
                static_cast<unsigned long long>(t.n_bytes), static_cast<unsigned long long>(t.offset));
    total += t.n_bytes;
  }
  std::printf("  total tensor bytes: %llu\n", static_cast<unsigned long long>(total));
  return kExitOk;
}

}  // namespace ranklm::cli
