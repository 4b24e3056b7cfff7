// SVD and QR (cuSOLVER, column-major), with the small kernels around them: tiled transposes
// between row- and column-major, the signs of R's diagonal, and the SVD sign convention.
#include <algorithm>
#include <cmath>

#include "cuda_backend.h"
#include "device_utils.cuh"
#include "library_check.h"

namespace gum::cuda {

namespace {

// 32x32 tiles through shared memory (padded against bank conflicts): reads and writes coalesced.
__global__ void transpose_kernel(float* dst, const float* src, int64_t rows, int64_t cols, const float* row_signs) {
  __shared__ float tile[32][33];
  const int64_t col0 = int64_t(blockIdx.x) * 32, row0 = int64_t(blockIdx.y) * 32;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t r = row0 + k, c = col0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = src[r * cols + c] * (row_signs ? row_signs[r] : 1.0f);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t c = col0 + k, r = row0 + threadIdx.x;
    if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][k];
  }
}

__global__ void diagonal_signs_kernel(float* signs, const float* a, int64_t ld, int64_t k) {
  GUM_GRID_STRIDE_LOOP(j, k) signs[j] = a[j * ld + j] < 0.0f ? -1.0f : 1.0f;
}

// One block per singular vector j: arg max |u[i, j]| (first index on ties, as the CPU), then
// flip u's column and vt's row together when that entry is negative (A = U S Vt unchanged).
__global__ void svd_sign_kernel(float* u, float* vt, int64_t m, int64_t k, int64_t n) {
  __shared__ float best_value[kThreads];
  __shared__ int64_t best_index[kThreads];
  const int64_t j = blockIdx.x;
  float best = -1.0f;
  int64_t arg = 0;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    const float magnitude = fabsf(u[i * k + j]);
    if (magnitude > best) {
      best = magnitude;
      arg = i;
    }
  }
  best_value[threadIdx.x] = best;
  best_index[threadIdx.x] = arg;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float other = best_value[threadIdx.x + stride];
      const int64_t other_index = best_index[threadIdx.x + stride];
      if (other > best_value[threadIdx.x] ||
          (other == best_value[threadIdx.x] && other_index < best_index[threadIdx.x])) {
        best_value[threadIdx.x] = other;
        best_index[threadIdx.x] = other_index;
      }
    }
    __syncthreads();
  }
  // Decide once, then flip: a thread must not read the deciding entry after another flipped it.
  __shared__ bool flip;
  if (threadIdx.x == 0) flip = u[best_index[0] * k + j] < 0.0f;
  __syncthreads();
  if (!flip) return;  // uniform across the block
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) u[i * k + j] = -u[i * k + j];
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) vt[j * n + i] = -vt[j * n + i];
}

// dst [cols, rows] = transpose of src [rows, cols], row r of src multiplied by row_signs[r] when given.
void launch_transpose(float* dst, const float* src, int64_t rows, int64_t cols, const float* row_signs,
                      cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  if ((rows + 31) / 32 > 65535) runtime_error("transpose: ", rows, " rows exceed the kernel's grid limit");
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  transpose_kernel<<<grid, dim3(32, 8), 0, stream>>>(dst, src, rows, cols, row_signs);
  GUM_CUDA_CHECK_LAUNCH("transpose_kernel");
}

// signs[j] = (a[j * ld + j] < 0 ? -1 : 1) for j < k: the sign of R's diagonal after geqrf.
void launch_diagonal_signs(float* signs, const float* a, int64_t ld, int64_t k, cudaStream_t stream) {
  if (k <= 0) return;
  diagonal_signs_kernel<<<grid_for(k), kThreads, 0, stream>>>(signs, a, ld, k);
  GUM_CUDA_CHECK_LAUNCH("diagonal_signs_kernel");
}

