#pragma once
// Tokenizers: a SentencePiece .model file (Kudo & Richardson, 2018) or a Hugging Face
// tokenizer.json (byte-level or byte-fallback BPE, exactly as the `tokenizers` library encodes),
// chosen by the file; and training a new SentencePiece model from sentences.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gum {

// What each tokenizer file format implements. Every method is safe to call from several
// threads at once (a model is read-only after loading).
class TokenizerModel {
 public:
  virtual ~TokenizerModel() = default;
  // The text's ids without BOS/EOS (callers add those where a document starts and ends).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Special tokens are kept in the text; an id outside the vocabulary is a runtime error.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string piece(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  // Special token ids, -1 when the model has none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual int32_t unk_id() const = 0;
};

// A tokenizer loaded from `path`: a SentencePiece .model file, a Hugging Face tokenizer.json,
// or a Hugging Face folder holding tokenizer.json (and, optionally, tokenizer_config.json naming
// its special tokens). An unreadable or invalid file is a runtime error naming it.
class Tokenizer {
 public:
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text) const { return model_->encode(text); }
  std::string decode(const std::vector<int32_t>& ids) const { return model_->decode(ids); }
  std::string piece(int32_t id) const { return model_->piece(id); }
  int32_t vocab_size() const { return model_->vocab_size(); }
  int32_t bos_id() const { return model_->bos_id(); }
  int32_t eos_id() const { return model_->eos_id(); }
  int32_t pad_id() const { return model_->pad_id(); }
  int32_t unk_id() const { return model_->unk_id(); }
  const TokenizerModel& model() const { return *model_; }

  // checksum64 of the bytes of the tokenizer's files (files()): shards record it so that a shard
  // is never read with a different tokenizer.
  uint64_t fingerprint() const { return fingerprint_; }
  const std::string& path() const { return path_; }
  // The files that define the tokenizer (what export copies next to the weights).
  const std::vector<std::string>& files() const { return files_; }
  // True for a Hugging Face tokenizer.json, false for a SentencePiece .model.
  bool is_hf() const { return is_hf_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
  bool is_hf_ = false;
  uint64_t fingerprint_ = 0;
  std::unique_ptr<TokenizerModel> model_;
};

// The tokenizer a model folder holds, as a path Tokenizer accepts: DIR/tokenizer.model when present
// (SentencePiece first, as before), else DIR itself when it has tokenizer.json, else "".
std::string tokenizer_in_folder(const std::string& dir);

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
