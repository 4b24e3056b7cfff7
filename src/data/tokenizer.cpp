#include "gum/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <unordered_map>

#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/data/checksum.h"

namespace gum {

Tokenizer::Tokenizer(const std::string& model_path)
    : path_(model_path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  if (!std::filesystem::is_regular_file(model_path)) runtime_error("tokenizer ", model_path, ": no such file");
  const auto status = processor_->Load(model_path);
  if (!status.ok()) runtime_error("tokenizer ", model_path, ": not a valid SentencePiece model: ", status.ToString());
  fingerprint_ = checksum64_file(model_path);
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(absl::string_view(text.data(), text.size()), &ids);
  if (!status.ok()) runtime_error("tokenizer ", path_, ": encode failed: ", status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> as_int(ids.begin(), ids.end());
  for (int id : as_int)
    if (id < 0 || id >= processor_->GetPieceSize())
      runtime_error("tokenizer ", path_, ": cannot decode id ", id, " (vocabulary size ", processor_->GetPieceSize(),
                    ")");
  std::string text;
  const auto status = processor_->Decode(as_int, &text);
  if (!status.ok()) runtime_error("tokenizer ", path_, ": decode failed: ", status.ToString());
  return text;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= processor_->GetPieceSize()) runtime_error("tokenizer ", path_, ": no piece with id ", id);
  return processor_->IdToPiece(id);
}

int32_t Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return processor_->bos_id(); }
int32_t Tokenizer::eos_id() const { return processor_->eos_id(); }
int32_t Tokenizer::pad_id() const { return processor_->pad_id(); }
int32_t Tokenizer::unk_id() const { return processor_->unk_id(); }

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
