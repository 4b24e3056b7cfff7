#pragma once
// Validation loss and perplexity over EvalWindows (docs/design.md §4): windows with stride seq_len,
// so every token of the validation stream after the first is predicted exactly once. The
// same function serves `gum_train eval` and the periodic evaluation during training.
#include <cstdint>

#include "gum/data/loader.h"
#include "gum/data/sft_loader.h"
#include "gum/dist/communicator.h"
#include "gum/model/llama.h"

namespace gum {

struct EvalResult {
  int64_t tokens = 0;   // predicted tokens (valid targets), all ranks
  double loss_sum = 0;  // summed cross-entropy in nats, all ranks
  double seconds = 0;
  double loss() const { return tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0; }
  double perplexity() const;  // exp(loss)
};

// Windows to evaluate for a budget of max_tokens predicted tokens (0 = all): the first
// ceil(max_tokens / seq_len) windows, the same on every rank and for every world size.
uint64_t eval_window_count(const EvalWindows& windows, int64_t max_tokens);

// Forward passes over the chosen windows, window i on rank i % world_size, in batches of up to
// model.max_batch() (a short last batch, no padding rows). Loss sums and token counts are
// summed over ranks, so every rank returns the same result.
EvalResult evaluate(LlamaModel& model, const EvalWindows& windows, Communicator& comm, int64_t max_tokens);

// SFT validation: the rows of one epoch over `valid` (build it with shuffle = false, so they
// are the files' order), packed or padded as in training, loss only on trained tokens: the
// masked loss that fine-tuning optimises. At most ceil(max_tokens / seq_len) rows (0 = all),
// row i on rank i % world_size, batched as above.
EvalResult evaluate(LlamaModel& model, const SftDataset& valid, Communicator& comm, int64_t max_tokens);

}  // namespace gum
