#pragma once
// What every verb (train, eval, plan) sets up the same way: the backend on this rank's
// device, the communicator, CPU threads, and how training builds its model.
#include <cstdint>
#include <memory>
#include <string>

#include "gum/backend/backend.h"
#include "gum/dist/communicator.h"
#include "gum/model/llama.h"
#include "gum/train/config.h"

namespace gum {

struct Runtime {
  LaunchInfo launch;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
};

// Backend (training.backend, on GPU local_rank % device_count), communicator, logging with the
// rank, CPU threads (training.threads).
Runtime make_runtime(const TrainConfig& config);

// The backend's kernel choices from the training section (training.attention).
BackendOptions backend_options(const TrainingConfig& training);

// How training builds its model: ModelUse::TrainingRecompute under training.activation_checkpointing.
ModelUse training_model_use(const TrainingConfig& training);

// How a global batch splits: batch_size sequences = world_size ranks x accumulation_steps
// micro-batches x micro_batch rows.
struct BatchLayout {
  int rows_per_rank = 0;
  int micro_batch = 0;
  int accumulation_steps = 0;
  int ranks = 1;
};
// Usage error (naming `context`) when the ranks or micro_batch_size do not divide batch_size.
BatchLayout make_batch_layout(const TrainingConfig& t, int world_size, const std::string& context);

// Token rows per chunk of the LM head and loss for a micro-batch of `rows` rows:
// training.logits_chunk_rows when set, else all rows while their logits take at most 32 MiB or
// one residual stream [rows, hidden], else as many rows as fit the larger of the two.
int64_t planned_logits_chunk_rows(const TrainConfig& config, int64_t rows);
// How training lays out its model's memory: the planned logits chunk, and per-layer block gradients
// under training.fused_update with one micro-batch per step (accumulating several needs every
// layer's gradient until the last one): one set alone, two when several ranks sum each layer's
// gradient while the next layer's backward runs.
ModelMemory training_model_memory(const TrainConfig& config, const BatchLayout& layout);

// OpenMP and OpenBLAS threads; 0 leaves the library defaults (all cores).
void set_cpu_threads(int threads);

}  // namespace gum
