#pragma once
// The memory and FLOP budget of a run: weights, gradients, optimizer state, activations and
// logits, measured from the real model and optimizer objects (so it cannot drift from what
// training allocates). `gum_train plan` builds them on a planning backend that reserves
// address space without touching it, so even a 7B plan runs on a laptop in a second.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gum/dist/sharding.h"
#include "gum/model/llama.h"
#include "gum/optim/optimizer.h"
#include "gum/train/config.h"

namespace gum {

struct MemoryPlan {
  int64_t parameters = 0;
  size_t weight_bytes = 0;
  size_t gradient_bytes = 0;
  size_t optimizer_state_bytes = 0;          // Optimizer::total_state_bytes (checkpointed)
  size_t optimizer_workspace_bytes = 0;      // scratch
  size_t activation_bytes = 0;               // LlamaModel::activation_bytes (includes the logits)
  size_t op_workspace_bytes = 0;             // LlamaModel::op_workspace_bytes (backend scratch)
  size_t logits_bytes = 0;                   // logits_chunk_rows * vocab, F32 or BF16 (the activations' dtype)
  int64_t logits_chunk_rows = 0;             // LlamaModel::logits_chunk_rows
  bool per_layer_grads = false;              // ModelMemory::per_layer_grads
  int gradient_sets = 0;                     // ModelMemory::gradient_sets (per_layer_grads)
  DType matrix_gradient_dtype = DType::F32;  // LlamaModel::matrix_gradient_dtype
  int micro_batch = 0;
  int seq_len = 0;
  double training_flops_per_token = 0;
  std::string optimizer_table;  // optimizer_memory_table
  // optimizer.shard_states over several ranks: optimizer_* above are those of the rank with the
  // most state (largest_state_rank); rank_state_bytes holds every rank's (empty: not sharded).
  std::vector<size_t> rank_state_bytes;
  int largest_state_rank = 0;
  size_t unsharded_optimizer_state_bytes = 0;
  size_t total_bytes() const {
    return weight_bytes + gradient_bytes + optimizer_state_bytes + optimizer_workspace_bytes + activation_bytes +
           op_workspace_bytes;
  }
};

MemoryPlan measure_memory_plan(LlamaModel& model, const Optimizer& optimizer, int seq_len);
// A table a person reads: one line per component with bytes and share of the total.
std::string format_memory_plan(const MemoryPlan& plan);

// `gum_train plan`: the plan of `config` for world_size ranks (micro-batch as training would
// use) without allocating real memory or running anything. Prints to stdout. Under
// optimizer.shard_states the optimizer is built once per rank as that rank's trainer builds it,
// and the plan is the one of the rank with the most state.
MemoryPlan plan_run(const TrainConfig& config, int world_size);

// Sharded optimizer state (optimizer.shard_states, ZeRO-1 by whole matrix, docs/design.md §7): the owner
// of each parameter, balancing the update work (Newton–Schulz or SVD of a block matrix,
// elementwise Adam of the rest: embeddings, head, norms). Every rank computes the same plan from
// the same parameters; the trainer and `gum_train plan` both use this one.
ShardPlan plan_optimizer_shards(const std::vector<OptimParam>& params, int world_size);
// OptimizerContext::owned for `rank` under `plan`.
std::vector<char> owned_by_rank(const ShardPlan& plan, int rank);
// "rank 0 1.50 MiB, rank 1 1.48 MiB": optimizer state per rank, as the trainer logs it and
// `gum_train plan` prints it.
std::string format_rank_state_bytes(const std::vector<double>& bytes_per_rank);

}  // namespace gum
