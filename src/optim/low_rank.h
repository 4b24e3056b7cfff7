#pragma once
// Low-rank projection of a weight gradient, shared by GaLore, PLUMAGE, the Haar-Stiefel
// estimator and GUM. For W [m, n] the projector acts on the smaller dimension d = min(m, n)
// (GaLore, arXiv 2403.03507, Alg. 2): P [d, r] has r orthonormal columns and
//   m <  n (Left):  R = Pᵀ G [r, n],  back(N) = P N
//   m >= n (Right): R = G P  [m, r],  back(N) = N Pᵀ
// Every function is written against Backend ops, so the CUDA backend runs it unchanged.
#include <cstdint>
#include <vector>

#include "gum/backend/backend.h"

namespace gum {

enum class ProjectionSide { Left, Right };

struct LowRankShape {
  int64_t m = 0, n = 0, r = 0;
  ProjectionSide side = ProjectionSide::Left;
  int64_t small_dim() const { return side == ProjectionSide::Left ? m : n; }
  int64_t large_dim() const { return side == ProjectionSide::Left ? n : m; }
  Shape projector() const { return Shape{small_dim(), r}; }
  Shape projected() const { return side == ProjectionSide::Left ? Shape{r, n} : Shape{m, r}; }
};
// The shape of the projection of a 2-D weight [m, n] at rank r (r <= min(m, n), checked).
LowRankShape low_rank_shape(const Shape& weight, int64_t rank);

// A bump allocator over one flat F32 workspace tensor: views are carved in order and all
// given back by reset(). Running out is an internal error (workspace sizes are computed
// up front by the *_workspace_elems functions next to each algorithm).
class ScratchPad {
 public:
  ScratchPad() = default;
  explicit ScratchPad(Tensor flat) : base_(flat) {}
  Tensor take(Shape shape);
  void reset() { used_ = 0; }
  // Gives back what was taken after `mark`, a value of used() (scratch a finished step no longer reads).
  int64_t used() const { return used_; }
  void release_to(int64_t mark);
  int64_t capacity() const { return base_.numel(); }

 private:
  Tensor base_;
  int64_t used_ = 0;
};

// out = alpha * proj(g) + beta * out: Pᵀ G (Left) or G P (Right); out has s.projected().
void project(Backend& backend, const LowRankShape& s, Tensor out, const Tensor& projector, const Tensor& g,
             float alpha = 1.0f, float beta = 0.0f);
// w = alpha * back(x) + beta * w: P X (Left) or X Pᵀ (Right); x has s.projected(), w is [m, n].
void project_back(Backend& backend, const LowRankShape& s, Tensor w, const Tensor& projector, const Tensor& x,
                  float alpha, float beta);

// A projected tensor (s.projected()) expressed in a new basis: value ← B value (Left) or
// value Bᵀ (Right), with B [r, r] = P_newᵀ P_old (or a function of it, such as B∘B for second
// moments); `rotated` is scratch of s.projected().
void change_basis(Backend& backend, const LowRankShape& s, const Tensor& change, const Tensor& value, Tensor rotated);

// Host selection matrix [k, r]: column j has value[j] in row rows[j] (zeros elsewhere).
std::vector<float> selection_matrix(int64_t k, const std::vector<int64_t>& rows, const std::vector<float>& values);

// The refreshes below read the gradient in fp32: a BF16 one (per-layer gradients under pure bf16
// weights) is first widened into the pad, which the workspace sizes count for `grad_dtype`.
//
// Each *_factorization(s) names the SVDs and QRs a refresh runs, whose backend scratch the optimizer
// reserves at start-up (Backend::training_workspace_bytes).
//
// Full thin SVD of the gradient on the projection side: the singular values (descending,
// d of them) and the singular vectors of that side. Used by top-r GaLore and PLUMAGE.
struct GradientSvd {
  Tensor vectors;          // Left: U [m, d]; Right: Vᵀ [d, n]
  Tensor singular_values;  // [d]
};
size_t gradient_svd_workspace_elems(const LowRankShape& s, DType grad_dtype);
FactorizationShape gradient_svd_factorization(const LowRankShape& s);
GradientSvd gradient_svd(Backend& backend, const LowRankShape& s, const Tensor& g, ScratchPad& pad);
// projector = (singular vectors) · selection, selection [d, r] on the device: column j picks
// (and scales) singular vector rows[j]. With the identity prefix it is GaLore's top-r P.
void projector_from_svd(Backend& backend, const LowRankShape& s, const GradientSvd& svd, const Tensor& selection,
                        Tensor projector);

// Randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1): a Gaussian sketch
// Ω [D, k] (k = min(r + oversampling, d)) drawn by fill_normal(seed, stream), `power_iterations`
// re-orthonormalised power iterations, QR, then the exact SVD of the small k-dimensional
// problem; projector = its top r directions. identity_prefix is a device [K >= k, r] matrix
// with ones on the diagonal (rows [0, k) of it are used).
size_t randomized_projector_workspace_elems(const LowRankShape& s, int oversampling, DType grad_dtype);
std::vector<FactorizationShape> randomized_projector_factorizations(const LowRankShape& s, int oversampling);
void randomized_projector(Backend& backend, const LowRankShape& s, const Tensor& g, int oversampling,
                          int power_iterations, uint64_t seed, uint64_t stream, const Tensor& identity_prefix,
                          Tensor projector, ScratchPad& pad);

// Haar-distributed point of the Stiefel manifold: Q of the thin QR of a Gaussian [d, r]
// (R with a non-negative diagonal makes Q exactly Haar; Mezzadri 2007).
size_t stiefel_projector_workspace_elems(const LowRankShape& s);
FactorizationShape stiefel_projector_factorization(const LowRankShape& s);
void stiefel_projector(Backend& backend, const LowRankShape& s, uint64_t seed, uint64_t stream, Tensor projector,
                       ScratchPad& pad);

// PLUMAGE's sampling (arXiv 2505.18313): inclusion probabilities p_i = min(1, c·σ_i) with c
// such that Σ p_i = r, then exactly r indices drawn with those marginals by systematic
// sampling (Madow 1949) from one uniform u in (0, 1). When fewer than r singular values are
// non-zero the top r are kept with p = 1 (the estimate is then exact).
std::vector<double> plumage_inclusion_probabilities(const std::vector<float>& singular_values, int64_t r);
std::vector<int64_t> systematic_sample(const std::vector<double>& probabilities, double u);

}  // namespace gum
