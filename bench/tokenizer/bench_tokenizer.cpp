// Encodes every document of a C4-format corpus (gzip JSONL with "text") with one tokenizer on one
// thread and prints one JSON line: documents, bytes, tokens, CPU seconds, MB/s and an id checksum (the
// same corpus and file give the same tokens and checksum here and in hf_encode.py).
#include <zlib.h>

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gum/data/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gum_bench_tokenizer TOKENIZER CORPUS.json.gz\n");
    return 2;
  }
  gzFile file = gzopen(argv[2], "rb");
  if (!file) {
    std::fprintf(stderr, "cannot open %s\n", argv[2]);
    return 1;
  }
  std::vector<std::string> texts;
  std::string line;
  char buffer[1 << 16];
  while (gzgets(file, buffer, sizeof(buffer))) {
    line += buffer;
    if (line.back() != '\n') continue;
    texts.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
    line.clear();
  }
  gzclose(file);
  gum::Tokenizer tokenizer(argv[1]);
  std::vector<std::vector<int32_t>> encoded;
  encoded.reserve(texts.size());
  // CPU time of this process: a shared, loaded machine stretches wall time but not this.
  const std::clock_t start = std::clock();
  for (const std::string& text : texts) encoded.push_back(tokenizer.encode(text));
  const double seconds = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
  size_t bytes = 0, tokens = 0;
  uint64_t checksum = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    bytes += texts[i].size();
    tokens += encoded[i].size();
    for (int32_t id : encoded[i]) checksum = checksum * 1000003 + static_cast<uint64_t>(id);
  }
  std::printf("%s\n", nlohmann::json({{"implementation", "gum_train"},
                                      {"documents", texts.size()},
                                      {"bytes", bytes},
                                      {"tokens", tokens},
                                      {"seconds", seconds},
                                      {"mb_per_s", bytes / seconds / 1e6},
                                      {"checksum", std::to_string(checksum)}})
                          .dump()
                          .c_str());
  return 0;
}
