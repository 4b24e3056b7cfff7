// Cross-entropy over logits [N, V], forward (per-row losses) and backward (in place).
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// Cross-entropy, one block per row. One pass computes the row's max and sum of exp with the
// online recurrence (device_utils.cuh); forward then needs only the target's logit, backward a
// second pass that writes scale * (p - onehot) in place (no second [N, V] tensor).

constexpr int kCrossEntropyThreads = 512;

__device__ MaxSum row_max_sum(FloatPtr logits, int64_t base, int64_t V) {
  __shared__ MaxSum scratch[32];
  MaxSum stats = max_sum_empty();
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) max_sum_add(stats, load(logits, base + j));
  return block_max_sum(stats, scratch);
}

__global__ void cross_entropy_forward_kernel(FloatPtr losses, FloatPtr logits, const int32_t* targets, int64_t V,
                                             int* status) {
  const int64_t n = blockIdx.x, base = n * V;
  const int32_t target = targets[n];
  if (target < 0) {  // ignored position: uniform across the block
    if (threadIdx.x == 0) store(losses, n, 0.0f);
    return;
  }
  const MaxSum stats = row_max_sum(logits, base, V);
  if (threadIdx.x != 0) return;
  if (target >= V) {
    atomicOr(status, kStatusTargetOutOfRange);
    store(losses, n, NAN);
    return;
  }
  store(losses, n, logf(stats.sum) + stats.max - load(logits, base + target));
}

__global__ void cross_entropy_backward_kernel(FloatPtr dlogits, FloatPtr logits, const int32_t* targets, int64_t V,
                                              float scale, int* status) {
  const int64_t n = blockIdx.x, base = n * V;
  const int32_t target = targets[n];
  if (target < 0) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) store(dlogits, base + j, 0.0f);
    return;
  }
  const MaxSum stats = row_max_sum(logits, base, V);
  if (target >= V) {
    if (threadIdx.x == 0) atomicOr(status, kStatusTargetOutOfRange);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) store(dlogits, base + j, NAN);
    return;
  }
  const float inv_sum = 1.0f / stats.sum;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float p = expf(load(logits, base + j) - stats.max) * inv_sum;  // read before the aliased write
    store(dlogits, base + j, scale * (p - (j == target ? 1.0f : 0.0f)));
  }
}

void launch_cross_entropy_forward(FloatPtr losses, FloatPtr logits, const int32_t* targets, int64_t N, int64_t V,
                                  int* status, cudaStream_t stream) {
  if (N <= 0) return;
  cross_entropy_forward_kernel<<<row_grid(N, "cross_entropy_forward"), kCrossEntropyThreads, 0, stream>>>(
      losses, logits, targets, V, status);
  GUM_CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
}

void launch_cross_entropy_backward(FloatPtr dlogits, FloatPtr logits, const int32_t* targets, int64_t N, int64_t V,
                                   float scale, int* status, cudaStream_t stream) {
  if (N <= 0) return;
  cross_entropy_backward_kernel<<<row_grid(N, "cross_entropy_backward"), kCrossEntropyThreads, 0, stream>>>(
      dlogits, logits, targets, V, scale, status);
  GUM_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

}  // namespace

void CudaBackend::cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(losses, N, op, "losses");
  require_numel(targets, N, op, "targets");
  launch_cross_entropy_forward(float_ptr(losses, op, "losses"), float_ptr(logits, op, "logits"),
                               i32_ptr(targets, op, "targets"), N, V, status_, stream_);
}

void CudaBackend::cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) {
  const char* op = "cross_entropy_backward";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(dlogits, N * V, op, "dlogits");
  require_numel(targets, N, op, "targets");
  launch_cross_entropy_backward(float_ptr(dlogits, op, "dlogits"), float_ptr(logits, op, "logits"),
                                i32_ptr(targets, op, "targets"), N, V, scale, status_, stream_);
}

// ---------------------------------------------------------------------------------------------
// Optimizer ops.

}  // namespace gum::cuda
