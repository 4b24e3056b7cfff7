#pragma once
// Checked CUDA runtime calls: any failure throws gum::Error naming the call, the
// file and the line. Host-only; safe in .cu files (error.h pulls only <stdexcept>/<sstream>).
#include <cuda_runtime_api.h>

#include "gum/core/error.h"

namespace gum::cuda {

[[noreturn]] inline void fail_cuda(cudaError_t status, const char* call, const char* file, int line) {
  runtime_error("CUDA error in ", call, " at ", file, ":", line, ": ", cudaGetErrorName(status), " (",
                cudaGetErrorString(status), ")");
}

}  // namespace gum::cuda

#define GUM_CUDA_CHECK(call)                                                                        \
  do {                                                                                              \
    cudaError_t gum_status_ = (call);                                                               \
    if (gum_status_ != cudaSuccess) ::gum::cuda::fail_cuda(gum_status_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, naming the kernel.
#define GUM_CUDA_CHECK_LAUNCH(kernel_name)                                                                             \
  do {                                                                                                                 \
    cudaError_t gum_status_ = cudaGetLastError();                                                                      \
    if (gum_status_ != cudaSuccess) ::gum::cuda::fail_cuda(gum_status_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)
