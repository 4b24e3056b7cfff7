#include "low_rank_optimizer.h"

#include <algorithm>
#include <cmath>

#include "gum/core/error.h"
#include "gum/core/logging.h"

namespace gum {

FieldTable<ProjectionKeys> projection_keys() {
  return {
      {"rank", &ProjectionKeys::rank, at_least(1)},
      {"update_proj_gap", &ProjectionKeys::update_proj_gap, at_least(1)},
  };
}

FieldTable<RangeFinderKeys> range_finder_keys() {
  return {
      {"projector", &RangeFinderKeys::projector, one_of({"svd", "randomized"})},
      {"power_iterations", &RangeFinderKeys::power_iterations, at_least(0)},
      {"oversampling", &RangeFinderKeys::oversampling, at_least(0)},
  };
}

LowRankOptimizer::LowRankOptimizer(const OptimizerContext& ctx, const LowRankKeys& keys)
    : MatrixOptimizer(ctx, keys), keys_(keys) {
  shapes_.resize(params_.size());
  has_projector_.assign(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& p = params_[i];
    if (!p.is_matrix()) continue;
    const int64_t smaller = std::min(p.param.dim(0), p.param.dim(1));
    if (keys_.rank > smaller)
      usage_error("optimizer.rank = ", keys_.rank, " exceeds min(m, n) = ", smaller, " of '", p.name, "' ",
                  p.param.shape.str());
    shapes_[i] = low_rank_shape(p.param.shape, keys_.rank);
  }
}

size_t LowRankOptimizer::top_r_workspace_elems(size_t index) const {
  const LowRankShape& s = shapes_[index];
  const DType grad_dtype = params_[index].grad.dtype;
  return keys_.projector == "randomized" ? randomized_projector_workspace_elems(s, keys_.oversampling, grad_dtype)
                                         : gradient_svd_workspace_elems(s, grad_dtype);
}

std::vector<FactorizationShape> LowRankOptimizer::top_r_factorizations(size_t index) const {
  const LowRankShape& s = shapes_[index];
  if (keys_.projector == "randomized") return randomized_projector_factorizations(s, keys_.oversampling);
  return {gradient_svd_factorization(s)};
}

size_t LowRankOptimizer::projection_gradient_elems(size_t index) const {
  const Tensor& g = params_[index].grad;
  return g.dtype != state_dtype() && g.dtype == DType::BF16 ? static_cast<size_t>(g.numel()) : 0;
}

Tensor LowRankOptimizer::projection_gradient(size_t index, ScratchPad& pad) {
  const Tensor& g = params_[index].grad;
  if (projection_gradient_elems(index) == 0) return g;
  Tensor wide = pad.take(g.shape);
  backend_.copy(wide, g);
  return wide;
}

void LowRankOptimizer::allocate_low_rank(size_t workspace_elems, size_t refresh_workspace_elems,
                                         const std::vector<FactorizationShape>& factorizations) {
  allocate(workspace_elems);
  refresh_workspace_ = Arena(backend_, DType::F32,
                             {NamedShape{"refresh_workspace", Shape{static_cast<int64_t>(refresh_workspace_elems)}}});
  refresh_pad_ = ScratchPad(refresh_workspace_.all());
  refresh_issued_.assign(params_.size(), 0);
  refresh_ticket_.assign(params_.size(), 0);
  TrainingShapes shapes;
  shapes.factorizations = factorizations;
  op_workspace_bytes_ = backend_.training_workspace_bytes(shapes);
  backend_.begin_side_work();  // the refreshes' SVDs and QRs run as side work: its scratch
  backend_.reserve_workspace(op_workspace_bytes_);
  backend_.end_side_work();
  int64_t max_small = 1;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].is_matrix()) max_small = std::max(max_small, shapes_[i].small_dim());
  constants_ = Arena(backend_, DType::F32, {NamedShape{"identity_prefix", Shape{max_small, keys_.rank}}});
  identity_prefix_ = constants_.view(0);
  fill_identity_prefix(backend_, identity_prefix_);
}

void LowRankOptimizer::prepare(const std::vector<size_t>& indices) {
  for (size_t i : indices)
    if (owns(i) && params_[i].is_matrix() && !refresh_issued_[i] && refresh_due(i)) issue_refresh(i);
}

void LowRankOptimizer::await_refresh(size_t index) {
  if (!refresh_issued_[index] && refresh_due(index)) issue_refresh(index);
  if (!refresh_issued_[index]) return;
  backend_.wait_side_work(refresh_ticket_[index]);
  refresh_issued_[index] = 0;
}

void LowRankOptimizer::issue_refresh(size_t index) {
  ScopedTimeSpent timed(refresh_time_);
  backend_.begin_side_work();
  try {
    refresh_pad_.reset();
    refresh(index, refresh_pad_);
  } catch (...) {
    backend_.end_side_work();
    throw;
  }
  refresh_ticket_[index] = backend_.end_side_work();
  refresh_issued_[index] = 1;
}

bool LowRankOptimizer::gradient_usable_for_projector(size_t index) {
  const double sum_squares = backend_.sum_squares(params_[index].grad);
  if (std::isfinite(sum_squares) && sum_squares > 0) return true;
  spdlog::warn("{}: step {}: gradient of '{}' is {} at a projector refresh; keeping the {} projector", name(),
               info_.step, params_[index].name, std::isfinite(sum_squares) ? "all zero" : "not finite",
               has_projector_[index] ? "previous" : "coordinate");
  return false;
}

void LowRankOptimizer::top_r_projector(size_t index, Tensor fresh, ScratchPad& pad) {
  const LowRankShape& s = shapes_[index];
  const Tensor& g = params_[index].grad;
  if (keys_.projector == "randomized") {
    randomized_projector(backend_, s, g, keys_.oversampling, keys_.power_iterations, seed_, refresh_stream(index),
                         identity_prefix_, fresh, pad);
  } else {
    GradientSvd svd = gradient_svd(backend_, s, g, pad);
    projector_from_svd(backend_, s, svd, identity_prefix_.row_slice(0, s.small_dim()), fresh);
  }
}

void LowRankOptimizer::coordinate_projector(size_t index, Tensor projector) {
  backend_.copy(projector, identity_prefix_.row_slice(0, shapes_[index].small_dim()));
}

uint64_t LowRankOptimizer::refresh_stream(size_t index) const {
  return (static_cast<uint64_t>(index + 1) << 32) | (static_cast<uint64_t>(info_.step) & 0xffffffffull);
}

void LowRankOptimizer::save_extra_state(TensorMap& out) const {
  put_i64(out, name() + ".has_projector", std::vector<int64_t>(has_projector_.begin(), has_projector_.end()));
}

void LowRankOptimizer::load_extra_state(const TensorMap& in) {
  auto flags = get_i64(in, name() + ".has_projector", static_cast<int64_t>(params_.size()));
  for (size_t i = 0; i < flags.size(); ++i) has_projector_[i] = flags[i] != 0;
}

}  // namespace gum
