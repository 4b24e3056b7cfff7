#pragma once
// Helpers shared by the data tests: scratch folders, gzip files, generated English-like text.
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gum/core/philox.h"

namespace gum_test {

// A fresh, empty folder under the build tree for one test.
inline std::filesystem::path fresh_dir(const std::string& name) {
  std::filesystem::path dir = std::filesystem::path(GUM_BINARY_DIR) / "test_scratch" / "data" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_text(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string gzip_bytes(const std::string& bytes) {
  z_stream stream{};
  deflateInit2(&stream, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // +16: gzip wrapper
  std::string out(deflateBound(&stream, bytes.size()) + 64, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

inline void write_gzip(const std::filesystem::path& path, const std::string& bytes) {
  write_text(path, gzip_bytes(bytes));
}

// Deterministic English-like sentences from a small word list.
inline std::string generated_sentence(gum::PhiloxStream& rng) {
  static const std::vector<std::string> words = {
      "the",      "a",         "model",  "learns",    "from",       "data",     "and",        "every",   "token",
      "is",       "predicted", "by",     "its",       "past",       "we",       "train",      "small",   "language",
      "models",   "with",      "memory", "efficient", "optimizers", "gradient", "projection", "low",     "rank",
      "subspace", "updates",   "sample", "layers",    "randomly",   "while",    "others",     "stay",    "frozen",
      "this",     "keeps",     "state",  "tiny",      "but",        "quality",  "high",       "people",  "write",
      "text",     "about",     "rivers", "mountains", "cities",     "music",    "history",    "science", "in",
      "of",       "to",        "on"};
  std::string sentence;
  const uint64_t length = 5 + rng.next_below(10);
  for (uint64_t i = 0; i < length; ++i) {
    if (i) sentence += ' ';
    sentence += words[rng.next_below(words.size())];
  }
  sentence[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(sentence[0])));
  return sentence + ".";
}

inline std::string generated_document(gum::PhiloxStream& rng, int sentences) {
  std::string doc;
  for (int i = 0; i < sentences; ++i) doc += (i ? " " : "") + generated_sentence(rng);
  return doc;
}

}  // namespace gum_test
