#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "data_test_util.h"
#include "gum/core/error.h"
#include "gum/data/loader.h"
#include "gum/data/prepare.h"
#include "gum/data/tokenizer.h"

using namespace gum;
using gum_test::fresh_dir;

namespace {

// A C4-format file of generated documents; returns the documents.
std::vector<std::string> write_c4_file(const std::filesystem::path& path, int documents, uint64_t seed) {
  PhiloxStream rng(seed, 0);
  std::vector<std::string> texts;
  std::string jsonl;
  for (int i = 0; i < documents; ++i) {
    texts.push_back(gum_test::generated_document(rng, 1 + static_cast<int>(rng.next_below(6))));
    jsonl += nlohmann::json{{"text", texts.back()},
                            {"timestamp", "2019-01-01T00:00:00Z"},
                            {"url", "https://example.org/" + std::to_string(i)}}
                 .dump() +
             "\n";
  }
  gum_test::write_gzip(path, jsonl);
  return texts;
}

std::vector<int32_t> stream_tokens(const std::vector<std::string>& shards, uint64_t fingerprint) {
  TokenStream stream(shards, fingerprint);
  std::vector<int32_t> tokens(stream.size());
  stream.copy(0, stream.size(), tokens.data());
  return tokens;
}

}  // namespace

TEST_CASE("prepare trains a tokenizer, writes shards, and is idempotent") {
  auto dir = fresh_dir("prepare");
  auto corpus = dir / "corpus";
  std::filesystem::create_directories(corpus);
  auto train0 = write_c4_file(corpus / "c4-train.00000-of-00002.json.gz", 300, 1);
  auto train1 = write_c4_file(corpus / "c4-train.00001-of-00002.json.gz", 200, 2);
  auto valid = write_c4_file(corpus / "c4-validation.00000-of-00001.json.gz", 50, 3);

  nlohmann::json section = {{"train_files", (corpus / "c4-train.*.json.gz").string()},
                            {"valid_files", (corpus / "c4-validation.*.json.gz").string()},
                            {"tokenizer_vocab_size", 150},
                            {"shard_dir", (dir / "shards").string()}};
  DataConfig config = data_config_from_json(section, "test.json");
  PrepareSummary first = prepare_data(config);
  CHECK(first.tokenizer_path == tokenizer_path(config));
  CHECK(std::filesystem::exists(tokenizer_path(config)));
  CHECK(first.shards_written == 3);
  CHECK(first.train_documents == 500);
  CHECK(first.valid_documents == 50);

  auto train_shards = list_shards(config, "train");
  auto valid_shards = list_shards(config, "valid");
  REQUIRE(train_shards.size() == 2);
  REQUIRE(valid_shards.size() == 1);
  CHECK(train_shards[0] < train_shards[1]);

  // The shard stream is exactly the documents' tokens, each followed by EOS.
  Tokenizer tokenizer(tokenizer_path(config));
  std::vector<int32_t> expected;
  for (const auto* docs : {&train0, &train1})
    for (const auto& text : *docs) {
      auto ids = tokenizer.encode(text);
      expected.insert(expected.end(), ids.begin(), ids.end());
      expected.push_back(tokenizer.eos_id());
    }
  CHECK(stream_tokens(train_shards, tokenizer.fingerprint()) == expected);
  CHECK(first.train_tokens == expected.size());

  // A second run reuses everything.
  PrepareSummary second = prepare_data(config);
  CHECK(second.shards_written == 0);
  CHECK(second.shards_reused == 3);
  CHECK(second.tokenizer_fingerprint == first.tokenizer_fingerprint);

  // Changing one source rebuilds only its shard.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_c4_file(corpus / "c4-train.00001-of-00002.json.gz", 120, 9);
  PrepareSummary third = prepare_data(config);
  CHECK(third.shards_written == 1);
  CHECK(third.shards_reused == 2);
  CHECK(third.train_documents == 420);

  // Dropping a file from the list removes its stale shard.
  nlohmann::json fewer = section;
  fewer["train_files"] = (corpus / "c4-train.00000-*.json.gz").string();
  DataConfig smaller = data_config_from_json(fewer, "test.json");
  prepare_data(smaller);
  CHECK(list_shards(smaller, "train").size() == 1);

  // The tokenizer's training files changed, so it was retrained and every shard rebuilt:
  // shards of the old tokenizer are refused, those of the new one read.
  Tokenizer retrained(tokenizer_path(smaller));
  CHECK(retrained.fingerprint() != tokenizer.fingerprint());
  CHECK_THROWS_WITH(TokenLoader(list_shards(smaller, "train"), 32, 1, true, tokenizer.fingerprint()),
                    Catch::Contains("another tokenizer"));
  TokenLoader loader(list_shards(smaller, "train"), 32, 1, true, retrained.fingerprint());
  CHECK(loader.windows_per_epoch() > 0);
  EvalWindows windows(list_shards(smaller, "valid"), 32, retrained.fingerprint());
  CHECK(windows.count() > 0);
}

TEST_CASE("prepare with a given tokenizer and plain text, and its errors") {
  auto dir = fresh_dir("prepare_text");
  PhiloxStream rng(4, 0);
  std::vector<std::string> sentences;
  for (int i = 0; i < 2000; ++i) sentences.push_back(gum_test::generated_sentence(rng));
  TokenizerTrainOptions options;
  options.vocab_size = 120;
  options.num_threads = 2;
  train_tokenizer(sentences, options, (dir / "given.model").string());

  std::string text;
  for (int i = 0; i < 40; ++i) text += gum_test::generated_document(rng, 3) + (i % 2 ? "\r\n\r\n" : "\n\n\n");
  gum_test::write_text(dir / "book.txt", text);

  nlohmann::json section = {{"train_files", (dir / "*.txt").string()},
                            {"text_split", "blank_line"},
                            {"tokenizer", (dir / "given.model").string()},
                            {"shard_dir", (dir / "shards").string()}};
  DataConfig config = data_config_from_json(section, "test.json");
  PrepareSummary summary = prepare_data(config);
  CHECK(summary.tokenizer_path == (dir / "given.model").string());
  CHECK(summary.train_documents == 40);
  CHECK(list_shards(config, "valid").empty());
  CHECK_FALSE(std::filesystem::exists(dir / "shards" / "tokenizer.model"));

  nlohmann::json missing_tokenizer = section;
  missing_tokenizer["tokenizer"] = (dir / "nope.model").string();
  CHECK_THROWS_WITH(prepare_data(data_config_from_json(missing_tokenizer, "test.json")), Catch::Contains("nope.model"));

  nlohmann::json no_files = section;
  no_files["train_files"] = (dir / "*.jsonl").string();
  CHECK_THROWS_WITH(prepare_data(data_config_from_json(no_files, "test.json")),
                    Catch::Contains("data.train_files") && Catch::Contains("matches no file"));

  nlohmann::json empty_dir = section;
  empty_dir["shard_dir"] = (dir / "empty").string();
  CHECK_THROWS_WITH(list_shards(data_config_from_json(empty_dir, "test.json"), "train"),
                    Catch::Contains("gum_train prepare"));
}
