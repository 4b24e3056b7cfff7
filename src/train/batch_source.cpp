#include "gum/train/batch_source.h"

#include <algorithm>
#include <filesystem>

#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/data/checksum.h"
#include "gum/data/loader.h"
#include "gum/data/prepare.h"
#include "gum/data/sft_loader.h"
#include "gum/data/tokenizer.h"

namespace fs = std::filesystem;

namespace gum {

namespace {

void check_vocab(const TrainConfig& config, int64_t tokenizer_vocab, const std::string& tokenizer) {
  if (tokenizer_vocab > config.model.vocab_size)
    usage_error(config.source, ": model.vocab_size (", config.model.vocab_size, ") is smaller than the tokenizer's ",
                "vocabulary (", tokenizer_vocab, ", ", tokenizer, ")");
}

// Pretraining: windows of the prepared token shards.
class ShardSource : public BatchSource {
 public:
  explicit ShardSource(const TrainConfig& config) : config_(config) {
    const DataConfig& data = config.data;
    const std::string tokenizer = tokenizer_path(data);
    if (!fs::exists(tokenizer))
      usage_error(config.source, ": tokenizer ", tokenizer, " not found: run `gum_train prepare ", config.source,
                  "` first");
    const uint64_t fingerprint = checksum64_file(tokenizer);
    std::vector<std::string> train_shards = list_shards(data, "train");
    check_vocab(config, int64_t(read_shard_info(train_shards.front()).vocab_size), tokenizer);
    loader_ =
        std::make_unique<TokenLoader>(train_shards, config.training.seq_len, data.seed, data.shuffle, fingerprint);
    std::vector<std::string> valid_shards = list_shards(data, "valid");
    if (!valid_shards.empty())
      eval_windows_ = std::make_unique<EvalWindows>(valid_shards, config.training.seq_len, fingerprint);
  }

  bool packed() const override { return false; }
  void next_batch(int global_batch, int rank, int world_size, int32_t* tokens, int32_t* targets, int32_t*,
                  int32_t*) override {
    loader_->next_batch(global_batch, rank, world_size, tokens, targets);
  }
  nlohmann::json state() const override {
    const LoaderState s = loader_->state();
    return {{"epoch", s.epoch}, {"next_window", s.next_window}};
  }
  void restore(const nlohmann::json& state, const std::string& context) override {
    if (!state.contains("next_window"))
      runtime_error(context, ": loader position ", state.dump(), " is not a pretraining position (written by an ",
                    "SFT run? this config has no data.sft)");
    LoaderState s;
    s.epoch = state.at("epoch").get<uint64_t>();
    s.next_window = state.at("next_window").get<uint64_t>();
    loader_->restore(s);
  }
  bool has_validation() const override { return eval_windows_ != nullptr; }
  EvalResult evaluate(LlamaModel& model, Communicator& comm, int64_t max_tokens) const override {
    return gum::evaluate(model, *eval_windows_, comm, max_tokens);
  }
  void log_summary() const override {
    if (!eval_windows_) spdlog::info("no validation shards in {}: evaluation is off", config_.data.shard_dir);
  }

 private:
  const TrainConfig& config_;
  std::unique_ptr<TokenLoader> loader_;
  std::unique_ptr<EvalWindows> eval_windows_;
};

// Fine-tuning: rows of SFT examples (data.sft), tokenized once at start-up.
class SftSource : public BatchSource {
 public:
  explicit SftSource(const TrainConfig& config) {
    const SftConfig& sft = *config.sft;
    // A tokenizer is needed only for text examples: pre-tokenized files train without one.
    const std::string tokenizer = tokenizer_path(config.data);
    if (fs::exists(tokenizer)) {
      tokenizer_ = std::make_unique<Tokenizer>(tokenizer);
      encoder_ = text_encoder(*tokenizer_);
      check_vocab(config, encoder_.vocab_size, tokenizer);
      tokenizer_description_ = tokenizer;
    } else {
      encoder_.vocab_size = config.model.vocab_size;
      encoder_.bos_id = config.model.bos_token_id;
      encoder_.eos_id = config.model.eos_token_id;
      encoder_.pad_id = config.model.pad_token_id;
      tokenizer_description_ = "none (" + tokenizer + " not found: pre-tokenized examples only)";
    }
    train_ = std::make_unique<SftDataset>(sft, encoder_, config.training.seq_len);
    loader_ = std::make_unique<SftLoader>(*train_);
    if (!sft.valid_files.empty()) {
      SftConfig valid_config = sft;
      valid_config.shuffle = false;  // a fixed set of rows: evaluations are comparable across steps
      valid_ = std::make_unique<SftDataset>(valid_config, encoder_, config.training.seq_len, true);
    }
  }

