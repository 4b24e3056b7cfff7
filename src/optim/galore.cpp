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
//   stiefel_sampling = "optimal": the paper's instance-dependent distribution, as secondary
//   sources describe it: Q, σ from the eigendecomposition of a second-moment estimate
//   C ≈ E[op(G) op(G)ᵀ] [d, d]; inclusion probabilities π_i = min(1, (r − τ) √σ_i / Σ_{j≥τ} √σ_j)
//   by water-filling (τ saturated directions), exactly r directions J drawn with these
//   marginals (systematic sampling, as PLUMAGE), and P = Q_J diag(1/√π), so E[P Pᵀ] = Σ_i π_i
//   q_i q_iᵀ / π_i = I and Ĝ = P Pᵀ G is unbiased for any C. Implemented like PLUMAGE:
//   R = (Q_J diag(1/π))ᵀ G, back-projection by Q_J. stiefel_covariance = "period": C is the sum
//   of op(G) op(G)ᵀ over the steps since the last refresh, the refresh step included (at the
//   first refresh the gradient alone); "gradient": C = op(G) op(G)ᵀ of the refresh step, whose
//   eigenbasis and √σ are G's singular vectors and values: PLUMAGE's distribution.
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
  // stiefel: "haar" (isotropic, (d/r) P Pᵀ G) or "optimal" (eigenbasis of a gradient second-moment
  // estimate, water-filling inclusion probabilities); the estimate is "period" (the previous
  // period's gradients) or "gradient" (the refresh step's alone).
  std::string stiefel_sampling = "haar";
  std::string stiefel_covariance = "period";
};

class ProjectedAdam final : public LowRankOptimizer {
 public:
  ProjectedAdam(const OptimizerContext& ctx, const ProjectedAdamOptions& options, Estimator estimator, std::string name)
      : LowRankOptimizer(ctx, options), options_(options), estimator_(estimator), name_(std::move(name)) {
    size_t workspace = 0, refresh_workspace = 0;
    std::vector<FactorizationShape> factorizations;
    for (size_t i : declare_adamw_for_non_matrices()) {
      const LowRankShape& s = shape(i);
      declare_state(i, "exp_avg", s.projected());
      declare_state(i, "exp_avg_sq", s.projected());
      declare_state(i, "projector", s.projector());
      if (scaled_projector()) declare_state(i, "projector_scaled", s.projector());
      if (period_covariance()) declare_state(i, "covariance", Shape{s.small_dim(), s.small_dim()});
      const size_t projected = static_cast<size_t>(s.projected().numel());
      const size_t projector = static_cast<size_t>(s.projector().numel());
      const size_t rr = static_cast<size_t>(s.r * s.r);
      size_t refresh = 0;
      if (estimator_ == Estimator::TopR) refresh = projector + top_r_workspace_elems(i);
      if (estimator_ == Estimator::Plumage)
        refresh = 4 * projector + gradient_svd_workspace_elems(s, params_[i].grad.dtype);
      if (estimator_ == Estimator::Stiefel) refresh = projector + stiefel_projector_workspace_elems(s);
      if (optimal()) {
        const size_t dd = static_cast<size_t>(s.small_dim() * s.small_dim());
        refresh =
            2 * projector + 3 * dd + static_cast<size_t>(s.small_dim()) + 2 * static_cast<size_t>(s.small_dim() * s.r);
      }
      if (estimator_ != Estimator::TopR) refresh += 2 * rr + projected;  // moment realignment
      refresh_workspace = std::max(refresh_workspace, refresh);
      workspace = std::max(workspace, projection_gradient_elems(i) + 2 * projected + opened_weights_elems(i));
      for (const FactorizationShape& f : refresh_factorizations(i)) factorizations.push_back(f);
    }
    allocate_low_rank(workspace, refresh_workspace, factorizations);
  }

  std::string name() const override { return name_; }

 protected:
  bool refresh_due(size_t index) const override {
    return (info_.step - 1) % options_.update_proj_gap == 0 || !has_projector_[index];
  }

  // The period's covariance takes this step's gradient first, on the queue that reads it next.
  void refresh(size_t index, ScratchPad& pad) override {
    if (period_covariance()) accumulate_covariance(index, state(index, covariance_state()));
    refresh_projector(index, pad);
  }

