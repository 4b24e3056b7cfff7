#pragma once
// Muon's orthogonalisation (Keller Jordan, 2024: "Muon: an optimizer for hidden layers"):
// X = U / (‖U‖_F + 1e-7); `steps` times: A = X Xᵀ, B = b A + c A A, X = a X + B X with
// (a, b, c) = (3.4445, -4.7750, 2.0315). For a tall input (m > n) the same iteration runs on
// Xᵀ, which we write without a transpose as A = Xᵀ X, X = a X + X B (A and B are symmetric),
// so the Gram matrices are always min(m, n)². The result has singular values in about
// [0.68, 1.21] for input singular values >= 3e-3 of the normalised input.
#include "gum/backend/backend.h"
#include "low_rank.h"

namespace gum {

constexpr float kNewtonSchulzA = 3.4445f, kNewtonSchulzB = -4.7750f, kNewtonSchulzC = 2.0315f;

// F32 elements of `pad` that newton_schulz takes (either dtype).
size_t newton_schulz_workspace_elems(int64_t m, int64_t n);
// out = NS(in) for a 2-D in [m, n]; out must not alias in. `dtype` BF16 (optimizer.ns_dtype) runs
// the iterations on bf16 matrices, as Muon's reference implementation does: the normalisation is
// fp32 (then rounded once), each GEMM takes bf16 operands, accumulates in fp32 and rounds its
// result to bf16; the result is widened into the F32 out.
void newton_schulz(Backend& backend, Tensor out, const Tensor& in, int steps, ScratchPad& pad,
                   DType dtype = DType::F32);

}  // namespace gum
