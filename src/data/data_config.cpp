#include "gum/data/data_config.h"

#include <filesystem>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/data/tokenizer.h"

namespace gum {
namespace {

std::string absolute_path(const std::string& path) {
  if (path.empty()) return path;
  return std::filesystem::absolute(path).lexically_normal().string();
}

// A glob pattern or a list of them.
std::vector<std::string> read_patterns(const nlohmann::json& section, const std::string& key,
                                       const std::string& context, std::vector<std::string> fallback) {
  auto it = section.find(key);
  if (it == section.end() || it->is_null()) return fallback;
  std::vector<std::string> patterns;
  if (it->is_string()) {
    patterns.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const auto& item : *it) {
      if (!item.is_string()) usage_error(context, ": key 'data.", key, "' must hold strings, got ", item.dump());
      patterns.push_back(item.get<std::string>());
    }
  } else {
    usage_error(context, ": key 'data.", key, "' must be a glob string or a list of them, got ", it->dump());
  }
  for (const auto& p : patterns)
    if (p.empty()) usage_error(context, ": key 'data.", key, "' holds an empty pattern");
  return patterns;
}

}  // namespace

DataConfig data_config_from_json(const nlohmann::json& section, const std::string& context) {
  static const std::vector<std::string> kKeys = {"train_files",
                                                 "valid_files",
                                                 "format",
                                                 "text_field",
                                                 "text_split",
                                                 "skip_bad_lines",
                                                 "tokenizer",
                                                 "tokenizer_vocab_size",
                                                 "tokenizer_model_type",
                                                 "character_coverage",
                                                 "tokenizer_train_sentences",
                                                 "shard_dir",
                                                 "shuffle",
                                                 "seed"};
  DataConfig config;
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& s = section.is_null() ? empty : section;
  reject_unknown_keys(s, kKeys, context, "data");

  // The embedded corpus is the default; a user corpus has no validation split unless named.
  const bool default_corpus = !s.contains("train_files") || s["train_files"].is_null();
  config.train_files = read_patterns(s, "train_files", context, {"data/corpus/c4-train.*.json.gz"});
  config.valid_files = read_patterns(
      s, "valid_files", context,
      default_corpus ? std::vector<std::string>{"data/corpus/c4-validation.*.json.gz"} : std::vector<std::string>{});
  for (auto& p : config.train_files) p = absolute_path(p);
  for (auto& p : config.valid_files) p = absolute_path(p);

  std::string format = "auto", text_split = "file";
  read_key(s, "format", format, context, "data");
  config.corpus.format = corpus_format_from_name(format, context + ": data.format");
  read_key(s, "text_field", config.corpus.text_field, context, "data");
  if (config.corpus.text_field.empty()) usage_error(context, ": key 'data.text_field' must not be empty");
  read_key(s, "text_split", text_split, context, "data");
  config.corpus.text_split = text_split_from_name(text_split, context + ": data.text_split");
  read_key(s, "skip_bad_lines", config.corpus.skip_bad_lines, context, "data");

  read_key(s, "tokenizer", config.tokenizer, context, "data");
  config.tokenizer = absolute_path(config.tokenizer);
  read_key(s, "tokenizer_vocab_size", config.tokenizer_vocab_size, context, "data");
  if (config.tokenizer_vocab_size < 8)
    usage_error(context, ": key 'data.tokenizer_vocab_size' must be at least 8, got ", config.tokenizer_vocab_size);
  read_key(s, "tokenizer_model_type", config.tokenizer_model_type, context, "data");
  check_tokenizer_model_type(config.tokenizer_model_type, context + ": data.tokenizer_model_type");
  read_key(s, "character_coverage", config.character_coverage, context, "data");
  if (!(config.character_coverage > 0.0 && config.character_coverage <= 1.0))
    usage_error(context, ": key 'data.character_coverage' must be in (0, 1], got ", config.character_coverage);
  read_key(s, "tokenizer_train_sentences", config.tokenizer_train_sentences, context, "data");
  if (config.tokenizer_train_sentences < 1)
    usage_error(context, ": key 'data.tokenizer_train_sentences' must be positive, got ",
                config.tokenizer_train_sentences);

  config.shard_dir = "data/shards";
  read_key(s, "shard_dir", config.shard_dir, context, "data");
  if (config.shard_dir.empty()) usage_error(context, ": key 'data.shard_dir' must not be empty");
  config.shard_dir = absolute_path(config.shard_dir);
  read_key(s, "shuffle", config.shuffle, context, "data");
  auto seed = s.find("seed");
  if (seed != s.end() && !seed->is_null() && !(seed->is_number_integer() && seed->get<int64_t>() >= 0) &&
      !seed->is_number_unsigned())
    usage_error(context, ": key 'data.seed' must be a non-negative integer, got ", seed->dump());
  read_key(s, "seed", config.seed, context, "data");
  return config;
}

nlohmann::json to_json(const DataConfig& config) {
  return {{"train_files", config.train_files},
          {"valid_files", config.valid_files},
          {"format", corpus_format_name(config.corpus.format)},
          {"text_field", config.corpus.text_field},
          {"text_split", text_split_name(config.corpus.text_split)},
          {"skip_bad_lines", config.corpus.skip_bad_lines},
          {"tokenizer", config.tokenizer},
          {"tokenizer_vocab_size", config.tokenizer_vocab_size},
          {"tokenizer_model_type", config.tokenizer_model_type},
          {"character_coverage", config.character_coverage},
          {"tokenizer_train_sentences", config.tokenizer_train_sentences},
          {"shard_dir", config.shard_dir},
          {"shuffle", config.shuffle},
          {"seed", config.seed}};
}

}  // namespace gum
