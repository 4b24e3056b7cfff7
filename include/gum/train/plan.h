#pragma once
// The memory and FLOP budget of a run: weights, gradients, optimizer state, activations and
// logits, measured from the real model and optimizer objects (so it cannot drift from what
// training allocates). `gum_train plan` builds them on a planning backend that reserves
// address space without touching it, so even a 7B plan runs on a laptop in a second.
#include <cstddef>
#include <cstdint>
#include <string>

#include "gum/model/llama.h"
#include "gum/optim/optimizer.h"
#include "gum/train/config.h"

namespace gum {

struct MemoryPlan {
  int64_t parameters = 0;
  size_t weight_bytes = 0;
  size_t gradient_bytes = 0;
  size_t optimizer_state_bytes = 0;      // Optimizer::total_state_bytes (checkpointed)
  size_t optimizer_workspace_bytes = 0;  // scratch
  size_t activation_bytes = 0;           // LlamaModel::activation_bytes (includes the logits)
  size_t logits_bytes = 0;               // micro_batch * seq_len * vocab F32
  int micro_batch = 0;
  int seq_len = 0;
  double training_flops_per_token = 0;
  std::string optimizer_table;  // optimizer_memory_table
  size_t total_bytes() const {
    return weight_bytes + gradient_bytes + optimizer_state_bytes + optimizer_workspace_bytes + activation_bytes;
  }
};

MemoryPlan measure_memory_plan(LlamaModel& model, const Optimizer& optimizer, int seq_len);
// A table a person reads: one line per component with bytes and share of the total.
std::string format_memory_plan(const MemoryPlan& plan);

// `gum_train plan`: the plan of `config` for world_size ranks (micro-batch as training would
// use) without allocating real memory or running anything. Prints to stdout.
MemoryPlan plan_run(const TrainConfig& config, int world_size);

}  // namespace gum
