#include "gum/dist/sharding.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "gum/core/error.h"

namespace gum {

std::vector<size_t> ShardPlan::owned_by(int rank) const {
  std::vector<size_t> items;
  for (size_t i = 0; i < owner.size(); ++i)
    if (owner[i] == rank) items.push_back(i);
  return items;
}

double ShardPlan::imbalance() const {
  double total = std::accumulate(rank_cost.begin(), rank_cost.end(), 0.0);
  if (total <= 0) return 1;
  double largest = *std::max_element(rank_cost.begin(), rank_cost.end());
  return largest / (total / world_size);
}

std::string ShardPlan::summary() const {
  double total = std::accumulate(rank_cost.begin(), rank_cost.end(), 0.0);
  std::string text;
  for (int rank = 0; rank < world_size; ++rank) {
    char line[160];
    double share = total > 0 ? 100.0 * rank_cost[rank] / total : 0.0;
    std::snprintf(line, sizeof(line), "rank %d: %zu items, cost %.3g (%.1f%%)\n", rank, owned_by(rank).size(),
                  rank_cost[rank], share);
    text += line;
  }
  return text;
}

ShardPlan plan_shards(const std::vector<ShardItem>& items, int world_size) {
  if (world_size < 1) usage_error("sharding plan: world size must be at least 1, got ", world_size);
  ShardPlan plan;
  plan.world_size = world_size;
  plan.owner.assign(items.size(), 0);
  plan.rank_cost.assign(static_cast<size_t>(world_size), 0.0);
  for (size_t i = 0; i < items.size(); ++i) {
    if (!std::isfinite(items[i].cost) || items[i].cost < 0)
      usage_error("sharding plan: item ", i, " '", items[i].name, "' has cost ", items[i].cost,
                  " (costs must be finite and >= 0)");
    plan.names.push_back(items[i].name);
  }

  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // stable_sort keeps equal costs in index order: the tie rule that makes the plan reproducible.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return items[a].cost > items[b].cost; });
  for (size_t item : order) {
    // min_element returns the first minimum: ties go to the lower rank.
    auto least = std::min_element(plan.rank_cost.begin(), plan.rank_cost.end());
    int rank = static_cast<int>(least - plan.rank_cost.begin());
    plan.owner[item] = rank;
    *least += items[item].cost;
  }
  return plan;
}

double numel_cost(const Shape& shape) { return static_cast<double>(shape.numel()); }

double matrix_update_cost(const Shape& shape) {
  if (shape.rank < 2) return numel_cost(shape);
  double cols = static_cast<double>(shape[shape.rank - 1]);
  double rows = static_cast<double>(shape.numel()) / std::max(cols, 1.0);
  return rows * cols * std::min(rows, cols);
}

void broadcast_from_owners(Communicator& comm, const ShardPlan& plan, const std::vector<Tensor>& tensors) {
  if (tensors.size() != plan.owner.size())
    runtime_error("broadcast_from_owners: ", tensors.size(), " tensors for a plan of ", plan.owner.size(), " items");
  if (plan.world_size != comm.world_size())
    runtime_error("broadcast_from_owners: the plan is for world size ", plan.world_size, " but the job has ",
                  comm.world_size(), " ranks");
  for (size_t i = 0; i < tensors.size(); ++i) comm.broadcast(tensors[i], plan.owner[i]);
}

}  // namespace gum
