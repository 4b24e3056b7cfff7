// Attention kernels around the cuBLAS batched GEMMs of CudaBackend::attention_forward/backward
// (cuda_linalg.cpp): the per-(batch, head) pointer tables and the fused masked softmax and its
// backward. Scores/probabilities are [B, H, T, T] row-major; one warp owns one query row.
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;

__global__ void fill_batch_pointers_kernel(const float** out, BatchPointerSpecs specs, int64_t items,
                                           int heads_per_batch) {
  GUM_GRID_STRIDE_LOOP(i, items * specs.count) {
    const int s = static_cast<int>(i / items);
    const int64_t item = i % items;
    const BatchPointerSpec& spec = specs.spec[s];
    const int64_t b = item / heads_per_batch;
    const int j = static_cast<int>(item % heads_per_batch);
    const int64_t head = int64_t(j / spec.div) * spec.mul + spec.add;
    out[i] = spec.base + b * spec.stride_batch + head * spec.stride_head;
  }
}

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

// In place: scaled scores -> probabilities over [start, t], zeros elsewhere (the masked part of
// the full T x T GEMM output is overwritten, so it never needs initialising).
__global__ void causal_softmax_kernel(float* probs, const int32_t* doc_start, int B, int H, int T, int* status) {
  const int64_t rows = int64_t(B) * H * T;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x & 31;
  const int t = static_cast<int>(row % T);
  const int64_t b = row / T / H;
  const int start = window_start(doc_start, b, T, t, status);
  float* p = probs + row * T;
  MaxSum stats = max_sum_empty();
  for (int s = start + lane; s <= t; s += 32) max_sum_add(stats, p[s]);
  stats = warp_max_sum(stats);
  const float inv_sum = 1.0f / stats.sum;
  for (int s = lane; s < T; s += 32) p[s] = (s >= start && s <= t) ? expf(p[s] - stats.max) * inv_sum : 0.0f;
}

// Softmax backward (dS = P * (dP - sum_s P dP)) for query heads h = kv * group + g. dprobs holds
// dP for the items (b, kv) of the batched GEMMs, [B, KV, T, T]; it is overwritten with dS.
__global__ void causal_softmax_backward_kernel(float* dprobs, const float* probs, const int32_t* doc_start, int B,
                                               int H, int KV, int T, int g) {
  const int64_t rows = int64_t(B) * KV * T;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const int t = static_cast<int>(row % T);
  const int64_t item = row / T;
  const int64_t b = item / KV;
  const int kv = static_cast<int>(item % KV);
  const int h = kv * (H / KV) + g;
  int start = doc_start ? doc_start[b * T + t] : 0;  // validated (and reported) by the forward pass
  start = start < 0 ? 0 : (start > t ? t : start);
  const float* p = probs + ((b * H + h) * int64_t(T) + t) * T;
  float* d = dprobs + row * T;
  float weighted = 0.0f;
  for (int s = start + lane; s <= t; s += 32) weighted += p[s] * d[s];
  weighted = warp_sum(weighted);
  for (int s = lane; s < T; s += 32) d[s] = (s >= start && s <= t) ? p[s] * (d[s] - weighted) : 0.0f;
}

unsigned row_blocks(int64_t rows) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) runtime_error("attention: ", rows, " softmax rows exceed the grid limit");
  return static_cast<unsigned>(blocks);
}

}  // namespace

void launch_fill_batch_pointers(const float** out, const BatchPointerSpecs& specs, int64_t items,
                                int heads_per_batch, cudaStream_t stream) {
  if (items <= 0 || specs.count <= 0) return;
  fill_batch_pointers_kernel<<<grid_for(items * specs.count), kThreads, 0, stream>>>(out, specs, items,
                                                                                   heads_per_batch);
  GUM_CUDA_CHECK_LAUNCH("fill_batch_pointers_kernel");
}

void launch_causal_softmax(float* probs, const int32_t* doc_start, int B, int H, int T, int* status,
                           cudaStream_t stream) {
  const int64_t rows = int64_t(B) * H * T;
  if (rows <= 0) return;
  causal_softmax_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(probs, doc_start, B, H, T, status);
  GUM_CUDA_CHECK_LAUNCH("causal_softmax_kernel");
}

void launch_causal_softmax_backward(float* dprobs, const float* probs, const int32_t* doc_start, int B, int H,
                                    int KV, int T, int g, cudaStream_t stream) {
  const int64_t rows = int64_t(B) * KV * T;
  if (rows <= 0) return;
  causal_softmax_backward_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(dprobs, probs, doc_start, B, H, KV, T,
                                                                           g);
  GUM_CUDA_CHECK_LAUNCH("causal_softmax_backward_kernel");
}

}  // namespace gum::cuda