  void update_matrix(size_t index) override {
    const LowRankShape& s = shape(index);
    const bool refreshing = refresh_due(index);
    await_refresh(index);
    if (period_covariance() && !refreshing) accumulate_covariance(index, state(index, covariance_state()));
    ScratchPad& pad = scratch();

    const Tensor& exp_avg = state(index, 0);
    const Tensor& exp_avg_sq = state(index, 1);
    const Tensor& projector = state(index, 2);
    const Tensor g = projection_gradient(index, pad);
    Tensor projected = pad.take(s.projected());
    if (scaled_projector())
      project(backend_, s, projected, state(index, 3), g);
    else if (estimator_ == Estimator::Stiefel)
      project(backend_, s, projected, projector, g, static_cast<float>(s.small_dim()) / static_cast<float>(s.r));
    else
      project(backend_, s, projected, projector, g);

    AdamWArgs args;
    args.beta1 = config_.beta1;
    args.beta2 = config_.beta2;
    args.eps = config_.eps;
    args.step = info_.step;
    Tensor direction = pad.take(s.projected());
    backend_.adam_direction(direction, projected, exp_avg, exp_avg_sq, args);
    const float lr = info_.lr;
    project_back(backend_, s, open_weights(index, pad), projector, direction, -lr * options_.scale,
                 decay_factor(index, lr));
  }

 private:
  bool optimal() const { return estimator_ == Estimator::Stiefel && options_.stiefel_sampling == "optimal"; }
  bool period_covariance() const { return optimal() && options_.stiefel_covariance == "period"; }
  // PLUMAGE and the optimal estimator project with Q_J diag(1/π) and back-project with Q_J.
  bool scaled_projector() const { return estimator_ == Estimator::Plumage || optimal(); }
  size_t covariance_state() const { return scaled_projector() ? 4 : 3; }

  // The SVDs and QRs refresh_projector runs for matrix `index`.
  std::vector<FactorizationShape> refresh_factorizations(size_t index) const {
    const LowRankShape& s = shape(index);
    if (optimal()) return {{FactorizationShape::Svd, s.small_dim(), s.small_dim()}};  // of the covariance
    if (estimator_ == Estimator::TopR) return top_r_factorizations(index);
    if (estimator_ == Estimator::Plumage) return {gradient_svd_factorization(s)};
    return {stiefel_projector_factorization(s)};
  }

  // C += op(G) op(G)ᵀ: G Gᵀ [m, m] on the left, Gᵀ G [n, n] on the right.
  void accumulate_covariance(size_t index, const Tensor& covariance) {
    const Tensor& g = params_[index].grad;
    if (shape(index).side == ProjectionSide::Left)
      backend_.gemm(false, true, 1.0f, g, g, 1.0f, covariance);
    else
      backend_.gemm(true, false, 1.0f, g, g, 1.0f, covariance);
  }

  void refresh_projector(size_t index, ScratchPad& pad) {
    const LowRankShape& s = shape(index);
    const Tensor& projector = state(index, 2);
    const bool usable = gradient_usable_for_projector(index) && (!period_covariance() || covariance_usable(index));
    if (!usable) {
      if (period_covariance()) backend_.fill(state(index, covariance_state()), 0.0f);
      if (!has_projector_[index]) {
        coordinate_projector(index, projector);
        if (scaled_projector()) backend_.copy(state(index, 3), projector);
        has_projector_[index] = 1;
      }
      return;
    }
    Tensor fresh = pad.take(s.projector());
    Tensor fresh_scaled;
    if (estimator_ == Estimator::TopR) {
      top_r_projector(index, fresh, pad);
    } else if (optimal()) {
      fresh_scaled = pad.take(s.projector());
      optimal_projector(index, fresh, fresh_scaled, pad);
    } else if (estimator_ == Estimator::Stiefel) {
      stiefel_projector(backend_, s, seed_, refresh_stream(index), fresh, pad);
    } else {
      fresh_scaled = pad.take(s.projector());
      plumage_projector(index, fresh, fresh_scaled, pad);
    }
    if (estimator_ != Estimator::TopR && has_projector_[index]) realign_moments(index, fresh, pad);
    backend_.copy(projector, fresh);
    if (scaled_projector()) backend_.copy(state(index, 3), fresh_scaled);
    has_projector_[index] = 1;
  }

