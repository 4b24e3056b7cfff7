#pragma once
// What every verb (train, eval, plan) sets up the same way: the backend on this rank's
// device, the communicator, CPU threads, and the bridges between the model's arenas and
// host tensor maps (checkpoints, exports).
#include <memory>
#include <string>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/dist/communicator.h"
#include "gum/model/llama.h"
#include "gum/optim/optimizer.h"
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

// How training builds its model: ModelUse::TrainingRecompute under training.activation_checkpointing.
ModelUse training_model_use(const TrainingConfig& training);

// OpenMP and OpenBLAS threads; 0 leaves the library defaults (all cores).
void set_cpu_threads(int threads);

// Optimizer parameters: views of the model's parameter and gradient arenas with group and layer.
std::vector<OptimParam> make_optim_params(LlamaModel& model);

// Every parameter as an F32 host tensor under its Hugging Face name.
TensorMap model_weights_to_host(LlamaModel& model);
// Copies `weights` into the model; a missing or mis-shaped tensor is a runtime error naming it
// and `source`. Extra tensors are an error too (a different model).
void load_model_weights(LlamaModel& model, const TensorMap& weights, const std::string& source);

}  // namespace gum
