// BLAS and LAPACK calls of the CPU backend (OpenBLAS, LAPACKE), row-major throughout.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gum/core/error.h"
#include "kernels.h"

namespace gum::cpu {

namespace {
// Leading dimension of a row-major matrix stored as op(X) with the given transpose.
inline int ld(bool transposed, int64_t rows_op, int64_t cols_op) {
  return static_cast<int>(transposed ? rows_op : cols_op);
}
}  // namespace

void gemm_strided(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

void gemm_strided(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
                   const float* b, float beta, float* c) {
  gemm_strided(trans_a, trans_b, M, N, K, alpha, a, ld(trans_a, M, K), b, ld(trans_b, K, N), beta, c, N);
}

void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* a,
                   const double* b, double beta, double* c) {
  gemm_strided(trans_a, trans_b, M, N, K, alpha, a, ld(trans_a, M, K), b, ld(trans_b, K, N), beta, c, N);
}

BlasSingleThreaded::BlasSingleThreaded() : saved_threads_(openblas_get_num_threads()) {
  if (saved_threads_ != 1) openblas_set_num_threads(1);
}

BlasSingleThreaded::~BlasSingleThreaded() {
  if (saved_threads_ != 1) openblas_set_num_threads(saved_threads_);
}

void svd_thin(float* u, float* s, float* vt, const float* a, int64_t m, int64_t n) {
  const int64_t k = std::min(m, n);
  std::vector<float> work(a, a + m * n);  // LAPACK destroys its input
  lapack_int info =
      LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', int(m), int(n), work.data(), int(n), s, u, int(k), vt, int(n));
  if (info > 0) {
    // The divide-and-conquer driver failed to converge (rare): fall back to QR iteration.
    work.assign(a, a + m * n);
    std::vector<float> superb(static_cast<size_t>(std::max<int64_t>(k, 1)));
    info = LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', int(m), int(n), work.data(), int(n), s, u, int(k), vt, int(n),
                          superb.data());
  }
  if (info != 0) runtime_error("svd of a [", m, ", ", n, "] matrix failed (LAPACK info ", info, ")");
  // Sign convention: the largest-magnitude entry of each column of U is positive (first one on ties).
  for (int64_t j = 0; j < k; ++j) {
    int64_t arg = 0;
    for (int64_t i = 1; i < m; ++i)
      if (std::fabs(u[i * k + j]) > std::fabs(u[arg * k + j])) arg = i;
    if (u[arg * k + j] < 0) {
      for (int64_t i = 0; i < m; ++i) u[i * k + j] = -u[i * k + j];
      for (int64_t i = 0; i < n; ++i) vt[j * n + i] = -vt[j * n + i];
    }
  }
}

void qr_orthonormal(float* q, const float* a, int64_t m, int64_t k) {
  std::copy(a, a + m * k, q);
  std::vector<float> tau(static_cast<size_t>(std::max<int64_t>(k, 1)));
  lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, int(m), int(k), q, int(k), tau.data());
  if (info != 0) runtime_error("QR factorisation of a [", m, ", ", k, "] matrix failed (LAPACK info ", info, ")");
  // R's diagonal sits on the diagonal of the factored matrix: remember its signs before forming Q.
  std::vector<float> diagonal_sign(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) diagonal_sign[j] = q[j * k + j] < 0 ? -1.0f : 1.0f;
  info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, int(m), int(k), int(k), q, int(k), tau.data());
  if (info != 0) runtime_error("forming Q of a [", m, ", ", k, "] QR failed (LAPACK info ", info, ")");
  // A = QR = (Q D)(D R) with D = diag(sign(R_jj)) makes R's diagonal non-negative.
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) q[i * k + j] *= diagonal_sign[j];
}

}  // namespace gum::cpu
