#include "gum/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/data/checksum.h"
#include "gum/data/hf_tokenizer.h"

namespace gum {

namespace {

class SentencePieceModel : public TokenizerModel {
 public:
  explicit SentencePieceModel(const std::string& path) : path_(path) {
    const auto status = processor_.Load(path);
    if (!status.ok()) runtime_error("tokenizer ", path, ": not a valid SentencePiece model: ", status.ToString());
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(absl::string_view(text.data(), text.size()), &ids);
    if (!status.ok()) runtime_error("tokenizer ", path_, ": encode failed: ", status.ToString());
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> as_int(ids.begin(), ids.end());
    for (int id : as_int)
      if (id < 0 || id >= processor_.GetPieceSize())
        runtime_error("tokenizer ", path_, ": cannot decode id ", id, " (vocabulary size ", processor_.GetPieceSize(),
                      ")");
    std::string text;
    const auto status = processor_.Decode(as_int, &text);
    if (!status.ok()) runtime_error("tokenizer ", path_, ": decode failed: ", status.ToString());
    return text;
  }

  std::string piece(int32_t id) const override {
    if (id < 0 || id >= processor_.GetPieceSize()) runtime_error("tokenizer ", path_, ": no piece with id ", id);
    return processor_.IdToPiece(id);
  }

  int32_t vocab_size() const override { return processor_.GetPieceSize(); }
  int32_t bos_id() const override { return processor_.bos_id(); }
  int32_t eos_id() const override { return processor_.eos_id(); }
  int32_t pad_id() const override { return processor_.pad_id(); }
  int32_t unk_id() const override { return processor_.unk_id(); }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) runtime_error("tokenizer ", path, ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Tokenizer::Tokenizer(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  std::string json_path;
  std::string config_path;
  if (fs::is_directory(path)) {
    json_path = (fs::path(path) / "tokenizer.json").string();
    if (!fs::is_regular_file(json_path))
      runtime_error("tokenizer ", path,
                    ": the folder has no tokenizer.json (a Hugging Face tokenizer folder needs one)");
    config_path = (fs::path(path) / "tokenizer_config.json").string();
    if (!fs::is_regular_file(config_path)) config_path.clear();
  } else if (!fs::is_regular_file(path)) {
    runtime_error("tokenizer ", path, ": no such file");
  } else if (fs::path(path).extension() == ".json") {
    json_path = path;
  }
  if (json_path.empty()) {
    model_ = std::make_unique<SentencePieceModel>(path);
    files_ = {path};
  } else {
    const std::string config_text = config_path.empty() ? std::string() : read_text_file(config_path);
    model_ = std::make_unique<HfTokenizer>(read_text_file(json_path), config_text, json_path);
    files_ = {json_path};
    if (!config_path.empty()) files_.push_back(config_path);
    is_hf_ = true;
  }
  Checksum64Stream checksum;
  for (const auto& file : files_) {
    const std::string bytes = read_text_file(file);
    checksum.update(bytes.data(), bytes.size());
  }
  // For a lone .model this equals checksum64_file, the fingerprint existing shards record.
  fingerprint_ = checksum.finish();
}

Tokenizer::~Tokenizer() = default;

std::string tokenizer_in_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "tokenizer.model")) return (fs::path(dir) / "tokenizer.model").string();
  if (fs::exists(fs::path(dir) / "tokenizer.json")) return dir;
  return {};
}

void check_tokenizer_model_type(const std::string& model_type, const std::string& context) {
  if (model_type != "unigram" && model_type != "bpe" && model_type != "char" && model_type != "word")
    usage_error(context, ": unknown tokenizer model type '", model_type, "' (expected unigram, bpe, char or word)");
}

namespace {
// Feeds the trainer from memory instead of a text file.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& sentences) : sentences_(sentences) {}
  bool done() const override { return index_ >= sentences_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return sentences_[index_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const std::vector<std::string>& sentences_;
  size_t index_ = 0;
};
}  // namespace

void train_tokenizer(const std::vector<std::string>& sentences, const TokenizerTrainOptions& options,
                     const std::string& output_model_path) {
  check_tokenizer_model_type(options.model_type, "tokenizer training");
  if (sentences.empty()) runtime_error("tokenizer training for ", output_model_path, ": no training text");
  if (options.vocab_size < 8) usage_error("tokenizer training: vocab_size ", options.vocab_size, " is too small");
  if (!(options.character_coverage > 0.0 && options.character_coverage <= 1.0))
    usage_error("tokenizer training: character_coverage ", options.character_coverage, " must be in (0, 1]");
  int threads = options.num_threads > 0 ? options.num_threads : static_cast<int>(std::thread::hardware_concurrency());
  const std::unordered_map<std::string, std::string> args = {
      {"vocab_size", std::to_string(options.vocab_size)},
      {"model_type", options.model_type},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"num_threads", std::to_string(std::max(1, threads))},
      {"input_sentence_size", "0"},         // all of them (SentencePiece refuses a limit of 100 or less)
      {"shuffle_input_sentence", "false"},  // the caller's sample is already deterministic
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      // A small corpus may not support the requested size: train what it supports and say so
      // (the model's embedding only needs vocab_size >= the tokenizer's).
      {"hard_vocab_limit", "false"},
      {"minloglevel", "2"},  // the trainer's progress log is very verbose
  };
  VectorSentenceIterator iterator(sentences);
  std::string serialized;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &serialized);
  if (!status.ok())
    runtime_error("tokenizer training for ", output_model_path, " failed: ", status.ToString(), " (", sentences.size(),
                  " sentences, vocab_size ", options.vocab_size, ")");

  sentencepiece::SentencePieceProcessor trained;
  if (!trained.LoadFromSerializedProto(serialized).ok())
    runtime_error("tokenizer training for ", output_model_path, ": the trainer returned an invalid model");
  if (trained.GetPieceSize() < options.vocab_size)
    spdlog::warn(
        "tokenizer {}: the training text ({} lines) supports only {} pieces of the {} requested: a vocabulary of "
        "{} pieces needs text in which that many distinct pieces (characters and frequent character sequences) "
        "occur; give more text or lower the vocabulary size",
        output_model_path, sentences.size(), trained.GetPieceSize(), options.vocab_size, options.vocab_size);

  const std::string temporary = output_model_path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(serialized.data(), static_cast<std::streamsize>(serialized.size()));
    out.flush();
    if (!out) runtime_error("tokenizer ", temporary, ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(temporary, output_model_path, ec);
  if (ec) runtime_error("tokenizer ", output_model_path, ": rename failed: ", ec.message());
}

}  // namespace gum
