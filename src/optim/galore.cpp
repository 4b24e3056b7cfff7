// GaLore-style projected Adam with three low-rank gradient estimators.
//
// galore_adamw — GaLore (Zhao et al., ICML 2024, arXiv 2403.03507, Alg. 2): every T steps
//   (update_proj_gap, at steps 1, T+1, ...) P = top-r singular vectors of G on the smaller
//   side (exact SVD, or the randomized range finder with projector = "randomized"). Each step
//   R = proj(G), N = Adam(R) (moments of the projected shape), W ← W − η α back(N) − η λ W.
//   Moments are neither reset nor rotated when P changes, as in the reference code.
// plumage — PLUMAGE (Haroush & Soudry, arXiv 2505.18313): at a refresh, from the SVD of G keep
//   singular component i with probability p_i = min(1, c σ_i), Σ p_i = r, drawing exactly r
//   by systematic sampling, and scale each kept component by 1/p_i, so that
//   E[P D Pᵀ G] = Σ_i σ_i u_i v_iᵀ = G at the refresh step (D = diag(1/p_i)). We implement it as
//   R = (P D)ᵀ G (left; G (P D) on the right) with back-projection by P. When P changes the Adam
//   moments are realigned into the new basis with B = P_newᵀ P_old: M ← B M, V ← (B∘B) V
//   (left side; M ← M Bᵀ, V ← V (B∘B)ᵀ on the right).
// stiefel — the Haar-Stiefel estimator of "Optimal low-rank stochastic gradient estimation"
//   (arXiv 2603.20632): P [d, r] uniform on the Stiefel manifold (QR of a Gaussian), for which
//   E[P Pᵀ] = (r/d) I, so Ĝ = (d/r) P Pᵀ G is unbiased: R = (d/r) proj(G). Redrawn every T
//   steps, moments realigned as for PLUMAGE (the old basis is unrelated to a fresh draw).
// All three keep AdamW on the non-matrix parameters, at optimizer.adamw_lr, without α.
// Random draws come from Philox streams keyed by (seed, parameter index, step).
#include <algorithm>
#include <cmath>

#include "gum/core/philox.h"
#include "low_rank_optimizer.h"

namespace gum {
namespace {

enum class Estimator { TopR, Plumage, Stiefel };

// The keys of the three estimators; PLUMAGE and Stiefel do not read the range finder's.
struct ProjectedAdamOptions : LowRankKeys {
  float scale = 0.25f;  // GaLore's alpha
};

class ProjectedAdam final : public LowRankOptimizer {
 public:
  ProjectedAdam(const OptimizerContext& ctx, const ProjectedAdamOptions& options, Estimator estimator, std::string name)
      : LowRankOptimizer(ctx, options), options_(options), estimator_(estimator), name_(std::move(name)) {
    size_t workspace = 0;
    for (size_t i : declare_adamw_for_non_matrices()) {
      const LowRankShape& s = shape(i);
      declare_state(i, "exp_avg", s.projected());
      declare_state(i, "exp_avg_sq", s.projected());
      declare_state(i, "projector", s.projector());
      if (estimator_ == Estimator::Plumage) declare_state(i, "projector_scaled", s.projector());
      const size_t projected = static_cast<size_t>(s.projected().numel());
      const size_t projector = static_cast<size_t>(s.projector().numel());
      const size_t rr = static_cast<size_t>(s.r * s.r);
      size_t refresh = 0;
      if (estimator_ == Estimator::TopR) refresh = projector + top_r_workspace_elems(i);
      if (estimator_ == Estimator::Plumage) refresh = 4 * projector + gradient_svd_workspace_elems(s);
      if (estimator_ == Estimator::Stiefel) refresh = projector + stiefel_projector_workspace_elems(s);
      if (estimator_ != Estimator::TopR) refresh += 2 * rr + projected;  // moment realignment
      workspace = std::max(workspace, refresh + 2 * projected);
    }
    allocate_low_rank(workspace);
  }

  std::string name() const override { return name_; }

 protected:
  void update_matrix(size_t index) override {
    const OptimParam& p = params_[index];
    const LowRankShape& s = shape(index);
    ScratchPad& pad = scratch();
    const bool refresh_step = (info_.step - 1) % options_.update_proj_gap == 0;
    if (refresh_step || !has_projector_[index]) refresh_projector(index, pad);

    const Tensor& exp_avg = state(index, 0);
    const Tensor& exp_avg_sq = state(index, 1);
    const Tensor& projector = state(index, 2);
    Tensor projected = pad.take(s.projected());
    if (estimator_ == Estimator::Plumage)
      project(backend_, s, projected, state(index, 3), p.grad);
    else if (estimator_ == Estimator::Stiefel)
      project(backend_, s, projected, projector, p.grad, static_cast<float>(s.small_dim()) / static_cast<float>(s.r));
    else
      project(backend_, s, projected, projector, p.grad);

    AdamWArgs args;
    args.beta1 = config_.beta1;
    args.beta2 = config_.beta2;
    args.eps = config_.eps;
    args.step = info_.step;
    Tensor direction = pad.take(s.projected());
    backend_.adam_direction(direction, projected, exp_avg, exp_avg_sq, args);
    const float lr = info_.lr;
    project_back(backend_, s, p.param, projector, direction, -lr * options_.scale, decay_factor(index, lr));
  }

