#pragma once
// Sums the gradients over the ranks while backward runs, one bucket per layer, and measures the
// global norm of the summed gradient.
//
// Sum, not Avg: each rank's gradients are already scaled by 1 / (valid targets of the global
// batch), so the sum is the mean over the global batch even with uneven counts. Under sharded
// optimizer state only a matrix's owner updates it, so its gradient is reduced to the owner alone.
// A world of one goes through the communicator too (an identity, or NCCL under mpirun -np 1).
#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "gum/dist/communicator.h"
#include "gum/dist/sharding.h"
#include "gum/optim/optimizer.h"

namespace gum {

class GradientSync {
 public:
  // Called with "gradient of NAME is NaN or Inf"; must not return (it throws).
  using StopFn = std::function<void(const std::string& what)>;

  // shards: the owner of each parameter under sharded state, null when every rank holds every gradient.
  GradientSync(Communicator& comm, Backend& backend, const Optimizer& optimizer, const ShardPlan* shards, StopFn stop);

  // Backward's layer-done hook: starts the reduction of the layer's gradients and returns at once.
  // Until complete() has returned them, nobody may read or write them (Communicator's contract).
  void layer_done(int layer);
  // Waits for the oldest started layers until `keep_in_flight` are left travelling and returns
  // their parameters, ascending: ready for the update. The reduced gradients this rank holds (all,
  // or under sharded state those it owns: optimizer.owns()) are checked to be finite (stop() names
  // the first that is not) and their squares added to the norm, in parameter order.
  std::vector<size_t> complete(size_t keep_in_flight = 0);
  // The norm of every gradient complete() returned, over all ranks (under sharded state each
  // rank adds its part: a host all-reduce every rank must call).
  double finish() const;

 private:
  struct Bucket {
    std::vector<size_t> indices;
    CollectiveHandle reduction;
  };
  Communicator& comm_;
  Backend& backend_;
  const Optimizer& optimizer_;
  const ShardPlan* shards_;
  StopFn stop_;
  std::deque<Bucket> in_flight_;
  double held_sum_squares_ = 0;
};

}  // namespace gum
