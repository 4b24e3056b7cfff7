#pragma once
// Supervised fine-tuning (SFT) rows: the examples of the configured files in memory, and a
// deterministic loader that fills rows of tokens from them.
//
// Rows: every example of n tokens fills n - 1 positions (inputs tokens[0..n-2], targets
// labels[1..n-1]). layout "pack" puts consecutive examples of the epoch's order into a row
// while they fit (RoPE positions restart at 0 for each example and doc_start = the row index
// where it begins, so attention never crosses examples); "pad" puts one example per row. The
// rest of a row is padding: token pad_id, target -1.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gum/data/sft_format.h"

namespace gum {

struct SftStats {
  uint64_t files = 0;
  uint64_t lines = 0;              // examples read
  uint64_t examples = 0;           // examples kept
  uint64_t tokens = 0;             // tokens of the kept examples (after truncation)
  uint64_t trained_tokens = 0;     // of those, tokens with a label (what the loss sees)
  uint64_t truncated = 0;          // kept but cut to seq_len + 1 tokens
  uint64_t dropped_too_long = 0;   // truncation "drop"
  uint64_t dropped_untrained = 0;  // nothing left to train on (e.g. the completion was cut off)
};

// Every example of the configured files, tokenized, truncated and in memory.
class SftDataset {
 public:
  // Reads config.files, or config.valid_files when `validation` (evaluation: the same rendering,
  // masking and truncation, so the validation loss measures what training optimises).
  SftDataset(const SftConfig& config, const TextEncoder& encoder, int seq_len, bool validation = false);
  // From examples already in memory (tests, programmatic use); truncation and stats as above.
  SftDataset(std::vector<SftExample> examples, const SftConfig& config, const TextEncoder& encoder, int seq_len);

  size_t size() const { return examples_.size(); }
  const SftExample& example(size_t i) const { return examples_[i]; }
  const SftStats& stats() const { return stats_; }
  const SftConfig& config() const { return config_; }
  int seq_len() const { return seq_len_; }
  int32_t pad_token() const { return pad_token_; }

 private:
  void keep(SftExample&& example);
  SftConfig config_;
  int seq_len_;
  int32_t pad_token_;
  std::vector<SftExample> examples_;
  SftStats stats_;
};

// Host rows for LlamaModel's TokenBatch: each vector holds rows * seq_len int32.
struct SftBatch {
  int rows = 0;
  int seq_len = 0;
  std::vector<int32_t> tokens, targets, positions, doc_start;
  int64_t trained_tokens = 0;  // targets >= 0 in these rows
  int examples = 0;            // examples that start in these rows
};

struct SftLoaderState {
  uint64_t epoch = 0;
  uint64_t next_example = 0;  // index into this epoch's shuffled order
};
nlohmann::json to_json(const SftLoaderState& s);
SftLoaderState sft_loader_state_from_json(const nlohmann::json& j, const std::string& context);

// Deterministic rows over the dataset: epoch e visits the examples in a Philox-seeded
// permutation (seed, e) (identity when not shuffling), filling rows in that order; a row never
// spans two epochs. The sequence of rows depends only on (data, config, seq_len), never on the
// world size, and the state after any batch restores it exactly.
class SftLoader {
 public:
  explicit SftLoader(const SftDataset& data);

  // Rank `rank` of `world_size` receives rows [rank * g / w, (rank + 1) * g / w) of the next
  // global batch of g = global_batch rows; every rank advances by the whole global batch.
  void next_batch(int global_batch, int rank, int world_size, SftBatch& out);

  SftLoaderState state() const { return state_; }
  // A state outside the data (an example index past the epoch) is a runtime error.
  void restore(const SftLoaderState& s);
  // Rows that one epoch fills (for pad: one per example).
  uint64_t rows_in_epoch(uint64_t epoch) const;
  // The start-of-run summary: examples, tokens, trained fraction, truncated and dropped
  // examples, rows of the first epoch and how full they are.
  void log_summary() const;

 private:
  size_t example_at(uint64_t epoch, uint64_t index) const;
  // Fills row `row` of `out` (or skips it when out is null) from the state, advancing it.
  void fill_row(SftBatch* out, int row);
  const SftDataset& data_;
  SftLoaderState state_;
};

}  // namespace gum
