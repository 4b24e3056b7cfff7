#pragma once
// What every op file of the CUDA backend shares: FloatPtr (a float tensor handed to a kernel),
// the bits of the device status word, and the argument checks that turn a Tensor into kernel
// arguments. Launchers live beside their kernels and CudaBackend methods, one file per op family
// (rmsnorm.cu, attention.cu, adamw.cu, ...); raw device pointers, row-major, contiguous; shapes
// follow include/gum/backend/backend.h. Every launcher enqueues on the backend's stream and
// returns without synchronising; launch errors throw gum::Error naming the kernel.
#include <climits>
#include <cstdint>

#include "gum/core/error.h"
#include "gum/core/tensor.h"

namespace gum::cuda {

// Floating tensors are passed as FloatPtr: the element type (F32 or BF16) is a runtime flag that
// every thread of a warp reads identically, so one kernel serves both dtypes (arithmetic is
// always fp32; bf16 is rounded to nearest even exactly like gum::f32_to_bf16). The memory-bound
// kernels instead dispatch on it once on the host (with_dtype, device_utils.cuh) to kernels
// templated on the storage type.
struct FloatPtr {
  void* data = nullptr;
  bool bf16 = false;
};

// Bits of the device status word: kernels that index with device-resident ids cannot throw,
// so they set a bit (and write NaN or skip the element) and the backend raises the error at
// its next synchronisation.
enum StatusBits : int {
  kStatusTokenOutOfRange = 1,     // embedding token id outside [0, vocab)
  kStatusTargetOutOfRange = 2,    // cross-entropy target >= vocab
  kStatusPositionOutOfRange = 4,  // RoPE position outside [0, max_positions)
  kStatusDocStartOutOfRange = 8,  // attention doc_start outside [0, t]
};

// ---- argument checks (cuda_backend.cpp) ----
void require_device(const Tensor& t, const char* op, const char* what);
void require_f32(const Tensor& t, const char* op, const char* what);
void require_i32(const Tensor& t, const char* op, const char* what);
void require_numel(const Tensor& t, int64_t expected, const char* op, const char* what);
// F32 or BF16 on the GPU, as a FloatPtr for the kernels.
FloatPtr float_ptr(const Tensor& t, const char* op, const char* what);
// I32 on the GPU.
const int32_t* i32_ptr(const Tensor& t, const char* op, const char* what);

// cuBLAS, cuSOLVER and the attention kernels take 32-bit sizes.
inline int checked_int(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > INT_MAX) runtime_error(op, ": ", what, " = ", v, " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

}  // namespace gum::cuda
