#pragma once
// What the scalar flash kernels (attention.cu) and the tensor-core ones (attention_wmma.cu)
// share: the problem's dimensions, the window of keys a query row attends to, the launchers.
#include <cstdint>

#include "device_utils.cuh"

namespace gum::cuda {

struct FlashDims {
  int B, H, KV, T, D;
  float scale;
  __host__ __device__ int64_t width() const { return int64_t(H + 2 * KV) * D; }
};

// First key position query t of sequence b may attend to (packed documents); a value outside
// [0, t] is reported through the status word and clamped so the kernel stays in bounds.
__device__ __forceinline__ int window_start(const int32_t* doc_start, int64_t b, int T, int t, int* status) {
  if (!doc_start) return 0;
  int start = doc_start[b * T + t];
  if (start < 0 || start > t) {
    atomicOr(status, kStatusDocStartOutOfRange);
    start = start < 0 ? 0 : t;
  }
  return start;
}

// The same in backward passes: validated (and reported) by the forward pass, only clamped here.
__device__ __forceinline__ int clamped_window_start(const int32_t* doc_start, int64_t b, int T, int t) {
  const int start = doc_start ? doc_start[b * T + t] : 0;
  return start < 0 ? 0 : (start > t ? t : start);
}

// The tensor-core kernels (attention_wmma.cu, D <= 128). Forward: out [N, H*D] and lse [B, H, T];
// backward writes every element of dqkv and delta [B, H, T] (dO . O per row), as the scalar ones.
void launch_wmma_flash_forward(float* out, float* lse, const float* qkv, const int32_t* doc_start, const FlashDims& s,
                               int* status, cudaStream_t stream);
void launch_wmma_flash_backward(float* dqkv, float* delta, const float* dout, const float* out, const float* lse,
                                const float* qkv, const int32_t* doc_start, const FlashDims& s, cudaStream_t stream);
constexpr int kWmmaFlashMaxHeadDim = 128;

}  // namespace gum::cuda
