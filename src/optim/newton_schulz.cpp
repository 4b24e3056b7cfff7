#include "newton_schulz.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "gum/core/error.h"

namespace gum {

// The F64 sum of squares (3 floats hold an 8-byte aligned double) and the F32 factor.
constexpr int64_t kNormScalarElems = 3 + 1;

size_t newton_schulz_workspace_elems(int64_t m, int64_t n) {
  const int64_t d = std::min(m, n);
  return static_cast<size_t>(m * n + 2 * d * d + kNormScalarElems);
}

namespace {

// A tensor of `shape` in `dtype` from the F32 scratch pad (a BF16 one takes half the elements).
Tensor take_as(ScratchPad& pad, Shape shape, DType dtype) {
  if (dtype == DType::F32) return pad.take(shape);
  const Tensor space = pad.take(Shape{(shape.numel() + 1) / 2});
  return Tensor(space.data, dtype, space.device, shape);
}

// An F64 [1] device scalar from the F32 pad, 8-byte aligned wherever the pad's free space starts.
Tensor take_f64_scalar(ScratchPad& pad) {
  const Tensor space = pad.take(Shape{3});
  const uintptr_t aligned = (reinterpret_cast<uintptr_t>(space.data) + 7) / 8 * 8;
  return Tensor(reinterpret_cast<void*>(aligned), DType::F64, space.device, Shape{1});
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

  // Normalised in fp32 (in `out`), then rounded once into a bf16 iterate; the norm and its
  // factor stay on the device (no host round trip per matrix).
  const Tensor sum_squares = take_f64_scalar(pad), factor = pad.take(Shape{1});
  backend.sum_into(sum_squares, in, /*squares=*/true, /*accumulate=*/false);
  backend.norm_scale(factor, sum_squares, 1.0, 1e-7, -1.0);
  backend.copy(out, in);
  backend.scale_by(out, factor);
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
