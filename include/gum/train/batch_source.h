#pragma once
// What the trainer trains and evaluates on: the pretraining token shards (TokenLoader windows,
// EvalWindows) or supervised fine-tuning examples (data.sft: SftLoader rows with per-example
// RoPE positions and attention starts, loss only on trained tokens). Both give this rank's
// rows of each global batch in an order that does not depend on the world size, a position
// that trainer.json saves for an exact resume, and a validation loss through evaluate().
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gum/dist/communicator.h"
#include "gum/model/llama.h"
#include "gum/train/config.h"
#include "gum/train/evaluate.h"

namespace gum {

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // True when rows carry positions and doc_start (packed SFT examples); false for plain windows,
  // whose positions are 0..T-1 and which attend to the whole row.
  virtual bool packed() const = 0;
  // This rank's rows of the next global batch of `global_batch` rows: rows
  // [rank * g / w, (rank + 1) * g / w), each seq_len int32 in every array. positions and
  // doc_start are written only when packed() (else they may be null).
  virtual void next_batch(int global_batch, int rank, int world_size, int32_t* tokens, int32_t* targets,
                          int32_t* positions, int32_t* doc_start) = 0;

  // The position in the data, for trainer.json's "loader" (pretraining keeps its
  // {"epoch", "next_window"} form). `context` names the file in restore errors.
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state, const std::string& context) = 0;

  virtual bool has_validation() const = 0;
  // Validation loss of `model` over at most max_tokens / seq_len rows (0 = all), the same on every rank.
  virtual EvalResult evaluate(LlamaModel& model, Communicator& comm, int64_t max_tokens) const = 0;

  // The start-up summary (root rank only).
  virtual void log_summary() const = 0;
};

// This rank's rows of one optimizer step: `micro_batches` micro-batches of `rows` rows of
// seq_len tokens each, with RoPE positions and attention starts when the source is packed.
// The one place that knows where micro-batch m lies.
class StepRows {
 public:
  StepRows(int micro_batches, int rows, int seq_len, bool packed);
  // Fills micro-batch m with this rank's rows of the source's next global micro-batch (rows x
  // world_size rows), for every m in order; returns this rank's count of targets >= 0.
  int64_t load(BatchSource& source, int rank, int world_size);
  TokenBatch micro_batch(int m) const;

 private:
  size_t offset(int m) const { return size_t(m) * size_t(rows_) * size_t(seq_len_); }
  int micro_batches_, rows_, seq_len_;
  bool packed_;
  std::vector<int32_t> tokens_, targets_, positions_, doc_start_;
};

// Opens the run's data: data.sft when configured, else the prepared shards of `data`. Errors
// (missing tokenizer or shards, a tokenizer larger than model.vocab_size) name config.source.
std::unique_ptr<BatchSource> open_batch_source(const TrainConfig& config);

}  // namespace gum
