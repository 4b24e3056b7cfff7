#pragma once
// Optimizer state sharded by whole matrices (docs/design.md §7): each rank owns some parameter
// matrices, keeps their optimizer state, runs their update (Newton–Schulz, SVD, Adam) and then
// broadcasts the new weights. Whole matrices, not slices of a flat buffer as in ZeRO, because
// Muon, GaLore and GUM need the full matrix for their update.
//
// Every rank computes the plan itself from the same inputs, so the plan is a pure function of
// (items, world size) and needs no communication.
#include <string>
#include <vector>

#include "gum/core/tensor.h"
#include "gum/dist/communicator.h"

namespace gum {

struct ShardItem {
  std::string name;  // for messages and the plan summary
  double cost = 0;   // relative work or memory of this item's update (>= 0, finite)
};

struct ShardPlan {
  int world_size = 1;
  std::vector<int> owner;          // owner[i]: the rank that updates item i
  std::vector<double> rank_cost;   // total cost per rank
  std::vector<std::string> names;  // item names, as given

  bool owns(int rank, size_t item) const { return owner.at(item) == rank; }
  // Indices of the items `rank` owns, ascending.
  std::vector<size_t> owned_by(int rank) const;
  // Largest rank cost over the mean rank cost (1 = perfect balance; 1 when there is no cost).
  double imbalance() const;
  // One line per rank: "rank 1: 14 items, cost 3.2e+09 (25.1%)".
  std::string summary() const;
};

// Longest-processing-time-first greedy (Graham 1969, "Bounds on multiprocessing timing
// anomalies"): items in decreasing cost, ties by lower index, each to the rank with the least
// cost so far, ties to the lower rank. The largest rank cost is within 4/3 of the optimum and at
// most mean + largest item. Throws a usage error for world_size < 1 or a negative or non-finite
// cost (naming the item).
ShardPlan plan_shards(const std::vector<ShardItem>& items, int world_size);

// Cost models for ShardItem::cost.
// Elementwise work or state memory (Adam moments): the number of elements.
double numel_cost(const Shape& shape);
// Work of a Newton–Schulz iteration or an SVD of an m x n matrix: dominated by m * n * min(m, n)
// multiply-adds (Muon's X X^T X products; a thin SVD). Vectors (rank < 2) cost their numel.
double matrix_update_cost(const Shape& shape);

// After each owner has updated its items, every rank receives the new values: tensors[i] is
// broadcast from owner[i]. tensors.size() must equal the plan's item count; all tensors live on
// comm.device().
void broadcast_from_owners(Communicator& comm, const ShardPlan& plan, const std::vector<Tensor>& tensors);
// The same for some items only (a layer whose update is done): tensors[i] for each i in
// `items`, in the given order, which every rank must pass identically.
void broadcast_from_owners(Communicator& comm, const ShardPlan& plan, const std::vector<Tensor>& tensors,
                           const std::vector<size_t>& items);

// Checkpointing sharded state: every rank passes the host tensors it holds; `root` receives
// all ranks' maps (index = rank), the others an empty vector. Goes through broadcast_bytes one
// rank at a time, so every rank briefly holds one other rank's part.
std::vector<TensorMap> gather_tensor_maps(Communicator& comm, const TensorMap& mine, int root);

// One unsharded state from the ranks' parts: a tensor held by one rank is taken as is; one held
// by several (counters, sampler positions, per-parameter flags) must be equal bytes, except an
// I64 tensor of equal shape, combined element-wise by max (per-parameter flags such as
// "has projector" that only the owner sets). Anything else throws naming the tensor.
TensorMap merge_sharded_parts(const std::vector<TensorMap>& parts);

}  // namespace gum
