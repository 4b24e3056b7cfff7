// Fuzz target: a whole safetensors file (header length, JSON header, data section) read with
// read_safetensors, which validates dtypes, shapes, offsets and metadata before any data access.
#include <map>

#include "fuzz_util.h"
#include "gum/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gum_fuzz::input_file("input.safetensors", data, size);
  gum_fuzz::expect_accept_or_gum_error([&] {
    std::map<std::string, std::string> metadata;
    gum::read_safetensors(path, &metadata);
  });
  return 0;
}
