#include <catch2/catch.hpp>
#include <filesystem>

#include "gum/core/error.h"
#include "gum/data/data_config.h"

using namespace gum;
using nlohmann::json;

TEST_CASE("data config defaults point at the embedded corpus") {
  DataConfig config = data_config_from_json(json::object(), "cfg.json");
  const std::string cwd = std::filesystem::current_path().string();
  REQUIRE(config.train_files.size() == 1);
  CHECK(config.train_files[0] == cwd + "/data/corpus/c4-train.*.json.gz");
  REQUIRE(config.valid_files.size() == 1);
  CHECK(config.valid_files[0] == cwd + "/data/corpus/c4-validation.*.json.gz");
  CHECK(config.shard_dir == cwd + "/data/shards");
  CHECK(config.tokenizer.empty());
  CHECK(config.corpus.format == CorpusFormat::Auto);
  CHECK(config.shuffle);
  CHECK(data_config_from_json(json(), "cfg.json").tokenizer_vocab_size == 32000);
}

TEST_CASE("data config reads every key and round-trips through to_json") {
  json section = {{"train_files", {"/corpus/a/*.jsonl", "rel/b.txt"}},
                  {"valid_files", "/corpus/valid.jsonl"},
                  {"format", "jsonl"},
                  {"text_field", "content"},
                  {"text_split", "blank_line"},
                  {"skip_bad_lines", true},
                  {"tokenizer", "/models/t5.model"},
                  {"tokenizer_vocab_size", 8000},
                  {"tokenizer_model_type", "bpe"},
                  {"character_coverage", 1},
                  {"tokenizer_train_sentences", 5000},
                  {"shard_dir", "/tmp/shards"},
                  {"shuffle", false},
                  {"seed", 99}};
  DataConfig config = data_config_from_json(section, "cfg.json");
  CHECK(config.train_files[0] == "/corpus/a/*.jsonl");
  CHECK(config.train_files[1] == (std::filesystem::current_path() / "rel/b.txt").string());
  CHECK(config.valid_files == std::vector<std::string>{"/corpus/valid.jsonl"});
  CHECK(config.corpus.format == CorpusFormat::Jsonl);
  CHECK(config.corpus.text_field == "content");
  CHECK(config.corpus.text_split == TextSplit::BlankLine);
  CHECK(config.corpus.skip_bad_lines);
  CHECK(config.tokenizer == "/models/t5.model");
  CHECK(config.tokenizer_vocab_size == 8000);
  CHECK(config.tokenizer_model_type == "bpe");
  CHECK(config.character_coverage == 1.0);
  CHECK(config.tokenizer_train_sentences == 5000);
  CHECK(config.shard_dir == "/tmp/shards");
  CHECK_FALSE(config.shuffle);
  CHECK(config.seed == 99);

  json resolved = to_json(config);
  CHECK(to_json(data_config_from_json(resolved, "resolved.json")) == resolved);

  // A user corpus without valid_files has no validation split.
  CHECK(data_config_from_json({{"train_files", "/x/*.txt"}}, "cfg.json").valid_files.empty());
}

TEST_CASE("data config rejects unknown keys and bad values with the key's name") {
  CHECK_THROWS_WITH(data_config_from_json({{"train_file", "x"}}, "cfg.json"),
                    Catch::Contains("cfg.json") && Catch::Contains("data.train_file") &&
                        Catch::Contains("did you mean 'data.train_files'"));
  CHECK_THROWS_WITH(data_config_from_json({{"format", "parquet"}}, "cfg.json"), Catch::Contains("parquet"));
  CHECK_THROWS_WITH(data_config_from_json({{"text_split", "lines"}}, "cfg.json"), Catch::Contains("lines"));
  CHECK_THROWS_WITH(data_config_from_json({{"tokenizer_model_type", "wordpiece"}}, "cfg.json"),
                    Catch::Contains("wordpiece"));
  CHECK_THROWS_WITH(data_config_from_json({{"character_coverage", 1.5}}, "cfg.json"),
                    Catch::Contains("data.character_coverage"));
  CHECK_THROWS_WITH(data_config_from_json({{"tokenizer_vocab_size", "big"}}, "cfg.json"),
                    Catch::Contains("data.tokenizer_vocab_size") && Catch::Contains("integer"));
  CHECK_THROWS_WITH(data_config_from_json({{"train_files", 3}}, "cfg.json"), Catch::Contains("data.train_files"));
  CHECK_THROWS_WITH(data_config_from_json({{"train_files", {"ok", 3}}}, "cfg.json"),
                    Catch::Contains("data.train_files"));
  CHECK_THROWS_WITH(data_config_from_json({{"seed", -1}}, "cfg.json"), Catch::Contains("data.seed"));
  CHECK_THROWS_WITH(data_config_from_json({{"shuffle", "yes"}}, "cfg.json"), Catch::Contains("boolean"));
  CHECK_THROWS_AS(data_config_from_json(json::array(), "cfg.json"), Error);
}
