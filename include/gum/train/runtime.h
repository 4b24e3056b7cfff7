#pragma once
// What every verb (train, eval, plan) sets up the same way: the backend on this rank's
// device, the communicator, CPU threads, and how training builds its model.
#include <memory>

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

// OpenMP and OpenBLAS threads; 0 leaves the library defaults (all cores).
void set_cpu_threads(int threads);

}  // namespace gum