// SVD sign convention: flips column j of u [m,k] and row j of vt [k,n] when the entry of
// largest magnitude in u's column j (first on ties) is negative.
void launch_svd_sign_normalise(float* u, float* vt, int64_t m, int64_t k, int64_t n, cudaStream_t stream) {
  if (k <= 0) return;
  svd_sign_kernel<<<static_cast<unsigned>(k), kThreads, 0, stream>>>(u, vt, m, k, n);
  GUM_CUDA_CHECK_LAUNCH("svd_sign_kernel");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SVD and QR (cuSOLVER, column-major). A row-major [m, n] matrix is the column-major [n, m]
// matrix A^T, so a wide A is factored as is (A^T = U' S V'^T gives U = V', Vt = U'^T, which are
// exactly the buffers gesvd writes); a tall A is transposed first because gesvd needs rows >= cols.

CudaBackend::SvdWorkspace CudaBackend::svd_workspace(int64_t m, int64_t n) const {
  SvdWorkspace w;
  const bool wide = n >= m;
  const int rows = checked_int(wide ? n : m, "svd", "rows"), cols = checked_int(wide ? m : n, "svd", "cols");
  GUM_CUSOLVER_CHECK(cusolverDnSgesvd_bufferSize(cusolver_, rows, cols, &w.lwork));
  w.matrix_at = w.layout.add(size_t(m) * n * sizeof(float));
  w.left_at = w.layout.add(wide ? 0 : size_t(m) * n * sizeof(float));   // U of the tall case
  w.right_at = w.layout.add(wide ? 0 : size_t(n) * n * sizeof(float));  // VT of the tall case
  w.work_at = w.layout.add(size_t(w.lwork) * sizeof(float));
  w.info_at = w.layout.add(sizeof(int));
  return w;
}

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
  const SvdWorkspace w = svd_workspace(m, n);
  void* base = workspace(w.layout.total());
  float* matrix = WorkspaceLayout::at<float>(base, w.matrix_at);
  float* work = WorkspaceLayout::at<float>(base, w.work_at);
  int* info = WorkspaceLayout::at<int>(base, w.info_at);

  if (wide) {
    // Column-major A^T [n, m]: U' [n, m] lands in vt's memory, V'^T [m, m] in u's.
    GUM_CUDA_CHECK(cudaMemcpyAsync(matrix, a.data, a.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    GUM_CUSOLVER_CHECK(cusolverDnSgesvd(cusolver_, 'S', 'S', rows, cols, matrix, rows, s.f32(), vt.f32(), rows, u.f32(),
                                        cols, work, w.lwork, nullptr, info));
  } else {
    float* left = WorkspaceLayout::at<float>(base, w.left_at);
    float* right = WorkspaceLayout::at<float>(base, w.right_at);
    launch_transpose(matrix, a.f32(), m, n, nullptr, stream_);  // column-major A [m, n]
    GUM_CUSOLVER_CHECK(cusolverDnSgesvd(cusolver_, 'S', 'S', rows, cols, matrix, rows, s.f32(), left, rows, right, cols,
                                        work, w.lwork, nullptr, info));
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

// The buffer queries read only the dimensions (the matrix and tau pointers are not dereferenced),
// so the size is known before any memory exists and can be reserved at start-up.
CudaBackend::QrWorkspace CudaBackend::qr_workspace(int64_t m, int64_t k) const {
  QrWorkspace w;
  const int rows = checked_int(m, "qr_orthonormal", "rows"), cols = checked_int(k, "qr_orthonormal", "cols");
  int lwork_geqrf = 0, lwork_orgqr = 0;
  GUM_CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(cusolver_, rows, cols, nullptr, std::max(1, rows), &lwork_geqrf));
  GUM_CUSOLVER_CHECK(
      cusolverDnSorgqr_bufferSize(cusolver_, rows, cols, cols, nullptr, std::max(1, rows), nullptr, &lwork_orgqr));
  w.lwork = std::max(lwork_geqrf, lwork_orgqr);
  w.matrix_at = w.layout.add(size_t(m) * k * sizeof(float));
  w.tau_at = w.layout.add(size_t(k) * sizeof(float));
  w.signs_at = w.layout.add(size_t(k) * sizeof(float));
  w.info_at = w.layout.add(sizeof(int));
  w.work_at = w.layout.add(size_t(w.lwork) * sizeof(float));
  return w;
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
  const QrWorkspace w = qr_workspace(m, k);
  void* base = workspace(w.layout.total());
  float* matrix = WorkspaceLayout::at<float>(base, w.matrix_at);
  float* tau = WorkspaceLayout::at<float>(base, w.tau_at);
  float* signs = WorkspaceLayout::at<float>(base, w.signs_at);
  int* info = WorkspaceLayout::at<int>(base, w.info_at);
  float* work = WorkspaceLayout::at<float>(base, w.work_at);

  launch_transpose(matrix, a.f32(), m, k, nullptr, stream_);  // column-major A [m, k]
  GUM_CUSOLVER_CHECK(cusolverDnSgeqrf(cusolver_, rows, cols, matrix, rows, tau, work, w.lwork, info));
  launch_diagonal_signs(signs, matrix, m, k, stream_);  // R_jj sits at matrix[j + j * m]
  GUM_CUSOLVER_CHECK(cusolverDnSorgqr(cusolver_, rows, cols, cols, matrix, rows, tau, work, w.lwork, info));
  launch_transpose(q.f32(), matrix, k, m, signs, stream_);  // row j of the [k, m] view is column j of Q
  int host_info = 0;
  GUM_CUDA_CHECK(cudaMemcpyAsync(&host_info, info, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  synchronize();
  if (host_info != 0)
    runtime_error(op, ": cuSOLVER geqrf/orgqr of a [", m, ", ", k, "] matrix failed (info ", host_info, ")");
}

}  // namespace gum::cuda
