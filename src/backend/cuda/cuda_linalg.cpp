// CudaBackend's library-backed ops: GEMM and linear layers (cuBLAS, row-major handled by
// computing C^T = op(B)^T op(A)^T in cuBLAS's column-major view), causal attention (batched
// GEMMs around the masked-softmax kernels of attention.cu), SVD and QR (cuSOLVER).
#include <algorithm>
#include <climits>
#include <cmath>

#include "cuda_backend.h"
#include "gum/core/error.h"
#include "library_check.h"
#include "../op_checks.h"

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

int checked_int(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > INT_MAX) runtime_error(op, ": ", what, " = ", v, " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

cublasOperation_t op_of(bool transposed) { return transposed ? CUBLAS_OP_T : CUBLAS_OP_N; }

void check_attention_shape(const AttentionShape& s, const Tensor& qkv, const Tensor* doc_start, const char* op) {
  op_checks::require_attention_args(s, qkv, doc_start, Device::CUDA, op);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// GEMM.

void CudaBackend::gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* a,
                                DType a_type, int64_t lda, const void* b, DType b_type, int64_t ldb, float beta,
                                void* c, DType c_type, int64_t ldc, const char* op) {
  if (a_type != b_type)
    runtime_error(op, ": A is ", dtype_name(a_type), " but B is ", dtype_name(b_type), " (both F32 or both BF16)");
  if (a_type == DType::F32 && c_type != DType::F32)
    runtime_error(op, ": F32 operands need an F32 output, got ", dtype_name(c_type));
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C (cuBLAS is not asked about empty inner dimensions)
    FloatPtr c_ptr{c, c_type == DType::BF16};
    if (beta == 0.0f)
      launch_fill(c_ptr, M * N, 0.0f, stream_);
    else
      launch_scale(c_ptr, beta, M * N, stream_);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands; each
  // row-major leading dimension is the column-major one of the transposed view.
  GUM_CUBLAS_CHECK(cublasGemmEx(cublas_, op_of(trans_b), op_of(trans_a), checked_int(N, op, "N"),
                                checked_int(M, op, "M"), checked_int(K, op, "K"), &alpha, b, cuda_type(b_type, op),
                                checked_int(ldb, op, "ldb"), a, cuda_type(a_type, op), checked_int(lda, op, "lda"),
                                &beta, c, cuda_type(c_type, op), checked_int(ldc, op, "ldc"), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm_batched_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* const* a, int64_t lda, const float* const* b, int64_t ldb, float beta,
                                   const float* const* c, int64_t ldc, int64_t count, const char* op) {
  GUM_CUBLAS_CHECK(cublasGemmBatchedEx(
      cublas_, op_of(trans_b), op_of(trans_a), checked_int(N, op, "N"), checked_int(M, op, "M"),
      checked_int(K, op, "K"), &alpha, reinterpret_cast<const void* const*>(b), CUDA_R_32F, checked_int(ldb, op, "ldb"),
      reinterpret_cast<const void* const*>(a), CUDA_R_32F, checked_int(lda, op, "lda"), &beta,
      reinterpret_cast<void* const*>(const_cast<float* const*>(c)), CUDA_R_32F, checked_int(ldc, op, "ldc"),
      checked_int(count, op, "batch count"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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
  gemm_rowmajor(trans_a, trans_b, M, N, K, alpha, a.data, a.dtype, a.cols(), b.data, b.dtype, b.cols(), beta, c.data,
                c.dtype, c.cols(), "gemm");
}

// ---------------------------------------------------------------------------------------------
// Linear layers: out = x W^T (+ bias); the bias is added by a broadcast kernel after the GEMM.

void CudaBackend::linear_forward(Tensor out, const Tensor& x, const Tensor& weight, const Tensor* bias) {
  const char* op = "linear_forward";
  require_device(x, op, "x");
  require_device(weight, op, "weight");
  require_device(out, op, "out");
  const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
  if (weight.cols() != I) runtime_error(op, ": weight ", weight.shape.str(), " does not take inputs of width ", I);
  require_numel(out, N * O, op, "out");
  gemm_rowmajor(false, true, N, O, I, 1.0f, x.data, x.dtype, I, weight.data, weight.dtype, I, 0.0f, out.data, out.dtype,
                O, op);
  if (bias) {
    require_f32(*bias, op, "bias");
    require_numel(*bias, O, op, "bias");
    launch_add_bias_rows(float_ptr(out, op, "out"), bias->f32(), N, O, stream_);
  }
}

void CudaBackend::linear_backward(Tensor dx, Tensor dweight, Tensor* dbias, const Tensor& dout, const Tensor& x,
                                  const Tensor& weight, bool accumulate_dx) {
  const char* op = "linear_backward";
  require_device(dx, op, "dx");
  require_device(dweight, op, "dweight");
  require_device(dout, op, "dout");
  require_device(x, op, "x");
  require_device(weight, op, "weight");
  const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
  if (weight.cols() != I) runtime_error(op, ": weight ", weight.shape.str(), " does not take inputs of width ", I);
  require_numel(dx, N * I, op, "dx");
  require_numel(dout, N * O, op, "dout");
  require_numel(dweight, O * I, op, "dweight");
  // dx = dout W (+ dx); dW += dout^T x.
  gemm_rowmajor(false, false, N, I, O, 1.0f, dout.data, dout.dtype, O, weight.data, weight.dtype, I,
                accumulate_dx ? 1.0f : 0.0f, dx.data, dx.dtype, I, op);
  gemm_rowmajor(true, false, O, I, N, 1.0f, dout.data, dout.dtype, O, x.data, x.dtype, I, 1.0f, dweight.data,
                dweight.dtype, I, op);
  if (dbias) {
    require_f32(*dbias, op, "dbias");
    require_numel(*dbias, O, op, "dbias");
    float* partials = static_cast<float*>(workspace(column_reduce_partials_size(N, O) * sizeof(float)));
    launch_column_reduce(dbias->f32(), float_ptr(dout, op, "dout"), FloatPtr{}, nullptr, N, O, partials, stream_);
  }
}

// ---------------------------------------------------------------------------------------------
// Attention: S = scale Q K^T per (batch, head) by one batched GEMM over the full T x T, the
// masked softmax kernel turns S into P in place (aux), O = P V by a second batched GEMM.
// Grouped-query heads share K/V through the pointer tables (query head h reads kv head h / G).
// With GUM_CUDA_ATTENTION=flash the flash-style kernels of attention.cu run instead and aux
// holds only each query row's log-sum-exp.

size_t CudaBackend::attention_aux_elems(const AttentionShape& s) const {
  const size_t rows = static_cast<size_t>(s.batch) * s.n_head * s.seq_len;
  return flash_attention_ ? rows : rows * s.seq_len;
}

void CudaBackend::attention_forward(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                                    const AttentionShape& s) {
  const char* op = "attention_forward";
  check_attention_shape(s, qkv, doc_start, op);
  require_f32(out, op, "out");
  require_f32(aux, op, "aux");
  const int64_t B = s.batch, T = s.seq_len, H = s.n_head, KV = s.n_kv_head, D = s.head_dim, G = H / KV;
  const int64_t W = s.qkv_width();
  require_numel(out, B * T * H * D, op, "out");
  if (aux.numel() < int64_t(attention_aux_elems(s)))
    runtime_error(op, ": aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
  const int32_t* doc = doc_start ? doc_start->ptr<int32_t>() : nullptr;
  if (flash_attention_) {
    launch_flash_attention_forward(out.f32(), aux.f32(), qkv.f32(), doc, int(B), int(H), int(KV), int(T), int(D),
                                   status_, stream_);
    return;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  const float* q = qkv.f32();
  const int64_t items = B * H;

  BatchPointerSpecs specs;
  specs.spec[0] = {q, T * W, D, 1, 1, 0};                      // Q of head h
  specs.spec[1] = {q + H * D, T * W, D, int(G), 1, 0};         // K of kv head h / G
  specs.spec[2] = {aux.f32(), H * T * T, T * T, 1, 1, 0};      // S / P of (b, h)
  specs.spec[3] = {q + (H + KV) * D, T * W, D, int(G), 1, 0};  // V of kv head h / G
  specs.spec[4] = {out.f32(), T * H * D, D, 1, 1, 0};          // O of head h
  specs.count = 5;
  auto** pointers = static_cast<const float**>(workspace(specs.count * items * sizeof(float*)));
  launch_fill_batch_pointers(pointers, specs, items, int(H), stream_);
  const float* const* Q = pointers;
  const float* const* Kp = pointers + items;
  const float* const* P = pointers + 2 * items;
  const float* const* Vp = pointers + 3 * items;
  const float* const* O = pointers + 4 * items;

  gemm_batched_f32(false, true, T, T, D, scale, Q, W, Kp, W, 0.0f, P, T, items, op);
  launch_causal_softmax(aux.f32(), doc, int(B), int(H), int(T), status_, stream_);
  gemm_batched_f32(false, false, T, D, T, 1.0f, P, T, Vp, W, 0.0f, O, H * D, items, op);
}

// Backward, one member g of every kv group at a time (so the dK/dV accumulations of the
// G query heads that share a kv head never race): dV += P^T dO; dP = dO V^T; dS = softmax
// backward; dQ = scale dS K; dK += scale dS^T Q.
void CudaBackend::attention_backward(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux,
                                     const Tensor& qkv, const Tensor* doc_start, const AttentionShape& s) {
  const char* op = "attention_backward";
  check_attention_shape(s, qkv, doc_start, op);
  require_f32(dqkv, op, "dqkv");
  require_f32(dout, op, "dout");
  require_f32(aux, op, "aux");
  const int64_t B = s.batch, T = s.seq_len, H = s.n_head, KV = s.n_kv_head, D = s.head_dim, G = H / KV;
  const int64_t W = s.qkv_width();
  require_numel(dqkv, qkv.numel(), op, "dqkv");
  require_numel(dout, B * T * H * D, op, "dout");
  if (aux.numel() < int64_t(attention_aux_elems(s)))
    runtime_error(op, ": aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
  const int32_t* doc = doc_start ? doc_start->ptr<int32_t>() : nullptr;
  if (flash_attention_) {
    require_f32(out, op, "out");
    require_numel(out, B * T * H * D, op, "out");
    float* delta = static_cast<float*>(workspace(size_t(B * H * T) * sizeof(float)));
    launch_flash_attention_backward(dqkv.f32(), delta, dout.f32(), out.f32(), aux.f32(), qkv.f32(), doc, int(B), int(H),
                                    int(KV), int(T), int(D), stream_);
    return;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  const int64_t items = B * KV;
  constexpr int kSpecs = 9;

  WorkspaceLayout layout;
  const size_t pointers_at = layout.add(kSpecs * items * sizeof(float*));
  const size_t dprobs_at = layout.add(items * T * T * sizeof(float));
  void* base = workspace(layout.total());
  auto** pointers = WorkspaceLayout::at<const float*>(base, pointers_at);
  float* dprobs = WorkspaceLayout::at<float>(base, dprobs_at);

  GUM_CUDA_CHECK(cudaMemsetAsync(dqkv.data, 0, dqkv.nbytes(), stream_));
  const float* q = qkv.f32();
  float* dq = dqkv.f32();
  const float* const* P = pointers;
  const float* const* dO = pointers + items;
  const float* const* dV = pointers + 2 * items;
  const float* const* Vp = pointers + 3 * items;
  const float* const* dS = pointers + 4 * items;
  const float* const* Kp = pointers + 5 * items;
  const float* const* dQ = pointers + 6 * items;
  const float* const* Q = pointers + 7 * items;
  const float* const* dK = pointers + 8 * items;
  for (int g = 0; g < G; ++g) {
    // Items are (b, kv); query head h = kv * G + g.
    BatchPointerSpecs specs;
    specs.spec[0] = {aux.f32(), H * T * T, T * T, 1, int(G), g};
    specs.spec[1] = {dout.f32(), T * H * D, D, 1, int(G), g};
    specs.spec[2] = {dq + (H + KV) * D, T * W, D, 1, 1, 0};
    specs.spec[3] = {q + (H + KV) * D, T * W, D, 1, 1, 0};
    specs.spec[4] = {dprobs, KV * T * T, T * T, 1, 1, 0};
    specs.spec[5] = {q + H * D, T * W, D, 1, 1, 0};
    specs.spec[6] = {dq, T * W, D, 1, int(G), g};
    specs.spec[7] = {q, T * W, D, 1, int(G), g};
    specs.spec[8] = {dq + H * D, T * W, D, 1, 1, 0};
    specs.count = kSpecs;
    launch_fill_batch_pointers(pointers, specs, items, int(KV), stream_);

    gemm_batched_f32(true, false, T, D, T, 1.0f, P, T, dO, H * D, 1.0f, dV, W, items, op);
    gemm_batched_f32(false, true, T, T, D, 1.0f, dO, H * D, Vp, W, 0.0f, dS, T, items, op);
    launch_causal_softmax_backward(dprobs, aux.f32(), doc, int(B), int(H), int(KV), int(T), g, stream_);
    gemm_batched_f32(false, false, T, D, T, scale, dS, T, Kp, W, 0.0f, dQ, W, items, op);
    gemm_batched_f32(true, false, T, D, T, scale, dS, T, Q, W, 1.0f, dK, W, items, op);
  }
}

// Incremental decoding: the warp-per-row kernels of attention.cu (append, then online softmax
// over the cache), whichever GUM_CUDA_ATTENTION says: one query row per head is too thin for GEMMs.
void CudaBackend::cached_attention_forward(Tensor out, Tensor kv_cache, const Tensor& qkv, int past_len,
                                           const AttentionShape& s) {
  const int64_t capacity = op_checks::require_cached_attention_args(s, out, kv_cache, qkv, past_len, Device::CUDA,
                                                                    "cached_attention_forward");
  launch_cached_attention_forward(out.f32(), kv_cache.f32(), qkv.f32(), s.batch, s.seq_len, past_len,
                                  checked_int(capacity, "cached_attention_forward", "capacity"), s.n_head, s.n_kv_head,
                                  s.head_dim, stream_);
}

// ---------------------------------------------------------------------------------------------
// SVD and QR (cuSOLVER, column-major). A row-major [m, n] matrix is the column-major [n, m]
// matrix A^T, so a wide A is factored as is (A^T = U' S V'^T gives U = V', Vt = U'^T, which are
// exactly the buffers gesvd writes); a tall A is transposed first because gesvd needs rows >= cols.

void CudaBackend::svd(Tensor u, Tensor s, Tensor vt, const Tensor& a) {
  const char* op = "svd";
  require_f32(a, op, "A");
  require_f32(u, op, "U");
  require_f32(s, op, "S");
  require_f32(vt, op, "Vt");
  const int64_t m = a.rows(), n = a.cols(), k = std::min(m, n);
  if (u.rows() != m || u.cols() != k || s.numel() != k || vt.rows() != k || vt.cols() != n)
    runtime_error("svd: A ", a.shape.str(), " needs U [", m, ", ", k, "], S [", k, "], Vt [", k, ", ", n, "], got U ",
                  u.shape.str(), ", S ", s.shape.str(), ", Vt ", vt.shape.str());
  if (k == 0) return;
  if (!std::isfinite(sum_squares(a))) runtime_error("svd: A ", a.shape.str(), " contains NaN or Inf");
  const bool wide = n >= m;
  const int rows = checked_int(wide ? n : m, op, "rows"), cols = checked_int(wide ? m : n, op, "cols");
  int lwork = 0;
  GUM_CUSOLVER_CHECK(cusolverDnSgesvd_bufferSize(cusolver_, rows, cols, &lwork));

  WorkspaceLayout layout;
  const size_t matrix_at = layout.add(size_t(m) * n * sizeof(float));
  const size_t left_at = layout.add(wide ? 0 : size_t(m) * n * sizeof(float));   // U of the tall case
  const size_t right_at = layout.add(wide ? 0 : size_t(n) * n * sizeof(float));  // VT of the tall case
  const size_t work_at = layout.add(size_t(lwork) * sizeof(float));
  const size_t info_at = layout.add(sizeof(int));
  void* base = workspace(layout.total());
  float* matrix = WorkspaceLayout::at<float>(base, matrix_at);
  float* work = WorkspaceLayout::at<float>(base, work_at);
  int* info = WorkspaceLayout::at<int>(base, info_at);

  if (wide) {
    // Column-major A^T [n, m]: U' [n, m] lands in vt's memory, V'^T [m, m] in u's.
    GUM_CUDA_CHECK(cudaMemcpyAsync(matrix, a.data, a.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    GUM_CUSOLVER_CHECK(cusolverDnSgesvd(cusolver_, 'S', 'S', rows, cols, matrix, rows, s.f32(), vt.f32(), rows, u.f32(),
                                        cols, work, lwork, nullptr, info));
  } else {
    float* left = WorkspaceLayout::at<float>(base, left_at);
    float* right = WorkspaceLayout::at<float>(base, right_at);
    launch_transpose(matrix, a.f32(), m, n, nullptr, stream_);  // column-major A [m, n]
    GUM_CUSOLVER_CHECK(cusolverDnSgesvd(cusolver_, 'S', 'S', rows, cols, matrix, rows, s.f32(), left, rows, right, cols,
                                        work, lwork, nullptr, info));
    launch_transpose(u.f32(), left, n, m, nullptr, stream_);    // column-major U [m, n] -> row-major
    launch_transpose(vt.f32(), right, n, n, nullptr, stream_);  // column-major Vt [n, n] -> row-major
  }
  int host_info = 0;
  GUM_CUDA_CHECK(cudaMemcpyAsync(&host_info, info, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  synchronize();
  if (host_info > 0)
    runtime_error("svd of a [", m, ", ", n, "] matrix did not converge (cuSOLVER gesvd info ", host_info, ")");
  if (host_info < 0) runtime_error("svd: cuSOLVER gesvd rejected parameter ", -host_info);
  launch_svd_sign_normalise(u.f32(), vt.f32(), m, k, n, stream_);
}

// Thin QR of A [m, k]: transpose to column-major, geqrf, remember the signs of R's diagonal,
// orgqr forms Q, and the transpose back scales column j by sign(R_jj): A = (Q D)(D R).
void CudaBackend::qr_orthonormal(Tensor q, const Tensor& a) {
  const char* op = "qr_orthonormal";
  require_f32(a, op, "A");
  require_f32(q, op, "Q");
  const int64_t m = a.rows(), k = a.cols();
  if (m < k) runtime_error(op, ": A ", a.shape.str(), " must have at least as many rows as columns");
  if (q.rows() != m || q.cols() != k)
    runtime_error(op, ": Q ", q.shape.str(), " must have the shape of A ", a.shape.str());
  if (k == 0) return;
  if (!std::isfinite(sum_squares(a))) runtime_error(op, ": A ", a.shape.str(), " contains NaN or Inf");
  const int rows = checked_int(m, op, "rows"), cols = checked_int(k, op, "cols");

  WorkspaceLayout layout;
  const size_t matrix_at = layout.add(size_t(m) * k * sizeof(float));
  const size_t tau_at = layout.add(size_t(k) * sizeof(float));
  const size_t signs_at = layout.add(size_t(k) * sizeof(float));
  const size_t info_at = layout.add(sizeof(int));
  // Buffer sizes need the (not yet carved) matrix pointer only for its alignment: query with
  // the current workspace after reserving the fixed part.
  void* base = workspace(layout.total());
  float* matrix = WorkspaceLayout::at<float>(base, matrix_at);
  float* tau = WorkspaceLayout::at<float>(base, tau_at);
  int lwork_geqrf = 0, lwork_orgqr = 0;
  GUM_CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(cusolver_, rows, cols, matrix, rows, &lwork_geqrf));
  GUM_CUSOLVER_CHECK(cusolverDnSorgqr_bufferSize(cusolver_, rows, cols, cols, matrix, rows, tau, &lwork_orgqr));
  const int lwork = std::max(lwork_geqrf, lwork_orgqr);
  const size_t work_at = layout.add(size_t(lwork) * sizeof(float));
  base = workspace(layout.total());  // may reallocate: take every pointer again
  matrix = WorkspaceLayout::at<float>(base, matrix_at);
  tau = WorkspaceLayout::at<float>(base, tau_at);
  float* signs = WorkspaceLayout::at<float>(base, signs_at);
  int* info = WorkspaceLayout::at<int>(base, info_at);
  float* work = WorkspaceLayout::at<float>(base, work_at);

  launch_transpose(matrix, a.f32(), m, k, nullptr, stream_);  // column-major A [m, k]
  GUM_CUSOLVER_CHECK(cusolverDnSgeqrf(cusolver_, rows, cols, matrix, rows, tau, work, lwork, info));
  launch_diagonal_signs(signs, matrix, m, k, stream_);  // R_jj sits at matrix[j + j * m]
  GUM_CUSOLVER_CHECK(cusolverDnSorgqr(cusolver_, rows, cols, cols, matrix, rows, tau, work, lwork, info));
  launch_transpose(q.f32(), matrix, k, m, signs, stream_);  // row j of the [k, m] view is column j of Q
  int host_info = 0;
  GUM_CUDA_CHECK(cudaMemcpyAsync(&host_info, info, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  synchronize();
  if (host_info != 0)
    runtime_error(op, ": cuSOLVER geqrf/orgqr of a [", m, ", ", k, "] matrix failed (info ", host_info, ")");
}

}  // namespace gum::cuda
