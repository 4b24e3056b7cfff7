// Dense cuSOLVER over LAPACKE for the CUDA emulation (include/cusolverDn.h). Both are column-major
// with LAPACK's argument order, so each call checks its arguments as cuSOLVER documents, then runs
// the LAPACK routine on the caller's own workspace. The workspace a _bufferSize call reports is
// LAPACK's optimal size, and a call given less is rejected: a caller that sizes its workspace
// any other way fails here as it may on a GPU.
#include <cusolverDn.h>
#include <lapacke.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "streams.h"

// The stream each call is a work item of (src/streams.h).
struct cusolverDnContext {
  cudaStream_t stream = nullptr;
};

namespace {

// The first wrong parameter of a call, numbered from 1 after the handle as devInfo reports it.
class ArgumentCheck {
 public:
  void require(bool ok, int parameter) {
    if (!ok && wrong_ == 0) wrong_ = parameter;
  }
  bool ok() const { return wrong_ == 0; }
  // CUSOLVER_STATUS_INVALID_VALUE with devInfo = -parameter for a wrong call.
  cusolverStatus_t status(int* devInfo) const {
    if (wrong_ == 0) return CUSOLVER_STATUS_SUCCESS;
    if (devInfo != nullptr) *devInfo = -wrong_;
    return CUSOLVER_STATUS_INVALID_VALUE;
  }

 private:
  int wrong_ = 0;
};

// LAPACK answers a workspace query (lwork = -1) with the optimal size as a float.
int workspace_size(float query) { return std::max(1, static_cast<int>(std::ceil(query))); }

bool is_gesvd_job(signed char job) {
  const int j = std::toupper(job);
  return j == 'A' || j == 'S' || j == 'O' || j == 'N';
}

// LAPACK forbids overwriting A with both U and VT.
bool is_gesvd_job_pair(signed char jobu, signed char jobvt) {
  return is_gesvd_job(jobu) && is_gesvd_job(jobvt) && !(std::toupper(jobu) == 'O' && std::toupper(jobvt) == 'O');
}

// The largest workspace any job pair of an m x n gesvd needs (the _bufferSize call has no jobs).
int gesvd_workspace(int m, int n) {
  int size = 1;
  for (char jobu : {'A', 'S', 'O', 'N'})
    for (char jobvt : {'A', 'S', 'O', 'N'}) {
      if (!is_gesvd_job_pair(jobu, jobvt)) continue;
      float query = 0.0f;
      LAPACKE_sgesvd_work(LAPACK_COL_MAJOR, jobu, jobvt, m, n, nullptr, std::max(1, m), nullptr, nullptr,
                          std::max(1, m), nullptr, std::max(1, n), &query, -1);
      size = std::max(size, workspace_size(query));
    }
  return size;
}

int geqrf_workspace(int m, int n, int lda) {
  float query = 0.0f;
  LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, m, n, nullptr, lda, nullptr, &query, -1);
  return workspace_size(query);
}

int orgqr_workspace(int m, int n, int k, int lda) {
  float query = 0.0f;
  LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, m, n, k, nullptr, lda, nullptr, &query, -1);
  return workspace_size(query);
}

// The LAPACK call as a work item of the handle's stream: it reads and writes the matrices (and
// devInfo) when it runs. A call the stream refuses (an invalidated capture) fails as a launch would.
template <typename Factorisation>
cusolverStatus_t enqueue(cusolverDnHandle_t handle, const char* call, Factorisation factorisation) {
  return gum_emu::submit(handle->stream, gum_emu::Work{call, std::move(factorisation)}) == cudaSuccess
             ? CUSOLVER_STATUS_SUCCESS
             : CUSOLVER_STATUS_EXECUTION_FAILED;
}

}  // namespace

