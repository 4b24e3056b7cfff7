// Cross-entropy over logits [N, V]: the per-row losses, the gradient (in place or not), or both
// in one kernel (cross_entropy_fused, what training runs).
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// Cross-entropy, one block per row, logits in storage type T, V elements per access. One pass
// computes the row's max and sum of exp with the online recurrence (device_utils.cuh); the loss
// then needs only the target's logit (read before the block's barrier, so before any in-place
// write), the gradient a second pass that writes scale * (p - onehot), over the logits when they
// alias. kLoss and kGrad choose the outputs: with both, a row of logits is read twice and written
// once (the loss's own pass and a separate backward read it three times in all).

constexpr int kCrossEntropyThreads = 512;

template <typename T, int V, bool kLoss, bool kGrad>
__global__ void cross_entropy_kernel(FloatPtr losses, T* dlogits, const T* logits, const int32_t* targets,
                                     int64_t vocab, float scale, int* status) {
  __shared__ MaxSum scratch[32];
  const int64_t n = blockIdx.x, base = n * vocab;
  const int32_t target = targets[n];
  if (target < 0 || target >= vocab) {  // ignored (or invalid) row: uniform across the block
    const bool ignored = target < 0;
    if (threadIdx.x == 0) {
      if (!ignored) atomicOr(status, kStatusTargetOutOfRange);
      if constexpr (kLoss) store(losses, n, ignored ? 0.0f : NAN);
    }
    if constexpr (kGrad) {
      float fill[V];
#pragma unroll
      for (int k = 0; k < V; ++k) fill[k] = ignored ? 0.0f : NAN;
      for (int64_t j = int64_t(threadIdx.x) * V; j < vocab; j += int64_t(blockDim.x) * V)
        store_vec(dlogits, base + j, fill);
    }
    return;
  }
  const float target_logit = kLoss && threadIdx.x == 0 ? to_float(logits[base + target]) : 0.0f;
  MaxSum stats = max_sum_empty();
  for (int64_t j = int64_t(threadIdx.x) * V; j < vocab; j += int64_t(blockDim.x) * V) {
    float x[V];
    load_vec(x, logits, base + j);
#pragma unroll
    for (int k = 0; k < V; ++k) max_sum_add(stats, x[k]);
  }
  stats = block_max_sum(stats, scratch);  // ends with a barrier: every read above is done
  if (kLoss && threadIdx.x == 0) store(losses, n, logf(stats.sum) + stats.max - target_logit);
  if constexpr (!kGrad) return;
  const float inv_sum = 1.0f / stats.sum;
  for (int64_t j = int64_t(threadIdx.x) * V; j < vocab; j += int64_t(blockDim.x) * V) {
    float x[V];
    load_vec(x, logits, base + j);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] = scale * (expf(x[k] - stats.max) * inv_sum - (j + k == target ? 1.0f : 0.0f));
    store_vec(dlogits, base + j, x);
  }
}

template <bool kLoss, bool kGrad>
void launch_cross_entropy(FloatPtr losses, FloatPtr dlogits, FloatPtr logits, const int32_t* targets, int64_t N,
                          int64_t vocab, float scale, int* status, cudaStream_t stream) {
  if (N <= 0) return;
  const unsigned grid = row_grid(N, "cross_entropy");
  with_dtype(logits, [&](auto t) {
    using T = decltype(t);
    T* d = static_cast<T*>(dlogits.data);
    const T* x = static_cast<const T*>(logits.data);
    auto launch = [&](auto cross_entropy_kernel) {
      cross_entropy_kernel<<<grid, kCrossEntropyThreads, 0, stream>>>(losses, d, x, targets, vocab, scale, status);
      GUM_CUDA_CHECK_LAUNCH("cross_entropy_kernel");
    };
    constexpr int P = kPackWidth<T>;
    if (vector_width<T>(vocab, {d, x}) == P)
      launch(cross_entropy_kernel<T, P, kLoss, kGrad>);
    else
      launch(cross_entropy_kernel<T, 1, kLoss, kGrad>);
  });
}

}  // namespace

void CudaBackend::cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(losses, N, op, "losses");
  require_numel(targets, N, op, "targets");
  const FloatPtr x = float_ptr(logits, op, "logits");
  launch_cross_entropy<true, false>(float_ptr(losses, op, "losses"), FloatPtr{nullptr, x.bf16}, x,
                                    i32_ptr(targets, op, "targets"), N, V, 0.0f, status_, stream_);
}

void CudaBackend::cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) {
  const char* op = "cross_entropy_backward";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(dlogits, N * V, op, "dlogits");
  require_numel(targets, N, op, "targets");
  if (dlogits.dtype != logits.dtype) runtime_error(op, ": dlogits and logits must share a dtype");
  launch_cross_entropy<false, true>(FloatPtr{}, float_ptr(dlogits, op, "dlogits"), float_ptr(logits, op, "logits"),
                                    i32_ptr(targets, op, "targets"), N, V, scale, status_, stream_);
}

void CudaBackend::cross_entropy_fused(Tensor losses, Tensor logits, const Tensor& targets, float scale) {
  const char* op = "cross_entropy_fused";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(losses, N, op, "losses");
  require_numel(targets, N, op, "targets");
  const FloatPtr x = float_ptr(logits, op, "logits");
  launch_cross_entropy<true, true>(float_ptr(losses, op, "losses"), x, x, i32_ptr(targets, op, "targets"), N, V, scale,
                                   status_, stream_);
}

}  // namespace gum::cuda
