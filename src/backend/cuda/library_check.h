#pragma once
// Checked cuBLAS and cuSOLVER calls (host .cpp files only: these headers are heavy for nvcc).
#include <cublas_v2.h>
#include <cusolverDn.h>

#include "cuda_check.h"

namespace gum::cuda {

[[noreturn]] inline void fail_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  runtime_error("cuBLAS error in ", call, " at ", file, ":", line, ": ", cublasGetStatusName(status), " (",
                cublasGetStatusString(status), ")");
}

[[noreturn]] inline void fail_cusolver(cusolverStatus_t status, const char* call, const char* file, int line) {
  runtime_error("cuSOLVER error in ", call, " at ", file, ":", line, ": status ", static_cast<int>(status));
}

}  // namespace gum::cuda

#define GUM_CUBLAS_CHECK(call)                                                                                  \
  do {                                                                                                          \
    cublasStatus_t gum_status_ = (call);                                                                        \
    if (gum_status_ != CUBLAS_STATUS_SUCCESS) ::gum::cuda::fail_cublas(gum_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define GUM_CUSOLVER_CHECK(call)                                                                                    \
  do {                                                                                                              \
    cusolverStatus_t gum_status_ = (call);                                                                          \
    if (gum_status_ != CUSOLVER_STATUS_SUCCESS) ::gum::cuda::fail_cusolver(gum_status_, #call, __FILE__, __LINE__); \
  } while (0)
