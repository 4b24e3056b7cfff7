#include "gum/data/data_config.h"

#include <filesystem>

#include "gum/core/config_fields.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/data/tokenizer.h"

namespace gum {
namespace {

std::string absolute_path(const std::string& path) {
  if (path.empty()) return path;
  return std::filesystem::absolute(path).lexically_normal().string();
}

// The keys held directly in DataConfig and in its CorpusOptions; the file patterns and the
// corpus format and text split (enums, named in JSON) are read around them.
const FieldTable<DataConfig> kDataFields = {
    {"tokenizer", &DataConfig::tokenizer},
    {"tokenizer_vocab_size", &DataConfig::tokenizer_vocab_size, at_least(8)},
    {"tokenizer_model_type", &DataConfig::tokenizer_model_type},
    {"character_coverage", &DataConfig::character_coverage, in_range(0, true, 1, false)},
    {"tokenizer_train_sentences", &DataConfig::tokenizer_train_sentences, positive()},
    {"shard_dir", &DataConfig::shard_dir},
    {"shuffle", &DataConfig::shuffle},
    {"seed", &DataConfig::seed},
};

const FieldTable<CorpusOptions> kCorpusFields = {
    {"text_field", &CorpusOptions::text_field},
    {"skip_bad_lines", &CorpusOptions::skip_bad_lines},
};

const std::vector<std::string> kNamedKeys = {"train_files", "valid_files", "format", "text_split"};

}  // namespace

std::optional<std::vector<std::string>> read_glob_patterns(const nlohmann::json& section, const std::string& key,
                                                           const std::string& context, const std::string& path) {
  auto it = section.find(key);
  if (it == section.end() || it->is_null()) return std::nullopt;
  const std::string where = path + "." + key;
  std::vector<std::string> patterns;
  if (it->is_string()) {
    patterns.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const auto& item : *it) {
      if (!item.is_string()) usage_error(context, ": key '", where, "' must hold strings, got ", item.dump());
      patterns.push_back(item.get<std::string>());
    }
  } else {
    usage_error(context, ": key '", where, "' must be a glob string or a list of them, got ", it->dump());
  }
  for (const auto& p : patterns)
    if (p.empty()) usage_error(context, ": key '", where, "' holds an empty pattern");
  return patterns;
}

DataConfig data_config_from_json(const nlohmann::json& section, const std::string& context) {
  DataConfig config;
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& s = section.is_null() ? empty : section;
  std::vector<std::string> keys = kNamedKeys;
  for (const auto& table_keys : {field_keys(kDataFields), field_keys(kCorpusFields)})
    keys.insert(keys.end(), table_keys.begin(), table_keys.end());
  reject_unknown_keys(s, keys, context, "data");

  // The embedded corpus is the default; a user corpus has no validation split unless named.
  const bool default_corpus = !s.contains("train_files") || s["train_files"].is_null();
  config.train_files = read_glob_patterns(s, "train_files", context, "data")
                           .value_or(std::vector<std::string>{"data/corpus/c4-train.*.json.gz"});
  config.valid_files = read_glob_patterns(s, "valid_files", context, "data")
                           .value_or(default_corpus ? std::vector<std::string>{"data/corpus/c4-validation.*.json.gz"}
                                                    : std::vector<std::string>{});
  for (auto& p : config.train_files) p = absolute_path(p);
  for (auto& p : config.valid_files) p = absolute_path(p);

  std::string format = "auto", text_split = "file";
  read_key(s, "format", format, context, "data");
  config.corpus.format = corpus_format_from_name(format, context + ": data.format");
  read_key(s, "text_split", text_split, context, "data");
  config.corpus.text_split = text_split_from_name(text_split, context + ": data.text_split");
  read_fields(s, kCorpusFields, config.corpus, context, "data");
  if (config.corpus.text_field.empty()) usage_error(context, ": key 'data.text_field' must not be empty");

  config.shard_dir = "data/shards";
  read_fields(s, kDataFields, config, context, "data");
  config.tokenizer = absolute_path(config.tokenizer);
  check_tokenizer_model_type(config.tokenizer_model_type, context + ": data.tokenizer_model_type");
  if (config.shard_dir.empty()) usage_error(context, ": key 'data.shard_dir' must not be empty");
  config.shard_dir = absolute_path(config.shard_dir);
  return config;
}

nlohmann::json to_json(const DataConfig& config) {
  nlohmann::json j = {{"train_files", config.train_files},
                      {"valid_files", config.valid_files},
                      {"format", corpus_format_name(config.corpus.format)},
                      {"text_split", text_split_name(config.corpus.text_split)}};
  write_fields(kCorpusFields, config.corpus, j);
  write_fields(kDataFields, config, j);
  return j;
}

}  // namespace gum
