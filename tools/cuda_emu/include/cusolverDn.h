#pragma once
// CUDA emulation: the dense cuSOLVER calls the CUDA backend makes, over LAPACKE (src/cusolver.cpp).
// Device memory is host memory; each call is work on the handle's stream. Argument checks are
// cuSOLVER's documented ones and return CUSOLVER_STATUS_INVALID_VALUE: negative sizes, leading
// dimensions below their minimum, gesvd with m < n (cuSOLVER's gesvd supports only m >= n), an
// unknown jobu/jobvt, orgqr with n > m or k > n. A workspace smaller than the matching _bufferSize
// call returns is also CUSOLVER_STATUS_INVALID_VALUE. Whenever devInfo is given it is written:
// 0 on success, -i when parameter i (counting from 1 after the handle) is wrong, and for gesvd
// the number of superdiagonals that did not converge, as LAPACK reports it.
#include "library_types.h"

typedef struct CUstream_st* cudaStream_t;
typedef struct cusolverDnContext* cusolverDnHandle_t;

typedef enum {
  CUSOLVER_STATUS_SUCCESS = 0,
  CUSOLVER_STATUS_NOT_INITIALIZED = 1,
  CUSOLVER_STATUS_ALLOC_FAILED = 2,
  CUSOLVER_STATUS_INVALID_VALUE = 3,
  CUSOLVER_STATUS_ARCH_MISMATCH = 4,
  CUSOLVER_STATUS_MAPPING_ERROR = 5,
  CUSOLVER_STATUS_EXECUTION_FAILED = 6,
  CUSOLVER_STATUS_INTERNAL_ERROR = 7,
  CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED = 8,
  CUSOLVER_STATUS_NOT_SUPPORTED = 9,
} cusolverStatus_t;

#ifdef __cplusplus
extern "C" {
#endif

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* handle);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t stream);

// Workspace (floats) for any jobu/jobvt of an m x n gesvd.
cusolverStatus_t cusolverDnSgesvd_bufferSize(cusolverDnHandle_t handle, int m, int n, int* lwork);
// A = U S VT of a column-major m x n A (m >= n); jobu/jobvt 'A', 'S', 'O' or 'N' as in LAPACK.
// rwork, when given, receives the unconverged superdiagonal (min(m,n) - 1 floats) if devInfo > 0.
cusolverStatus_t cusolverDnSgesvd(cusolverDnHandle_t handle, signed char jobu, signed char jobvt, int m, int n,
                                  float* A, int lda, float* S, float* U, int ldu, float* VT, int ldvt, float* work,
                                  int lwork, float* rwork, int* devInfo);

cusolverStatus_t cusolverDnSgeqrf_bufferSize(cusolverDnHandle_t handle, int m, int n, float* A, int lda, int* lwork);
// QR of a column-major m x n A: R in the upper triangle, Householder vectors below it and in tau.
cusolverStatus_t cusolverDnSgeqrf(cusolverDnHandle_t handle, int m, int n, float* A, int lda, float* tau,
                                  float* workspace, int lwork, int* devInfo);

cusolverStatus_t cusolverDnSorgqr_bufferSize(cusolverDnHandle_t handle, int m, int n, int k, const float* A, int lda,
                                             const float* tau, int* lwork);
// The first n columns of Q from k reflectors of geqrf (m >= n >= k), in place of A.
cusolverStatus_t cusolverDnSorgqr(cusolverDnHandle_t handle, int m, int n, int k, float* A, int lda, const float* tau,
                                  float* work, int lwork, int* devInfo);

#ifdef __cplusplus
}
#endif
