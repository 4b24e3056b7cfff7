#pragma once
// The training loop (docs/design.md §3): data-parallel over the communicator's ranks,
// gradient accumulation over micro-batches, global-norm clipping, the fused per-layer
// update, periodic evaluation, atomic checkpoints and a bitwise-exact resume.
#include <string>

#include "gum/train/config.h"

namespace gum {

// --resume: "auto" (newest valid checkpoint of the run, else a fresh start), "never"
// (fresh start, the run's metrics file is rewritten) or a checkpoint folder.
// Returns the process exit code (0). Errors are thrown as gum::Error.
int run_training(const TrainConfig& config, const std::string& resume);

// The state a checkpoint's trainer.json holds besides the resolved config.
struct TrainerProgress {
  int64_t step = 0;    // optimizer steps done
  int64_t tokens = 0;  // training tokens consumed (all ranks)
};

}  // namespace gum
