#pragma once
// Sums the gradients over the ranks while backward runs, one bucket per layer, and measures the
// sum of squares of the summed gradient on the device (nothing here waits for the GPU).
//
// Sum, not Avg: each rank's gradients are already scaled by 1 / (valid targets of the global
// batch), so the sum is the mean over the global batch even with uneven counts. Under sharded
// optimizer state only a matrix's owner updates it, so its gradient is reduced to the owner alone.
// A world of one goes through the communicator too (an identity, or NCCL under mpirun -np 1).
#include <cstddef>
#include <deque>
#include <vector>

#include "gum/dist/communicator.h"
#include "gum/dist/sharding.h"
#include "gum/optim/optimizer.h"

namespace gum {

class GradientSync {
 public:
  // shards: the owner of each parameter under sharded state, null when every rank holds every
  // gradient. grad_sum_squares (F64 [1], zeroed by the caller) receives the gradients' sum of
  // squares; non_finite (F64 [3]) records the first gradient that is NaN or Inf
  // (Backend::flag_non_finite with tag `step` and what = the parameter's index).
  GradientSync(Communicator& comm, Backend& backend, const Optimizer& optimizer, const ShardPlan* shards,
               Tensor grad_sum_squares, Tensor non_finite, int64_t step);

  // Backward's layer-done hook: starts the reduction of the layer's gradients and returns at once.
  // Until complete() has returned them, nobody may read or write them (Communicator's contract).
  void layer_done(int layer);
  // Waits for the oldest started layers until `keep_in_flight` are left travelling and returns
  // their parameters, ascending: ready for the update. The squares of the reduced gradients this
  // rank holds (all, or under sharded state those it owns: optimizer.owns()) are added to
  // grad_sum_squares in parameter order, and the running sum watched for NaN and Inf: the first
  // gradient that makes it non-finite is the first non-finite gradient.
  std::vector<size_t> complete(size_t keep_in_flight = 0);
  // Under sharded state, sums grad_sum_squares over the ranks (on the device; every rank calls
  // it); otherwise it already holds the whole gradient's sum.
  void finish();

 private:
  struct Bucket {
    std::vector<size_t> indices;
    CollectiveHandle reduction;
  };
  Communicator& comm_;
  Backend& backend_;
  const Optimizer& optimizer_;
  const ShardPlan* shards_;
  Tensor grad_sum_squares_, non_finite_;
  int64_t step_;
  std::deque<Bucket> in_flight_;
};

}  // namespace gum
