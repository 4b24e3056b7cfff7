#pragma once
// Shared by the fuzz targets: each target feeds its input to a real file reader, which must
// either accept it or throw gum::Error (a clear message and exit code). Any other exception,
// a crash or a sanitizer report is a finding: it escapes LLVMFuzzerTestOneInput and aborts.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gum/core/error.h"

namespace gum_fuzz {

// A folder of this process for the files the readers open (parallel fuzzers do not collide),
// removed at exit. The name is never destroyed: exit handlers run after static destructors.
inline const std::string& scratch_dir() {
  static const std::string* dir = [] {
    std::filesystem::path p = std::filesystem::temp_directory_path() / ("gum_fuzz_" + std::to_string(getpid()));
    std::filesystem::create_directories(p);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return new std::string(p.string());
  }();
  return *dir;
}

inline void write_bytes(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// Writes the input to SCRATCH/name and returns the path.
inline std::string input_file(const std::string& name, const void* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  write_bytes(path, data, size);
  return path;
}

// Runs `read`; bad input must end in gum::Error, which is the reader doing its job.
template <typename Read>
void expect_accept_or_gum_error(Read&& read) {
  try {
    read();
  } catch (const gum::Error&) {
  }
}

}  // namespace gum_fuzz