 private:
  void refresh_projector(size_t index, ScratchPad& pad) {
    const LowRankShape& s = shape(index);
    const Tensor& projector = state(index, 2);
    if (!gradient_usable_for_projector(index)) {
      if (!has_projector_[index]) {
        coordinate_projector(index, projector);
        if (estimator_ == Estimator::Plumage) backend_.copy(state(index, 3), projector);
        has_projector_[index] = 1;
      }
      return;
    }
    Tensor fresh = pad.take(s.projector());
    Tensor fresh_scaled;
    if (estimator_ == Estimator::TopR) {
      top_r_projector(index, fresh, pad);
    } else if (estimator_ == Estimator::Stiefel) {
      stiefel_projector(backend_, s, seed_, refresh_stream(index), fresh, pad);
    } else {
      fresh_scaled = pad.take(s.projector());
      plumage_projector(index, fresh, fresh_scaled, pad);
    }
    if (estimator_ != Estimator::TopR && has_projector_[index]) realign_moments(index, fresh, pad);
    backend_.copy(projector, fresh);
    if (estimator_ == Estimator::Plumage) backend_.copy(state(index, 3), fresh_scaled);
    has_projector_[index] = 1;
  }

  void plumage_projector(size_t index, Tensor fresh, Tensor fresh_scaled, ScratchPad& pad) {
    const LowRankShape& s = shape(index);
    const int64_t d = s.small_dim();
    GradientSvd svd = gradient_svd(backend_, s, params_[index].grad, pad);
    std::vector<float> sigma(static_cast<size_t>(d));
    backend_.copy_to_host(sigma.data(), svd.singular_values);
    const std::vector<double> p = plumage_inclusion_probabilities(sigma, s.r);
    PhiloxStream stream(seed_, refresh_stream(index));
    const std::vector<int64_t> chosen = systematic_sample(p, stream.next_uniform());
    std::vector<float> ones(chosen.size(), 1.0f), inverse(chosen.size());
    for (size_t j = 0; j < chosen.size(); ++j) inverse[j] = static_cast<float>(1.0 / p[chosen[j]]);
    Tensor select = pad.take(Shape{d, s.r});
    Tensor select_scaled = pad.take(Shape{d, s.r});
    backend_.copy_from_host(select, selection_matrix(d, chosen, ones).data());
    backend_.copy_from_host(select_scaled, selection_matrix(d, chosen, inverse).data());
    projector_from_svd(backend_, s, svd, select, fresh);
    projector_from_svd(backend_, s, svd, select_scaled, fresh_scaled);
  }

  // Moments expressed in the old basis, rotated into the new one (see the file comment).
  void realign_moments(size_t index, const Tensor& fresh, ScratchPad& pad) {
    const LowRankShape& s = shape(index);
    const Tensor& exp_avg = state(index, 0);
    const Tensor& exp_avg_sq = state(index, 1);
    Tensor basis_change = pad.take(Shape{s.r, s.r});
    backend_.gemm(true, false, 1.0f, fresh, state(index, 2), 0.0f, basis_change);  // B = P_newᵀ P_old
    std::vector<float> squared(static_cast<size_t>(s.r * s.r));
    backend_.copy_to_host(squared.data(), basis_change);
    for (float& b : squared) b *= b;
    Tensor basis_change_sq = pad.take(Shape{s.r, s.r});
    backend_.copy_from_host(basis_change_sq, squared.data());
    Tensor rotated = pad.take(s.projected());
    const bool left = s.side == ProjectionSide::Left;
    for (int moment = 0; moment < 2; ++moment) {
      const Tensor& value = moment == 0 ? exp_avg : exp_avg_sq;
      const Tensor& change = moment == 0 ? basis_change : basis_change_sq;
      if (left)
        backend_.gemm(false, false, 1.0f, change, value, 0.0f, rotated);  // B M
      else
        backend_.gemm(false, true, 1.0f, value, change, 0.0f, rotated);  // M Bᵀ
      backend_.copy(value, rotated);
    }
  }

  ProjectedAdamOptions options_;
  Estimator estimator_;
  std::string name_;
};

// galore_adamw's keys, and PLUMAGE's and Stiefel's without the randomized range finder.
FieldTable<ProjectedAdamOptions> projected_adam_keys(bool range_finder) {
  return join_fields<ProjectedAdamOptions>(
      matrix_optimizer_keys(), projection_keys(),
      FieldTable<ProjectedAdamOptions>{{"scale", &ProjectedAdamOptions::scale, positive()}},
      range_finder ? range_finder_keys() : FieldTable<RangeFinderKeys>{});
}

OptimizerFactory projected_adam_factory(Estimator estimator, const std::string& name) {
  return [=](const OptimizerContext& ctx) {
    return std::make_unique<ProjectedAdam>(ctx, optimizer_options<ProjectedAdamOptions>(ctx.config), estimator, name);
  };
}

}  // namespace

OptimizerSpec galore_adamw_spec() {
  return {projected_adam_factory(Estimator::TopR, "galore_adamw"), optimizer_keys(projected_adam_keys(true))};
}

// PLUMAGE and Stiefel make their own projector: their tables leave out the range finder's keys.
OptimizerSpec plumage_spec() {
  return {projected_adam_factory(Estimator::Plumage, "plumage"), optimizer_keys(projected_adam_keys(false))};
}

OptimizerSpec stiefel_spec() {
  return {projected_adam_factory(Estimator::Stiefel, "stiefel"), optimizer_keys(projected_adam_keys(false))};
}

}  // namespace gum
