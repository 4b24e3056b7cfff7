#include "newton_schulz.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "gum/core/error.h"

namespace gum {

size_t newton_schulz_workspace_elems(int64_t m, int64_t n) {
  const int64_t d = std::min(m, n);
  return static_cast<size_t>(m * n + 2 * d * d);
}

void newton_schulz(Backend& backend, Tensor out, const Tensor& in, int steps, ScratchPad& pad) {
  GUM_CHECK(in.shape.rank == 2 && out.shape == in.shape, "Newton-Schulz of ", in.shape.str(), " into ",
            out.shape.str());
  const int64_t m = in.dim(0), n = in.dim(1);
  const bool tall = m > n;  // iterate on Xᵀ so the Gram matrix is min(m, n)²
  const int64_t d = std::min(m, n);
  Tensor other = pad.take(in.shape);
  Tensor gram = pad.take(Shape{d, d});
  Tensor poly = pad.take(Shape{d, d});

  const double norm = std::sqrt(backend.sum_squares(in));
  Tensor x = out, x_next = other;
  backend.copy(x, in);
  backend.scale(x, static_cast<float>(1.0 / (norm + 1e-7)));
  for (int step = 0; step < steps; ++step) {
    if (tall)
      backend.gemm(true, false, 1.0f, x, x, 0.0f, gram);  // A = Xᵀ X
    else
      backend.gemm(false, true, 1.0f, x, x, 0.0f, gram);                 // A = X Xᵀ
    backend.gemm(false, false, kNewtonSchulzC, gram, gram, 0.0f, poly);  // B = c A A
    backend.axpby(poly, kNewtonSchulzB, gram, 1.0f);                     //   + b A
    backend.copy(x_next, x);
    if (tall)
      backend.gemm(false, false, 1.0f, x, poly, kNewtonSchulzA, x_next);  // X' = a X + X B
    else
      backend.gemm(false, false, 1.0f, poly, x, kNewtonSchulzA, x_next);  // X' = a X + B X
    std::swap(x, x_next);
  }
  if (x.data != out.data) backend.copy(out, x);
}

}  // namespace gum
