#include "gradient_sync.h"

#include <algorithm>

namespace gum {

GradientSync::GradientSync(Communicator& comm, Backend& backend, const Optimizer& optimizer, const ShardPlan* shards,
                           Tensor grad_sum_squares, Tensor non_finite, int64_t step)
    : comm_(comm),
      backend_(backend),
      optimizer_(optimizer),
      shards_(shards),
      grad_sum_squares_(grad_sum_squares),
      non_finite_(non_finite),
      step_(step) {}

void GradientSync::layer_done(int layer) {
  Bucket bucket{optimizer_.layer_params(layer), {}};
  std::vector<Tensor> grads;
  std::vector<int> owners;
  for (size_t i : bucket.indices) {
    grads.push_back(optimizer_.params()[i].grad);
    if (shards_) owners.push_back(shards_->owner.at(i));
  }
  bucket.reduction =
      shards_ ? comm_.reduce_async(grads, owners, ReduceOp::Sum) : comm_.all_reduce_async(grads, ReduceOp::Sum);
  in_flight_.push_back(std::move(bucket));
}

std::vector<size_t> GradientSync::complete(size_t keep_in_flight) {
  std::vector<size_t> done;
  if (in_flight_.size() <= keep_in_flight) return done;
  // Collectives complete in the order they started: waiting for the newest of those to complete
  // completes them all.
  const size_t count = in_flight_.size() - keep_in_flight;
  comm_.wait(in_flight_[count - 1].reduction);
  for (size_t b = 0; b < count; ++b) {
    done.insert(done.end(), in_flight_.front().indices.begin(), in_flight_.front().indices.end());
    in_flight_.pop_front();
  }
  std::sort(done.begin(), done.end());
  std::vector<Tensor> grads;
  std::vector<double> indices;
  for (size_t i : done) {
    if (!optimizer_.owns(i)) continue;
    grads.push_back(optimizer_.params()[i].grad);
    indices.push_back(double(i));
  }
  backend_.sum_squares_checked(grad_sum_squares_, grads, non_finite_, double(step_), indices);
  return done;
}

void GradientSync::finish() {
  if (shards_) comm_.wait(comm_.all_reduce_async({grad_sum_squares_}, ReduceOp::Sum));
}

}  // namespace gum