  // False when the accumulated second moment is non-finite or zero (a NaN gradient inside the
  // period): its eigendecomposition would mean nothing.
  bool covariance_usable(size_t index) {
    const Tensor& covariance = state(index, covariance_state());
    std::vector<float> host(static_cast<size_t>(covariance.numel()));
    backend_.copy_to_host(host.data(), covariance);
    bool nonzero = false;
    for (float x : host) {
      if (!std::isfinite(x)) return false;
      nonzero = nonzero || x != 0.0f;
    }
    return nonzero;
  }

  // Q_J and Q_J diag(1/π) from the eigendecomposition of C (an SVD: C is symmetric PSD, so its
  // left singular vectors are its eigenvectors and its singular values its eigenvalues).
  void optimal_projector(size_t index, Tensor fresh, Tensor fresh_scaled, ScratchPad& pad) {
    const LowRankShape& s = shape(index);
    const int64_t d = s.small_dim();
    Tensor covariance;
    if (period_covariance()) {
      covariance = state(index, covariance_state());
    } else {
      covariance = pad.take(Shape{d, d});
      backend_.fill(covariance, 0.0f);
      accumulate_covariance(index, covariance);
    }
    Tensor q = pad.take(Shape{d, d});
    Tensor eigenvalues = pad.take(Shape{d});
    Tensor vt = pad.take(Shape{d, d});
    backend_.svd(q, eigenvalues, vt, covariance);
    std::vector<float> root(static_cast<size_t>(d));
    backend_.copy_to_host(root.data(), eigenvalues);
    for (float& x : root) x = std::sqrt(std::max(0.0f, x));
    auto [select, select_scaled] = sampled_selection(index, root, pad);
    backend_.gemm(false, false, 1.0f, q, select, 0.0f, fresh);
    backend_.gemm(false, false, 1.0f, q, select_scaled, 0.0f, fresh_scaled);
    if (period_covariance()) backend_.fill(covariance, 0.0f);  // the next period's estimate starts empty
  }

  // Exactly r of the d directions, drawn with the water-filled inclusion probabilities
  // π_i = min(1, c·weight_i) (Σ π = r) by systematic sampling from this refresh's Philox stream:
  // the device selection matrices [d, r] with ones, and with 1/π_i, in the chosen rows.
  std::pair<Tensor, Tensor> sampled_selection(size_t index, const std::vector<float>& weights, ScratchPad& pad) {
    const int64_t d = static_cast<int64_t>(weights.size()), r = shape(index).r;
    const std::vector<double> p = plumage_inclusion_probabilities(weights, r);
    PhiloxStream stream(seed_, refresh_stream(index));
    const std::vector<int64_t> chosen = systematic_sample(p, stream.next_uniform());
    std::vector<float> ones(chosen.size(), 1.0f), inverse(chosen.size());
    for (size_t j = 0; j < chosen.size(); ++j) inverse[j] = static_cast<float>(1.0 / p[chosen[j]]);
    Tensor select = pad.take(Shape{d, r});
    Tensor select_scaled = pad.take(Shape{d, r});
    backend_.copy_from_host(select, selection_matrix(d, chosen, ones).data());
    backend_.copy_from_host(select_scaled, selection_matrix(d, chosen, inverse).data());
    return {select, select_scaled};
  }

  void plumage_projector(size_t index, Tensor fresh, Tensor fresh_scaled, ScratchPad& pad) {
    const LowRankShape& s = shape(index);
    const int64_t d = s.small_dim();
    GradientSvd svd = gradient_svd(backend_, s, params_[index].grad, pad);
    std::vector<float> sigma(static_cast<size_t>(d));
    backend_.copy_to_host(sigma.data(), svd.singular_values);
    auto [select, select_scaled] = sampled_selection(index, sigma, pad);
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
    change_basis(backend_, s, basis_change, exp_avg, rotated);
    change_basis(backend_, s, basis_change_sq, exp_avg_sq, rotated);
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
  return {projected_adam_factory(Estimator::Stiefel, "stiefel"),
          optimizer_keys(join_fields<ProjectedAdamOptions>(
              projected_adam_keys(false),
              FieldTable<ProjectedAdamOptions>{
                  {"stiefel_sampling", &ProjectedAdamOptions::stiefel_sampling, one_of({"haar", "optimal"})},
                  {"stiefel_covariance", &ProjectedAdamOptions::stiefel_covariance, one_of({"period", "gradient"})},
              }))};
}

}  // namespace gum
