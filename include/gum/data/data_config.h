#pragma once
// The `data` section of a gum_train config.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gum/data/corpus.h"

namespace gum {

struct DataConfig {
  // Glob patterns (a string or a list in JSON); relative ones are made absolute against the
  // working directory when parsed. Defaults: the embedded corpus of scripts/make_corpus.sh
  // (its validation files too, but only while train_files is not given). An empty
  // valid_files means no validation split.
  std::vector<std::string> train_files;
  std::vector<std::string> valid_files;
  CorpusOptions corpus;  // format, text_field, text_split, skip_bad_lines

  // An existing SentencePiece .model, a Hugging Face tokenizer.json or a folder holding one (with
  // its tokenizer_config.json); empty: prepare trains a SentencePiece model into
  // shard_dir/tokenizer.model.
  std::string tokenizer;
  int tokenizer_vocab_size = 32000;
  std::string tokenizer_model_type = "unigram";
  double character_coverage = 0.9995;
  // At most this many lines of the training corpus (in file order) train the tokenizer.
  int64_t tokenizer_train_sentences = 1000000;

  std::string shard_dir;  // default: data/shards
  bool shuffle = true;
  uint64_t seed = 1234;
};

// Parses and validates the section (unknown keys are usage errors with the closest valid key);
// `context` names the config file in messages.
DataConfig data_config_from_json(const nlohmann::json& section, const std::string& context);
// The resolved config (absolute paths, every key), as written next to checkpoints.
nlohmann::json to_json(const DataConfig& config);

// A glob pattern or a list of them at section[key]; nothing when absent or null. Anything else
// and empty patterns are usage errors naming context and `path`.key.
std::optional<std::vector<std::string>> read_glob_patterns(const nlohmann::json& section, const std::string& key,
                                                           const std::string& context, const std::string& path);

}  // namespace gum
