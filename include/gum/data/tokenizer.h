#pragma once
// A SentencePiece tokenizer (Kudo & Richardson, 2018): loading a .model file, encoding and
// decoding, and training a new model from sentences with the library's trainer.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace gum {

class Tokenizer {
 public:
  // Loads a SentencePiece .model file; an unreadable or invalid file is a runtime error naming it.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Safe to call from several threads at once (the model is read-only after loading).
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;

  int32_t vocab_size() const;
  // Special token ids, -1 when the model has none.
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  // checksum64 of the .model file's bytes: shards record it so that a shard is never read
  // with a different tokenizer.
  uint64_t fingerprint() const { return fingerprint_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint64_t fingerprint_ = 0;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

struct TokenizerTrainOptions {
  int vocab_size = 32000;
  std::string model_type = "unigram";  // unigram | bpe | char | word
  double character_coverage = 0.9995;
  int num_threads = 0;  // 0: all hardware threads
};

// Trains a model on `sentences` (each one line of text) and writes it to `output_model_path`
// (written to a temporary name, then renamed). Ids: unk 0, bos 1, eos 2, no pad. When the text
// supports fewer pieces than vocab_size, the smaller model is written with a warning.
void train_tokenizer(const std::vector<std::string>& sentences, const TokenizerTrainOptions& options,
                     const std::string& output_model_path);

// "unigram", "bpe", "char", "word"; anything else is a usage error naming `context`.
void check_tokenizer_model_type(const std::string& model_type, const std::string& context);

}  // namespace gum
