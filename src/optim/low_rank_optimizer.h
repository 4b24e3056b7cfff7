#pragma once
// The part GaLore, PLUMAGE, the Haar-Stiefel estimator and GUM share (private to src/optim):
// per-matrix projection shapes, the GaLore projector refresh (exact SVD or randomized range
// finder) with its guard against NaN/zero gradients, and the record of which projectors exist.
#include <string>
#include <vector>

#include "optimizer_common.h"

namespace gum {

// The keys of every low-rank optimizer.
struct ProjectionKeys {
  int rank = 128;
  int update_proj_gap = 200;  // steps between projector refreshes (GUM: the period)
};
FieldTable<ProjectionKeys> projection_keys();

// The keys of the GaLore projector refresh (top_r_projector).
struct RangeFinderKeys {
  std::string projector = "svd";  // "svd" | "randomized"
  int power_iterations = 1;       // randomized range finder
  int oversampling = 8;           // randomized range finder
};
FieldTable<RangeFinderKeys> range_finder_keys();

// What LowRankOptimizer reads; each low-rank family's options derive from it.
struct LowRankKeys : MatrixOptimizerKeys, ProjectionKeys, RangeFinderKeys {};

class LowRankOptimizer : public MatrixOptimizer {
 protected:
  // Usage error when optimizer.rank exceeds min(m, n) of a matrix parameter.
  LowRankOptimizer(const OptimizerContext& ctx, const LowRankKeys& keys);

  const LowRankShape& shape(size_t index) const { return shapes_[index]; }
  // Workspace of top_r_projector for matrix `index` (fresh projector excluded), and the
  // factorizations it runs.
  size_t top_r_workspace_elems(size_t index) const;
  std::vector<FactorizationShape> top_r_factorizations(size_t index) const;
  // The gradient of matrix `index` as the projection GEMMs read it: itself, or, for a BF16 gradient
  // (per-layer gradients under pure bf16 weights) with F32 projectors, its exact fp32 copy taken
  // from `pad`, so the GEMMs meet operands of one dtype in planned memory (the CUDA gemm would
  // otherwise widen it into its op workspace at every call); and the elements that copy takes.
  Tensor projection_gradient(size_t index, ScratchPad& pad);
  size_t projection_gradient_elems(size_t index) const;
  // Allocates state, the updates' workspace, the refreshes' own workspace and the identity-prefix
  // constant, and reserves the backend's side scratch for `factorizations` (every SVD and QR a
  // refresh of a matrix this rank owns runs).
  void allocate_low_rank(size_t workspace_elems, size_t refresh_workspace_elems,
                         const std::vector<FactorizationShape>& factorizations);
  size_t op_workspace_bytes() const override { return op_workspace_bytes_; }
  size_t workspace_bytes() const override { return ArenaOptimizer::workspace_bytes() + refresh_workspace_.bytes(); }

  // Projector refreshes as side work (Backend::begin_side_work): prepare() issues the refresh of
  // every matrix among `indices` that refresh_due() names, update_matrix starts with
  // await_refresh(index), which issues it if prepare() did not, then makes the main queue wait for
  // it. A refresh runs refresh(index, pad) with `pad` over the refreshes' workspace, never the
  // updates' (scratch()), which the main queue uses meanwhile.
  void prepare(const std::vector<size_t>& indices) override;
  void await_refresh(size_t index);
  virtual bool refresh_due(size_t index) const = 0;
  virtual void refresh(size_t index, ScratchPad& pad) = 0;

  // False (with a warning naming the tensor and step) when the gradient is NaN/Inf or zero:
  // an SVD of it fails or means nothing, so the caller keeps its old projector.
  bool gradient_usable_for_projector(size_t index);
  // GaLore's projector [d, r] from the current gradient: top-r singular vectors by exact SVD
  // or by the randomized range finder (optimizer.projector).
  void top_r_projector(size_t index, Tensor fresh, ScratchPad& pad);
  // The first r coordinate directions: the projector of last resort when the very first
  // gradient is unusable.
  void coordinate_projector(size_t index, Tensor projector);
  // Philox stream of the random draws made when refreshing matrix `index` at the current
  // step: reproducible from (seed, parameter index, step), identical on every rank.
  uint64_t refresh_stream(size_t index) const;
  const Tensor& identity_prefix() const { return identity_prefix_; }

  void save_extra_state(TensorMap& out) const override;
  void load_extra_state(const TensorMap& in) override;

  std::vector<LowRankShape> shapes_;
  std::vector<char> has_projector_;

 private:
  LowRankKeys keys_;
  Arena constants_;
  Tensor identity_prefix_;
  size_t op_workspace_bytes_ = 0;
  Arena refresh_workspace_;
  ScratchPad refresh_pad_;
  std::vector<char> refresh_issued_;      // a refresh issued and not yet waited for
  std::vector<uint64_t> refresh_ticket_;  // its Backend::end_side_work ticket
  void issue_refresh(size_t index);
};

}  // namespace gum
