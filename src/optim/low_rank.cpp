#include "low_rank.h"

#include <algorithm>
#include <cmath>

#include "gum/core/error.h"

namespace gum {

LowRankShape low_rank_shape(const Shape& weight, int64_t rank) {
  GUM_CHECK(weight.rank == 2, "low-rank projection of a ", weight.str(), " tensor");
  LowRankShape s;
  s.m = weight[0];
  s.n = weight[1];
  s.r = rank;
  // GaLore projects on the smaller side; a square matrix is projected on the right as in its code.
  s.side = s.m >= s.n ? ProjectionSide::Right : ProjectionSide::Left;
  GUM_CHECK(rank >= 1 && rank <= s.small_dim(), "rank ", rank, " for a ", weight.str(), " matrix");
  return s;
}

Tensor ScratchPad::take(Shape shape) {
  GUM_CHECK(used_ + shape.numel() <= base_.numel(), "optimizer workspace too small: need ", used_ + shape.numel(),
            " elements, have ", base_.numel());
  Tensor view = base_.flat_slice(used_, shape);
  used_ += shape.numel();
  return view;
}

void ScratchPad::release_to(int64_t mark) {
  GUM_CHECK(mark >= 0 && mark <= used_, "scratch mark ", mark, " beyond the ", used_, " elements taken");
  used_ = mark;
}

void project(Backend& backend, const LowRankShape& s, Tensor out, const Tensor& projector, const Tensor& g, float alpha,
             float beta) {
  if (s.side == ProjectionSide::Left)
    backend.gemm(true, false, alpha, projector, g, beta, out);  // Pᵀ G
  else
    backend.gemm(false, false, alpha, g, projector, beta, out);  // G P
}

void project_back(Backend& backend, const LowRankShape& s, Tensor w, const Tensor& projector, const Tensor& x,
                  float alpha, float beta) {
  if (s.side == ProjectionSide::Left)
    backend.gemm(false, false, alpha, projector, x, beta, w);  // P X
  else
    backend.gemm(false, true, alpha, x, projector, beta, w);  // X Pᵀ
}

void change_basis(Backend& backend, const LowRankShape& s, const Tensor& change, const Tensor& value, Tensor rotated) {
  if (s.side == ProjectionSide::Left)
    backend.gemm(false, false, 1.0f, change, value, 0.0f, rotated);  // B M
  else
    backend.gemm(false, true, 1.0f, value, change, 0.0f, rotated);  // M Bᵀ
  backend.copy(value, rotated);
}

std::vector<float> selection_matrix(int64_t k, const std::vector<int64_t>& rows, const std::vector<float>& values) {
  const int64_t r = static_cast<int64_t>(rows.size());
  GUM_CHECK(values.size() == rows.size(), "selection values");
  std::vector<float> matrix(static_cast<size_t>(k * r), 0.0f);
  for (int64_t j = 0; j < r; ++j) {
    GUM_CHECK(rows[j] >= 0 && rows[j] < k, "selection row ", rows[j], " of ", k);
    matrix[static_cast<size_t>(rows[j] * r + j)] = values[j];
  }
  return matrix;
}

// F32 elements that reading a gradient of `grad_dtype` in fp32 takes from the pad.
static size_t f32_gradient_elems(const LowRankShape& s, DType grad_dtype) {
  return grad_dtype == DType::F32 ? 0 : static_cast<size_t>(s.m * s.n);
}

// The gradient itself when F32, else its fp32 copy in the pad (exact: bf16 widens without rounding).
static Tensor f32_gradient(Backend& backend, const Tensor& g, ScratchPad& pad) {
  if (g.dtype == DType::F32) return g;
  Tensor wide = pad.take(g.shape);
  backend.copy(wide, g);
  return wide;
}

size_t gradient_svd_workspace_elems(const LowRankShape& s, DType grad_dtype) {
  const int64_t k = std::min(s.m, s.n);
  return static_cast<size_t>(s.m * k + k + k * s.n) + f32_gradient_elems(s, grad_dtype);
}

FactorizationShape gradient_svd_factorization(const LowRankShape& s) { return {FactorizationShape::Svd, s.m, s.n}; }

GradientSvd gradient_svd(Backend& backend, const LowRankShape& s, const Tensor& g, ScratchPad& pad) {
  const int64_t k = std::min(s.m, s.n);
  const Tensor g32 = f32_gradient(backend, g, pad);
  Tensor u = pad.take(Shape{s.m, k});
  Tensor sigma = pad.take(Shape{k});
  Tensor vt = pad.take(Shape{k, s.n});
  backend.svd(u, sigma, vt, g32);
  return GradientSvd{s.side == ProjectionSide::Left ? u : vt, sigma};
}

void projector_from_svd(Backend& backend, const LowRankShape& s, const GradientSvd& svd, const Tensor& selection,
                        Tensor projector) {
  if (s.side == ProjectionSide::Left)
    backend.gemm(false, false, 1.0f, svd.vectors, selection, 0.0f, projector);  // U · S
  else
    backend.gemm(true, false, 1.0f, svd.vectors, selection, 0.0f, projector);  // V · S = (Vᵀ)ᵀ S
}

// op(G) maps the large side to the small one: G [m, n] on the left, Gᵀ [n, m] on the right.
static void apply_op(Backend& backend, const LowRankShape& s, bool transposed, const Tensor& g, const Tensor& x,
                     Tensor out) {
  const bool trans_g = (s.side == ProjectionSide::Right) != transposed;
  backend.gemm(trans_g, false, 1.0f, g, x, 0.0f, out);
}

static int64_t sketch_width(const LowRankShape& s, int oversampling) {
  return std::min<int64_t>(s.r + std::max(0, oversampling), s.small_dim());
}

size_t randomized_projector_workspace_elems(const LowRankShape& s, int oversampling, DType grad_dtype) {
  const int64_t k = sketch_width(s, oversampling), d = s.small_dim(), big = s.large_dim();
  return static_cast<size_t>(2 * big * k + 2 * d * k + k + k * k + k * s.r) + f32_gradient_elems(s, grad_dtype);
}

std::vector<FactorizationShape> randomized_projector_factorizations(const LowRankShape& s, int oversampling) {
  const int64_t k = sketch_width(s, oversampling);
  return {{FactorizationShape::Qr, s.small_dim(), k}, {FactorizationShape::Svd, s.large_dim(), k}};
}

void randomized_projector(Backend& backend, const LowRankShape& s, const Tensor& gradient, int oversampling,
                          int power_iterations, uint64_t seed, uint64_t stream, const Tensor& identity_prefix,
                          Tensor projector, ScratchPad& pad) {
  const int64_t k = sketch_width(s, oversampling), d = s.small_dim(), big = s.large_dim();
  const Tensor g = f32_gradient(backend, gradient, pad);  // the sketch products' other operand is fp32
  Tensor sketch = pad.take(Shape{big, k});                // Ω, then reused for op(G)ᵀ Y
  Tensor y = pad.take(Shape{d, k});
  Tensor q = pad.take(Shape{d, k});
  backend.fill_normal(sketch, seed, stream, 0.0f, 1.0f);
  apply_op(backend, s, false, g, sketch, y);  // Y = op(G) Ω
  for (int it = 0; it < power_iterations; ++it) {
    // Orthonormalise between applications so small singular directions survive in fp32.
    backend.qr_orthonormal(q, y);
    apply_op(backend, s, true, g, q, sketch);
    apply_op(backend, s, false, g, sketch, y);
  }
  backend.qr_orthonormal(q, y);  // Q spans the dominant range of op(G)
  // Small problem: C = op(G)ᵀ Q = Bᵀ for B = Qᵀ op(G); B's left singular vectors are the rows
  // of C's Vᵀ, and Q times them approximates op(G)'s left singular vectors.
  apply_op(backend, s, true, g, q, sketch);
  Tensor uc = pad.take(Shape{big, k});
  Tensor sc = pad.take(Shape{k});
  Tensor vct = pad.take(Shape{k, k});
  backend.svd(uc, sc, vct, sketch);
  Tensor top = pad.take(Shape{k, s.r});
  backend.gemm(true, false, 1.0f, vct, identity_prefix.row_slice(0, k), 0.0f, top);  // first r columns of Vc
  backend.gemm(false, false, 1.0f, q, top, 0.0f, projector);
}

size_t stiefel_projector_workspace_elems(const LowRankShape& s) { return static_cast<size_t>(s.small_dim() * s.r); }

FactorizationShape stiefel_projector_factorization(const LowRankShape& s) {
  return {FactorizationShape::Qr, s.small_dim(), s.r};
}

void stiefel_projector(Backend& backend, const LowRankShape& s, uint64_t seed, uint64_t stream, Tensor projector,
                       ScratchPad& pad) {
  Tensor gaussian = pad.take(Shape{s.small_dim(), s.r});
  backend.fill_normal(gaussian, seed, stream, 0.0f, 1.0f);
  backend.qr_orthonormal(projector, gaussian);
}

std::vector<double> plumage_inclusion_probabilities(const std::vector<float>& singular_values, int64_t r) {
  const int64_t d = static_cast<int64_t>(singular_values.size());
  GUM_CHECK(r >= 1 && r <= d, "PLUMAGE rank ", r, " of ", d, " singular values");
  std::vector<double> p(static_cast<size_t>(d), 0.0);
  int64_t positive = 0;
  for (float sigma : singular_values) positive += (std::isfinite(sigma) && sigma > 0) ? 1 : 0;
  if (positive <= r) {
    for (int64_t i = 0; i < r; ++i) p[i] = 1.0;
    return p;
  }
  // Water-filling: the first k components saturate at p = 1, the rest get c·σ_i with
  // c = (r - k) / Σ_{i>=k} σ_i; the smallest k with c·σ_k <= 1 is the solution (σ descending).
  for (int64_t k = 0; k < r; ++k) {
    double tail = 0.0;
    for (int64_t i = k; i < d; ++i) tail += singular_values[i];
    const double c = static_cast<double>(r - k) / tail;
    if (c * singular_values[k] <= 1.0) {
      for (int64_t i = 0; i < d; ++i) p[i] = i < k ? 1.0 : std::min(1.0, c * singular_values[i]);
      return p;
    }
  }
  GUM_CHECK(false, "PLUMAGE water-filling did not terminate");
  return p;
}

std::vector<int64_t> systematic_sample(const std::vector<double>& probabilities, double u) {
  double total = 0.0;
  for (double p : probabilities) total += p;
  const int64_t r = static_cast<int64_t>(std::llround(total));
  std::vector<int64_t> chosen;
  std::vector<char> taken(probabilities.size(), 0);
  // Points u, u+1, ..., u+r-1 on the line of cumulative probabilities: component i is chosen
  // when a point falls in [C_{i-1}, C_i), which happens with probability exactly p_i <= 1.
  double cumulative = 0.0, point = u;
  for (size_t i = 0; i < probabilities.size() && static_cast<int64_t>(chosen.size()) < r; ++i) {
    cumulative += probabilities[i];
    if (point < cumulative) {
      chosen.push_back(static_cast<int64_t>(i));
      taken[i] = 1;
      point += 1.0;
    }
  }
  // Rounding can leave the last point just past the total: complete with the most likely rest.
  while (static_cast<int64_t>(chosen.size()) < r) {
    int64_t best = -1;
    for (size_t i = 0; i < probabilities.size(); ++i)
      if (!taken[i] && (best < 0 || probabilities[i] > probabilities[best])) best = static_cast<int64_t>(i);
    taken[best] = 1;
    chosen.push_back(best);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace gum
