// Fuzz target: a training config file with --set overrides, read by load_train_config (parse,
// overrides against the schema, validation of every section). The input is split at NUL bytes:
// the first piece is CONFIG.json, each further piece one --set KEY=VALUE argument.
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "gum/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> pieces;
  size_t begin = 0;
  for (size_t end; (end = input.find('\0', begin)) != std::string::npos; begin = end + 1)
    pieces.push_back(input.substr(begin, end - begin));
  pieces.push_back(input.substr(begin));
  const std::string& config = pieces.front();
  const std::string path = gum_fuzz::input_file("config.json", config.data(), config.size());
  gum_fuzz::expect_accept_or_gum_error(
      [&] { gum::load_train_config(path, std::vector<std::string>(pieces.begin() + 1, pieces.end())); });
  return 0;
}