  bool packed() const override { return true; }
  void next_batch(int global_batch, int rank, int world_size, int32_t* tokens, int32_t* targets, int32_t* positions,
                  int32_t* doc_start) override {
    loader_->next_batch(global_batch, rank, world_size, rows_);
    std::copy(rows_.tokens.begin(), rows_.tokens.end(), tokens);
    std::copy(rows_.targets.begin(), rows_.targets.end(), targets);
    std::copy(rows_.positions.begin(), rows_.positions.end(), positions);
    std::copy(rows_.doc_start.begin(), rows_.doc_start.end(), doc_start);
  }
  nlohmann::json state() const override { return to_json(loader_->state()); }
  void restore(const nlohmann::json& state, const std::string& context) override {
    if (!state.contains("next_example"))
      runtime_error(context, ": loader position ", state.dump(), " is not an SFT position (written by a ",
                    "pretraining run? this config has data.sft; start fine-tuning with model.init_from instead)");
    loader_->restore(sft_loader_state_from_json(state, context));
  }
  bool has_validation() const override { return valid_ != nullptr; }
  EvalResult evaluate(LlamaModel& model, Communicator& comm, int64_t max_tokens) const override {
    return gum::evaluate(model, *valid_, comm, max_tokens);
  }
  void log_summary() const override {
    spdlog::info("SFT tokenizer: {}", tokenizer_description_);
    loader_->log_summary();
    if (valid_) {
      const SftStats& s = valid_->stats();
      SftLoader walk(*valid_);
      spdlog::info("SFT validation: {} examples, {} trained tokens in {} rows", s.examples, s.trained_tokens,
                   walk.rows_in_epoch(0));
    } else {
      spdlog::info("no data.sft.valid_files: evaluation is off");
    }
  }

 private:
  std::unique_ptr<Tokenizer> tokenizer_;  // encoder_ refers to it
  TextEncoder encoder_;
  std::string tokenizer_description_;
  std::unique_ptr<SftDataset> train_, valid_;
  std::unique_ptr<SftLoader> loader_;  // refers to *train_
  SftBatch rows_;
};

}  // namespace

std::unique_ptr<BatchSource> open_batch_source(const TrainConfig& config) {
  if (config.sft) return std::make_unique<SftSource>(config);
  return std::make_unique<ShardSource>(config);
}

StepRows::StepRows(int micro_batches, int rows, int seq_len, bool packed)
    : micro_batches_(micro_batches), rows_(rows), seq_len_(seq_len), packed_(packed) {
  const size_t size = offset(micro_batches);
  tokens_.resize(size);
  targets_.resize(size);
  if (packed) {
    positions_.resize(size);
    doc_start_.resize(size);
  }
}

int64_t StepRows::load(BatchSource& source, int rank, int world_size) {
  for (int m = 0; m < micro_batches_; ++m) {
    const size_t at = offset(m);
    source.next_batch(rows_ * world_size, rank, world_size, tokens_.data() + at, targets_.data() + at,
                      packed_ ? positions_.data() + at : nullptr, packed_ ? doc_start_.data() + at : nullptr);
  }
  return std::count_if(targets_.begin(), targets_.end(), [](int32_t t) { return t >= 0; });
}

TokenBatch StepRows::micro_batch(int m) const {
  const size_t at = offset(m);
  TokenBatch batch;
  batch.tokens = tokens_.data() + at;
  batch.targets = targets_.data() + at;
  if (packed_) {
    batch.positions = positions_.data() + at;
    batch.doc_start = doc_start_.data() + at;
  }
  batch.batch = rows_;
  return batch;
}

}  // namespace gum