extern "C" {

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* handle) {
  if (handle == nullptr) return CUSOLVER_STATUS_INVALID_VALUE;
  *handle = new cusolverDnContext;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSgesvd_bufferSize(cusolverDnHandle_t handle, int m, int n, int* lwork) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || lwork == nullptr) return CUSOLVER_STATUS_INVALID_VALUE;
  *lwork = gesvd_workspace(m, n);
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSgesvd(cusolverDnHandle_t handle, signed char jobu, signed char jobvt, int m, int n,
                                  float* A, int lda, float* S, float* U, int ldu, float* VT, int ldvt, float* work,
                                  int lwork, float* rwork, int* devInfo) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  ArgumentCheck check;
  check.require(is_gesvd_job(jobu), 1);
  check.require(is_gesvd_job_pair(jobu, jobvt), 2);
  check.require(m >= 0, 3);
  check.require(n >= 0 && n <= m, 4);  // cuSOLVER's gesvd supports only m >= n
  check.require(lda >= std::max(1, m), 6);
  check.require(ldu >= std::max(1, m), 9);
  check.require(ldvt >= std::max(1, n), 11);
  if (check.ok()) check.require(lwork >= gesvd_workspace(m, n), 13);
  if (cusolverStatus_t status = check.status(devInfo); status != CUSOLVER_STATUS_SUCCESS) return status;
  return enqueue(handle, "cusolverDnSgesvd", [=] {
    const lapack_int info = LAPACKE_sgesvd_work(LAPACK_COL_MAJOR, static_cast<char>(jobu), static_cast<char>(jobvt), m,
                                                n, A, lda, S, U, ldu, VT, ldvt, work, lwork);
    // Without convergence LAPACK leaves the unconverged superdiagonal in work[1 .. min(m,n) - 1].
    if (info > 0 && rwork != nullptr) std::copy(work + 1, work + std::min(m, n), rwork);
    if (devInfo != nullptr) *devInfo = info;
  });
}

cusolverStatus_t cusolverDnSgeqrf_bufferSize(cusolverDnHandle_t handle, int m, int n, float* A, int lda, int* lwork) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || lda < std::max(1, m) || lwork == nullptr) return CUSOLVER_STATUS_INVALID_VALUE;
  *lwork = geqrf_workspace(m, n, lda);
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSgeqrf(cusolverDnHandle_t handle, int m, int n, float* A, int lda, float* tau,
                                  float* workspace, int lwork, int* devInfo) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  ArgumentCheck check;
  check.require(m >= 0, 1);
  check.require(n >= 0, 2);
  check.require(lda >= std::max(1, m), 4);
  if (check.ok()) check.require(lwork >= geqrf_workspace(m, n, lda), 7);
  if (cusolverStatus_t status = check.status(devInfo); status != CUSOLVER_STATUS_SUCCESS) return status;
  return enqueue(handle, "cusolverDnSgeqrf", [=] {
    const lapack_int info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, m, n, A, lda, tau, workspace, lwork);
    if (devInfo != nullptr) *devInfo = info;
  });
}

cusolverStatus_t cusolverDnSorgqr_bufferSize(cusolverDnHandle_t handle, int m, int n, int k, const float* A, int lda,
                                             const float* tau, int* lwork) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || n > m || k < 0 || k > n || lda < std::max(1, m) || lwork == nullptr)
    return CUSOLVER_STATUS_INVALID_VALUE;
  *lwork = orgqr_workspace(m, n, k, lda);
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSorgqr(cusolverDnHandle_t handle, int m, int n, int k, float* A, int lda, const float* tau,
                                  float* work, int lwork, int* devInfo) {
  if (handle == nullptr) return CUSOLVER_STATUS_NOT_INITIALIZED;
  ArgumentCheck check;
  check.require(m >= 0, 1);
  check.require(n >= 0 && n <= m, 2);
  check.require(k >= 0 && k <= n, 3);
  check.require(lda >= std::max(1, m), 5);
  if (check.ok()) check.require(lwork >= orgqr_workspace(m, n, k, lda), 8);
  if (cusolverStatus_t status = check.status(devInfo); status != CUSOLVER_STATUS_SUCCESS) return status;
  return enqueue(handle, "cusolverDnSorgqr", [=] {
    const lapack_int info = LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, m, n, k, A, lda, tau, work, lwork);
    if (devInfo != nullptr) *devInfo = info;
  });
}

}  // extern "C"
