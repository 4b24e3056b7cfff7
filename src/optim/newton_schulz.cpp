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

namespace {

// A tensor of `shape` in `dtype` from the F32 scratch pad (a BF16 one takes half the elements).
Tensor take_as(ScratchPad& pad, Shape shape, DType dtype) {
  if (dtype == DType::F32) return pad.take(shape);
  const Tensor space = pad.take(Shape{(shape.numel() + 1) / 2});
  return Tensor(space.data, dtype, space.device, shape);
}

}  // namespace

void newton_schulz(Backend& backend, Tensor out, const Tensor& in, int steps, ScratchPad& pad, DType dtype) {
  GUM_CHECK(in.shape.rank == 2 && out.shape == in.shape, "Newton-Schulz of ", in.shape.str(), " into ",
            out.shape.str());
  GUM_CHECK(dtype == DType::F32 || dtype == DType::BF16, "Newton-Schulz in ", dtype_name(dtype));
  const int64_t m = in.dim(0), n = in.dim(1);
  const bool tall = m > n;  // iterate on Xᵀ so the Gram matrix is min(m, n)²
  const int64_t d = std::min(m, n);
  // fp32 iterates in `out` and one more buffer; bf16 in two buffers of half the size.
  Tensor x = dtype == DType::F32 ? out : take_as(pad, in.shape, dtype);
  Tensor x_next = take_as(pad, in.shape, dtype);
  Tensor gram = take_as(pad, Shape{d, d}, dtype);
  Tensor poly = take_as(pad, Shape{d, d}, dtype);

  // Normalised in fp32 (in `out`), then rounded once into a bf16 iterate.
  const double norm = std::sqrt(backend.sum_squares(in));
  backend.copy(out, in);
  backend.scale(out, static_cast<float>(1.0 / (norm + 1e-7)));
  if (x.data != out.data) backend.copy(x, out);
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
