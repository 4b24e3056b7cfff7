// GEMMs by cuBLAS: the gemm op and the row-major helpers that linear.cu and attention.cu call
// (row-major handled by computing C^T = op(B)^T op(A)^T in cuBLAS's column-major view).
#include "cuda_backend.h"
#include "gum/core/error.h"
#include "library_check.h"

namespace gum::cuda {

namespace {

cudaDataType_t cuda_type(DType t, const char* op) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      runtime_error(op, ": GEMM operands must be F32 or BF16, got ", dtype_name(t));
  }
}

cublasOperation_t op_of(bool transposed) { return transposed ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

void CudaBackend::gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* a,
                                DType a_type, int64_t lda, const void* b, DType b_type, int64_t ldb, float beta,
                                void* c, DType c_type, int64_t ldc, const char* op) {
  if (a_type != b_type)
    runtime_error(op, ": A is ", dtype_name(a_type), " but B is ", dtype_name(b_type), " (both F32 or both BF16)");
  if (a_type == DType::F32 && c_type != DType::F32)
    runtime_error(op, ": F32 operands need an F32 output, got ", dtype_name(c_type));
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C (cuBLAS is not asked about empty inner dimensions)
    const Tensor c_view(c, c_type, Device::CUDA, Shape{M, N});
    if (beta == 0.0f)
      fill(c_view, 0.0f);
    else
      scale(c_view, beta);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands; each
  // row-major leading dimension is the column-major one of the transposed view.
  GUM_CUBLAS_CHECK(cublasGemmEx(cublas_, op_of(trans_b), op_of(trans_a), checked_int(N, op, "N"),
                                checked_int(M, op, "M"), checked_int(K, op, "K"), &alpha, b, cuda_type(b_type, op),
                                checked_int(ldb, op, "ldb"), a, cuda_type(a_type, op), checked_int(lda, op, "lda"),
                                &beta, c, cuda_type(c_type, op), checked_int(ldc, op, "ldc"),
                                a_type == DType::F32 ? f32_compute_ : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm_batched_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* const* a, int64_t lda, const float* const* b, int64_t ldb, float beta,
                                   const float* const* c, int64_t ldc, int64_t count, const char* op) {
  GUM_CUBLAS_CHECK(cublasGemmBatchedEx(
      cublas_, op_of(trans_b), op_of(trans_a), checked_int(N, op, "N"), checked_int(M, op, "M"),
      checked_int(K, op, "K"), &alpha, reinterpret_cast<const void* const*>(b), CUDA_R_32F, checked_int(ldb, op, "ldb"),
      reinterpret_cast<const void* const*>(a), CUDA_R_32F, checked_int(lda, op, "lda"), &beta,
      reinterpret_cast<void* const*>(const_cast<float* const*>(c)), CUDA_R_32F, checked_int(ldc, op, "ldc"),
      checked_int(count, op, "batch count"), f32_compute_, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
                       Tensor c) {
  require_device(a, "gemm", "A");
  require_device(b, "gemm", "B");
  require_device(c, "gemm", "C");
  const int64_t M = trans_a ? a.cols() : a.rows(), K = trans_a ? a.rows() : a.cols();
  const int64_t Kb = trans_b ? b.cols() : b.rows(), N = trans_b ? b.rows() : b.cols();
  if (K != Kb || c.rows() != M || c.cols() != N)
    runtime_error("gemm: shapes do not match: op(A) [", M, ", ", K, "] (A ", a.shape.str(), trans_a ? "^T" : "",
                  ") x op(B) [", Kb, ", ", N, "] (B ", b.shape.str(), trans_b ? "^T" : "", ") -> C ", c.shape.str());
  // cuBLAS takes both operands in one dtype, and F32 operands only with an F32 output. The cpu
  // backend widens BF16 tensors exactly, computes in fp32 and rounds a BF16 output once. So here a
  // BF16 operand meeting an F32 one (the low-rank optimizers' bf16 projectors against fp32
  // gradients) is widened into the op workspace, and a BF16 output of an fp32 GEMM is computed in
  // an fp32 copy there and rounded into place: the cpu's result (TF32 under allow_tf32, as every
  // F32 GEMM). The copies are the bf16 tensors' size, usually the small projectors.
  const auto either = [&](DType t) { return a.dtype == t || b.dtype == t; };
  const bool widen_operand = either(DType::BF16) && either(DType::F32);
  const bool stage_c = c.dtype == DType::BF16 && (widen_operand || (a.dtype == DType::F32 && b.dtype == DType::F32));
  if (!widen_operand && !stage_c) {
    gemm_rowmajor(trans_a, trans_b, M, N, K, alpha, a.data, a.dtype, a.cols(), b.data, b.dtype, b.cols(), beta, c.data,
                  c.dtype, c.cols(), "gemm");
    return;
  }
  const Tensor& narrow = a.dtype == DType::BF16 ? a : b;
  WorkspaceLayout layout;
  const size_t operand_at = layout.add(widen_operand ? size_t(narrow.numel()) * sizeof(float) : 0);
  const size_t c_at = layout.add(stage_c ? size_t(c.numel()) * sizeof(float) : 0);
  void* base = workspace(layout.total());
  const void *a_data = a.data, *b_data = b.data;
  if (widen_operand) {
    const Tensor wide(WorkspaceLayout::at<float>(base, operand_at), DType::F32, Device::CUDA, narrow.shape);
    copy(wide, narrow);
    (&narrow == &a ? a_data : b_data) = wide.data;
  }
  Tensor out = c;
  if (stage_c) {
    out = Tensor(WorkspaceLayout::at<float>(base, c_at), DType::F32, Device::CUDA, c.shape);
    if (beta != 0.0f) copy(out, c);  // cuBLAS reads C only when beta is nonzero
  }
  gemm_rowmajor(trans_a, trans_b, M, N, K, alpha, a_data, DType::F32, a.cols(), b_data, DType::F32, b.cols(), beta,
                out.data, DType::F32, out.cols(), "gemm");
  if (stage_c) copy(c, out);
}

}  // namespace gum::cuda
