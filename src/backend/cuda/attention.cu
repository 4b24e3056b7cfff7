// Causal attention, forward and backward, and the cached attention of incremental decoding.
// Three kernels, chosen by training.attention (CudaBackend's AttentionKernel): `gemm` runs cuBLAS
// batched GEMMs (gemm.cpp) around the fused masked softmax and its backward here (the
// per-(batch, head) pointer tables too); `flash` runs the flash-style warp-per-row kernels (fp32,
// the reference of) `flash_wmma`, the tensor-core tiles of attention_wmma.cu.
// Scores/probabilities are [B, H, T, T] row-major; one warp owns one query row.
#include <algorithm>
#include <cmath>

#include "../op_checks.h"
#include "attention_common.cuh"
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// Pointer arrays for cublasGemmBatchedEx. Item i of a batch of (batch x heads_per_batch)
// matrices is batch b = i / heads_per_batch, local head j = i % heads_per_batch; its matrix
// starts at base + b * stride_batch + head * stride_head elements with head = (j / div) * mul + add.
struct BatchPointerSpec {
  const float* base = nullptr;
  int64_t stride_batch = 0, stride_head = 0;
  int div = 1, mul = 1, add = 0;
};
constexpr int kMaxPointerSpecs = 10;
struct BatchPointerSpecs {
  BatchPointerSpec spec[kMaxPointerSpecs];
  int count = 0;
};

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
  const int start = clamped_window_start(doc_start, b, T, t);
  const float* p = probs + ((b * H + h) * int64_t(T) + t) * T;
  float* d = dprobs + row * T;
  float weighted = 0.0f;
  for (int s = start + lane; s <= t; s += 32) weighted += p[s] * d[s];
  weighted = warp_sum(weighted);
  for (int s = lane; s < T; s += 32) d[s] = (s >= start && s <= t) ? p[s] * (d[s] - weighted) : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Flash-style attention (Dao et al. 2022, "FlashAttention", Alg. 1 and 2, without the tiling):
// one warp per query row streams over its keys with the online softmax, so only the row's
// log-sum-exp is stored (aux [B, H, T]) and nothing of size T x T exists. A lane holds head
// elements d = lane + 32 i (i < kMaxPerLane, D <= 256). fp32 SIMT arithmetic, no tensor cores:
// the memory-lean path, selected with training.attention=flash.

constexpr int kMaxPerLane = 8;

// The query row (b, h, t) a warp owns in the one-warp-per-row kernels, and its kv head;
// false for the warps past the last row.
struct QueryRow {
  int64_t index;  // (b * H + h) * T + t: the row of lse and delta
  int64_t b;
  int h, t, kv;
};
__device__ __forceinline__ bool query_row_of_warp(const FlashDims& s, QueryRow& r) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= int64_t(s.B) * s.H * s.T) return false;
  r.index = row;
  r.t = static_cast<int>(row % s.T);
  r.h = static_cast<int>((row / s.T) % s.H);
  r.b = row / s.T / s.H;
  r.kv = r.h / (s.H / s.KV);
  return true;
}

__device__ __forceinline__ float warp_dot(const float (&a)[kMaxPerLane], const float* b, int D, int lane) {
  float dot = 0.0f;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) dot += a[i] * b[d];
  }
  return warp_sum(dot);
}

__device__ __forceinline__ void load_row(float (&dst)[kMaxPerLane], const float* src, int D, int lane) {
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    dst[i] = d < D ? src[d] : 0.0f;
  }
}

// Online-softmax attention of one query (held in the lane layout of load_row) over the key/value
// rows u in [first, last]: key u at keys + u * stride, value u at values + u * stride. Keeps the
// running max, the sum of exp(score - max) and the matching weighted sum of values, so nothing of
// the row's length is stored. Shared by the flash forward (keys in qkv) and cached attention
// (keys in the KV cache).
struct OnlineAttention {
  float acc[kMaxPerLane];
  float max, sum;
};

__device__ __forceinline__ OnlineAttention attend_online(const float (&q)[kMaxPerLane], const float* keys,
                                                         const float* values, int64_t stride, int first, int last,
                                                         int D, float scale, int lane) {
  OnlineAttention r;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) r.acc[i] = 0.0f;
  r.max = -INFINITY;
  r.sum = 0.0f;
  for (int u = first; u <= last; ++u) {
    const float score = warp_dot(q, keys + u * stride, D, lane) * scale;
    const float new_max = fmaxf(r.max, score);
    const float correction = expf(r.max - new_max);  // 0 for the first key
    const float p = expf(score - new_max);
    r.sum = r.sum * correction + p;
    const float* value = values + u * stride;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) r.acc[i] = r.acc[i] * correction + p * value[d];
    }
    r.max = new_max;
  }
  return r;
}

// o[d] = the softmax-weighted value sum of a finished row.
__device__ __forceinline__ void store_attention_row(float* o, const OnlineAttention& r, int D, int lane) {
  const float inv_sum = 1.0f / r.sum;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) o[d] = r.acc[i] * inv_sum;
  }
}

__global__ void flash_forward_kernel(float* out, float* lse, const float* qkv, const int32_t* doc_start, FlashDims s,
                                     int* status) {
  QueryRow q_row;
  if (!query_row_of_warp(s, q_row)) return;
  const int lane = threadIdx.x & 31;
  const int t = q_row.t, h = q_row.h, kv = q_row.kv;
  const int64_t b = q_row.b, row = q_row.index;
  const int64_t W = s.width();
  const int start = window_start(doc_start, b, s.T, t, status);
  float q[kMaxPerLane];
  load_row(q, qkv + (b * s.T + t) * W + int64_t(h) * s.D, s.D, lane);
  const float* sequence = qkv + b * s.T * W;
  const OnlineAttention r = attend_online(q, sequence + int64_t(s.H + kv) * s.D,
                                          sequence + int64_t(s.H + s.KV + kv) * s.D, W, start, t, s.D, s.scale, lane);
  store_attention_row(out + (b * s.T + t) * int64_t(s.H) * s.D + int64_t(h) * s.D, r, s.D, lane);
  if (lane == 0) lse[row] = r.max + logf(r.sum);
}

// dQ, one warp per query row (b, h, t): P = exp(score - lse) recomputed, dS = P (dP - delta)
// with delta = dO . O (= sum_u P dP); delta is also saved for the dK/dV kernel.
__global__ void flash_backward_dq_kernel(float* dqkv, float* delta_out, const float* dout, const float* out,
                                         const float* lse, const float* qkv, const int32_t* doc_start, FlashDims s) {
  QueryRow q_row;
  if (!query_row_of_warp(s, q_row)) return;
  const int lane = threadIdx.x & 31;
  const int t = q_row.t, h = q_row.h, kv = q_row.kv;
  const int64_t b = q_row.b, row = q_row.index;
  const int64_t W = s.width(), token = b * s.T + t;
  const int start = clamped_window_start(doc_start, b, s.T, t);
  float q[kMaxPerLane], go[kMaxPerLane], dq[kMaxPerLane];
  load_row(q, qkv + token * W + int64_t(h) * s.D, s.D, lane);
  load_row(go, dout + token * int64_t(s.H) * s.D + int64_t(h) * s.D, s.D, lane);
  const float delta = warp_dot(go, out + token * int64_t(s.H) * s.D + int64_t(h) * s.D, s.D, lane);
  if (lane == 0) delta_out[row] = delta;
  const float row_lse = lse[row];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) dq[i] = 0.0f;
  for (int u = start; u <= t; ++u) {
    const float* key_row = qkv + (b * s.T + u) * W;
    const float* key = key_row + int64_t(s.H + kv) * s.D;
    const float p = expf(warp_dot(q, key, s.D, lane) * s.scale - row_lse);
    const float dp = warp_dot(go, key_row + int64_t(s.H + s.KV + kv) * s.D, s.D, lane);
    const float ds = p * (dp - delta);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < s.D) dq[i] += ds * key[d];
    }
  }
  float* dq_row = dqkv + token * W + int64_t(h) * s.D;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < s.D) dq_row[d] = dq[i] * s.scale;
  }
}

// dK and dV, one warp per key row (b, kv, u): it alone sums over the queries t >= u whose window
// contains u, of every query head sharing this kv head, in a fixed order (no atomics).
__global__ void flash_backward_dkv_kernel(float* dqkv, const float* dout, const float* lse, const float* delta,
                                          const float* qkv, const int32_t* doc_start, FlashDims s) {
  const int64_t rows = int64_t(s.B) * s.KV * s.T;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const int u = static_cast<int>(row % s.T), kv = static_cast<int>((row / s.T) % s.KV);
  const int64_t b = row / s.T / s.KV;
  const int group = s.H / s.KV;
  const int64_t W = s.width(), key_token = b * s.T + u;
  float k[kMaxPerLane], v[kMaxPerLane], dk[kMaxPerLane], dv[kMaxPerLane];
  load_row(k, qkv + key_token * W + int64_t(s.H + kv) * s.D, s.D, lane);
  load_row(v, qkv + key_token * W + int64_t(s.H + s.KV + kv) * s.D, s.D, lane);
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) dk[i] = dv[i] = 0.0f;
  for (int g = 0; g < group; ++g) {
    const int h = kv * group + g;
    for (int t = u; t < s.T; ++t) {
      const int64_t token = b * s.T + t;
      if (clamped_window_start(doc_start, b, s.T, t) > u) continue;  // key u lies before query t's document
      const int64_t stat = (b * s.H + h) * s.T + t;
      const float* q = qkv + token * W + int64_t(h) * s.D;
      const float* go = dout + token * int64_t(s.H) * s.D + int64_t(h) * s.D;
      const float p = expf(warp_dot(k, q, s.D, lane) * s.scale - lse[stat]);
      const float dp = warp_dot(v, go, s.D, lane);
      const float ds = p * (dp - delta[stat]);
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < s.D) {
          dv[i] += p * go[d];
          dk[i] += ds * q[d];
        }
      }
    }
  }
  float* dk_row = dqkv + key_token * W + int64_t(s.H + kv) * s.D;
  float* dv_row = dqkv + key_token * W + int64_t(s.H + s.KV + kv) * s.D;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < s.D) {
      dk_row[d] = dk[i] * s.scale;
      dv_row[d] = dv[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Incremental decoding against a KV cache [B, capacity, 2 KV D] (row = k heads | v heads). The
// append kernel copies the k/v part of the n new qkv rows into cache rows [past, past + n); the
// attention kernel (launched after it on the same stream) gives one warp to each (new row, query
// head) and streams over cache rows [0, past + i] with the online softmax: no T-sized buffer.

__global__ void kv_cache_append_kernel(float* kv_cache, const float* qkv, int B, int n, int past, int capacity, int H,
                                       int KV, int D) {
  const int64_t kv_width = 2 * int64_t(KV) * D, W = int64_t(H + 2 * KV) * D;
  GUM_GRID_STRIDE_LOOP(idx, int64_t(B) * n * kv_width) {
    const int64_t row = idx / kv_width, e = idx % kv_width;  // row = b * n + i
    const int64_t b = row / n, i = row % n;
    kv_cache[(b * capacity + past + i) * kv_width + e] = qkv[row * W + int64_t(H) * D + e];
  }
}

__global__ void cached_attention_kernel(float* out, const float* kv_cache, const float* qkv, int B, int n, int past,
                                        int capacity, int H, int KV, int D, float scale) {
  const int64_t warp_row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (warp_row >= int64_t(B) * n * H) return;  // the whole warp leaves together
  const int lane = threadIdx.x & 31;
  const int h = static_cast<int>(warp_row % H);
  const int64_t row = warp_row / H;  // b * n + i
  const int64_t b = row / n;
  const int i = static_cast<int>(row % n), kv = h / (H / KV);
  const int64_t kv_width = 2 * int64_t(KV) * D, W = int64_t(H + 2 * KV) * D;
  float q[kMaxPerLane];
  load_row(q, qkv + row * W + int64_t(h) * D, D, lane);
  const float* cache = kv_cache + b * capacity * kv_width;
  const OnlineAttention r =
      attend_online(q, cache + int64_t(kv) * D, cache + int64_t(KV + kv) * D, kv_width, 0, past + i, D, scale, lane);
  store_attention_row(out + row * int64_t(H) * D + int64_t(h) * D, r, D, lane);
}

unsigned row_blocks(int64_t rows) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) runtime_error("attention: ", rows, " softmax rows exceed the grid limit");
  return static_cast<unsigned>(blocks);
}

// out[s * items + i] = pointer of item i under spec s.
void launch_fill_batch_pointers(const float** out, const BatchPointerSpecs& specs, int64_t items, int heads_per_batch,
                                cudaStream_t stream) {
  if (items <= 0 || specs.count <= 0) return;
  fill_batch_pointers_kernel<<<grid_for(items * specs.count), kThreads, 0, stream>>>(out, specs, items,
                                                                                     heads_per_batch);
  GUM_CUDA_CHECK_LAUNCH("fill_batch_pointers_kernel");
}

// In place on scores [B, H, T, T] (already scaled): row (b, h, t) becomes the softmax over
// keys [start, t] and 0 elsewhere, start = doc_start[b*T + t] (or 0).
void launch_causal_softmax(float* probs, const int32_t* doc_start, int B, int H, int T, int* status,
                           cudaStream_t stream) {
  const int64_t rows = int64_t(B) * H * T;
  if (rows <= 0) return;
  causal_softmax_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(probs, doc_start, B, H, T, status);
  GUM_CUDA_CHECK_LAUNCH("causal_softmax_kernel");
}

// Softmax backward for the query heads h = kv * group + g (one group member g at a time):
// dprobs [B, KV, T, T] (the item order of the batched GEMMs) becomes
// dS = P * (dP - sum_s P dP) inside the window and 0 outside; P read from probs [B, H, T, T].
void launch_causal_softmax_backward(float* dprobs, const float* probs, const int32_t* doc_start, int B, int H, int KV,
                                    int T, int g, cudaStream_t stream) {
  const int64_t rows = int64_t(B) * KV * T;
  if (rows <= 0) return;
  causal_softmax_backward_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(dprobs, probs, doc_start, B, H, KV, T, g);
  GUM_CUDA_CHECK_LAUNCH("causal_softmax_backward_kernel");
}

// The warp-per-row kernels keep a head in kMaxPerLane registers per lane: D <= 256.
FlashDims flash_dims(const char* op, int B, int H, int KV, int T, int D) {
  if (D > 32 * kMaxPerLane) runtime_error(op, ": head_dim ", D, " exceeds ", 32 * kMaxPerLane);
  return FlashDims{B, H, KV, T, D, static_cast<float>(1.0 / std::sqrt(double(D)))};
}

// The tensor-core kernels take heads up to kWmmaFlashMaxHeadDim; larger ones run the scalar kernels.
bool use_tensor_cores(AttentionKernel kernel, int D) {
  return kernel == AttentionKernel::FlashWmma && D <= kWmmaFlashMaxHeadDim;
}

// Flash-style attention (online softmax): out [N, H*D] and lse [B, H, T] = log-sum-exp of each
// query row's scaled scores; the scalar kernel has one warp per query row.
void launch_flash_attention_forward(AttentionKernel kernel, float* out, float* lse, const float* qkv,
                                    const int32_t* doc_start, int B, int H, int KV, int T, int D, int* status,
                                    cudaStream_t stream) {
  const FlashDims dims = flash_dims("flash attention", B, H, KV, T, D);
  if (use_tensor_cores(kernel, D)) return launch_wmma_flash_forward(out, lse, qkv, doc_start, dims, status, stream);
  flash_forward_kernel<<<row_blocks(int64_t(B) * H * T), kThreads, 0, stream>>>(out, lse, qkv, doc_start, dims, status);
  GUM_CUDA_CHECK_LAUNCH("flash_forward_kernel");
}

// Incremental decoding (CudaBackend::cached_attention_forward): copies the k/v heads of the n new
// rows per sequence of qkv [B*n, W] into kv_cache [B, capacity, 2 KV D] rows [past_len, past_len + n),
// then one warp per (new row, head) writes out [B*n, H*D] by the online softmax over cache rows
// [0, past_len + i]. D <= 256.
void launch_cached_attention_forward(float* out, float* kv_cache, const float* qkv, int B, int n, int past_len,
                                     int capacity, int H, int KV, int D, cudaStream_t stream) {
  const FlashDims dims = flash_dims("cached_attention_forward", B, H, KV, n, D);
  kv_cache_append_kernel<<<grid_for(int64_t(B) * n * 2 * KV * D), kThreads, 0, stream>>>(kv_cache, qkv, B, n, past_len,
                                                                                         capacity, H, KV, D);
  GUM_CUDA_CHECK_LAUNCH("kv_cache_append_kernel");
  cached_attention_kernel<<<row_blocks(int64_t(B) * n * H), kThreads, 0, stream>>>(out, kv_cache, qkv, B, n, past_len,
                                                                                   capacity, H, KV, D, dims.scale);
  GUM_CUDA_CHECK_LAUNCH("cached_attention_kernel");
}

// Writes every element of dqkv (no memset needed); delta is [B, H, T] scratch (dO . O per row).
void launch_flash_attention_backward(AttentionKernel kernel, float* dqkv, float* delta, const float* dout,
                                     const float* out, const float* lse, const float* qkv, const int32_t* doc_start,
                                     int B, int H, int KV, int T, int D, cudaStream_t stream) {
  const FlashDims dims = flash_dims("flash attention", B, H, KV, T, D);
  if (use_tensor_cores(kernel, D))
    return launch_wmma_flash_backward(dqkv, delta, dout, out, lse, qkv, doc_start, dims, stream);
  flash_backward_dq_kernel<<<row_blocks(int64_t(B) * H * T), kThreads, 0, stream>>>(dqkv, delta, dout, out, lse, qkv,
                                                                                    doc_start, dims);
  GUM_CUDA_CHECK_LAUNCH("flash_backward_dq_kernel");
  flash_backward_dkv_kernel<<<row_blocks(int64_t(B) * KV * T), kThreads, 0, stream>>>(dqkv, dout, lse, delta, qkv,
                                                                                      doc_start, dims);
  GUM_CUDA_CHECK_LAUNCH("flash_backward_dkv_kernel");
}

void check_attention_shape(const AttentionShape& s, const Tensor& qkv, const Tensor* doc_start, const char* op) {
  op_checks::require_attention_args(s, qkv, doc_start, Device::CUDA, op, /*bf16_allowed=*/true);
}

bool any_bf16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t->dtype == DType::BF16) return true;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Attention: S = scale Q K^T per (batch, head) by one batched GEMM over the full T x T, the
// masked softmax kernel turns S into P in place (aux), O = P V by a second batched GEMM.
// Grouped-query heads share K/V through the pointer tables (query head h reads kv head h / G).
// With the flash kernel the flash-style kernels above run instead and aux holds only each query
// row's log-sum-exp.

namespace {

constexpr int kForwardSpecs = 5, kBackwardSpecs = 9;  // batched-GEMM pointer arrays of the gemm kernel

// The gemm kernel's forward workspace: kForwardSpecs pointer arrays over the B * H items.
size_t gemm_forward_workspace(const AttentionShape& s) {
  return size_t(kForwardSpecs) * size_t(s.batch) * size_t(s.n_head) * sizeof(float*);
}

// The gemm kernel's backward workspace: kBackwardSpecs pointer arrays over the B * KV items, then
// the probability gradients [B, KV, T, T] of one query head per kv group.
struct GemmBackwardWorkspace {
  WorkspaceLayout layout;
  size_t pointers_at = 0, dprobs_at = 0;
  explicit GemmBackwardWorkspace(const AttentionShape& s) {
    const size_t items = size_t(s.batch) * size_t(s.n_kv_head), T = size_t(s.seq_len);
    pointers_at = layout.add(kBackwardSpecs * items * sizeof(float*));
    dprobs_at = layout.add(items * T * T * sizeof(float));
  }
};

// The flash kernels' backward workspace: delta = rowsum(dO * O) [B, H, T].
size_t flash_backward_workspace(const AttentionShape& s) {
  return size_t(s.batch) * size_t(s.n_head) * size_t(s.seq_len) * sizeof(float);
}

size_t forward_scratch(AttentionKernel kernel, const AttentionShape& s) {
  return kernel == AttentionKernel::Gemm ? gemm_forward_workspace(s) : 0;
}

size_t backward_scratch(AttentionKernel kernel, const AttentionShape& s) {
  return kernel == AttentionKernel::Gemm ? GemmBackwardWorkspace(s).layout.total() : flash_backward_workspace(s);
}

// With bf16 operands the fp32 kernels run on fp32 copies: forward stages qkv and out, backward
// qkv, dqkv, dout and out. The copies come first in the op workspace, the kernels' scratch after.
struct StagedWorkspace {
  WorkspaceLayout layout;
  size_t scratch_at = 0;
  StagedWorkspace(size_t staged_floats, size_t scratch_bytes) {
    layout.add(staged_floats * sizeof(float));
    scratch_at = layout.add(scratch_bytes);
  }
};

size_t qkv_floats(const AttentionShape& s) { return size_t(s.batch) * s.seq_len * s.qkv_width(); }
size_t out_floats(const AttentionShape& s) { return size_t(s.batch) * s.seq_len * s.n_head * s.head_dim; }

StagedWorkspace staged_forward(AttentionKernel kernel, const AttentionShape& s) {
  return StagedWorkspace(qkv_floats(s) + out_floats(s), forward_scratch(kernel, s));
}

StagedWorkspace staged_backward(AttentionKernel kernel, const AttentionShape& s) {
  return StagedWorkspace(2 * qkv_floats(s) + 2 * out_floats(s), backward_scratch(kernel, s));
}

}  // namespace

size_t CudaBackend::attention_workspace(const AttentionShape& s, bool bf16_operands) const {
  if (bf16_operands)
    return std::max(staged_forward(attention_, s).layout.total(), staged_backward(attention_, s).layout.total());
  return std::max(forward_scratch(attention_, s), backward_scratch(attention_, s));
}

size_t CudaBackend::attention_aux_elems(const AttentionShape& s) const {
  const size_t rows = static_cast<size_t>(s.batch) * s.n_head * s.seq_len;
  return attention_ == AttentionKernel::Gemm ? rows * s.seq_len : rows;
}

void CudaBackend::attention_forward(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                                    const AttentionShape& s) {
  check_attention_shape(s, qkv, doc_start, "attention_forward");
  if (!any_bf16({&qkv, &out})) {
    attention_forward_f32(out, aux, qkv, doc_start, s, workspace(forward_scratch(attention_, s)));
    return;
  }
  const StagedWorkspace pieces = staged_forward(attention_, s);
  float* base = static_cast<float*>(workspace(pieces.layout.total()));
  const Tensor qkv32(base, DType::F32, Device::CUDA, qkv.shape),
      out32(base + qkv.numel(), DType::F32, Device::CUDA, out.shape);
  copy(qkv32, qkv);
  attention_forward_f32(out32, aux, qkv32, doc_start, s, WorkspaceLayout::at<void>(base, pieces.scratch_at));
  copy(out, out32);
}

void CudaBackend::attention_forward_f32(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                                        const AttentionShape& s, void* scratch) {
  const char* op = "attention_forward";
  require_f32(out, op, "out");
  require_f32(aux, op, "aux");
  const int64_t B = s.batch, T = s.seq_len, H = s.n_head, KV = s.n_kv_head, D = s.head_dim, G = H / KV;
  const int64_t W = s.qkv_width();
  require_numel(out, B * T * H * D, op, "out");
  if (aux.numel() < int64_t(attention_aux_elems(s)))
    runtime_error(op, ": aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
  const int32_t* doc = doc_start ? doc_start->ptr<int32_t>() : nullptr;
  if (attention_ != AttentionKernel::Gemm) {
    launch_flash_attention_forward(attention_, out.f32(), aux.f32(), qkv.f32(), doc, int(B), int(H), int(KV), int(T),
                                   int(D), status_, stream_);
    return;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  const float* q = qkv.f32();
  const int64_t items = B * H;

  BatchPointerSpecs specs;
  specs.spec[0] = {q, T * W, D, 1, 1, 0};                      // Q of head h
  specs.spec[1] = {q + H * D, T * W, D, int(G), 1, 0};         // K of kv head h / G
  specs.spec[2] = {aux.f32(), H * T * T, T * T, 1, 1, 0};      // S / P of (b, h)
  specs.spec[3] = {q + (H + KV) * D, T * W, D, int(G), 1, 0};  // V of kv head h / G
  specs.spec[4] = {out.f32(), T * H * D, D, 1, 1, 0};          // O of head h
  specs.count = kForwardSpecs;
  auto** pointers = static_cast<const float**>(scratch);
  launch_fill_batch_pointers(pointers, specs, items, int(H), stream_);
  const float* const* Q = pointers;
  const float* const* Kp = pointers + items;
  const float* const* P = pointers + 2 * items;
  const float* const* Vp = pointers + 3 * items;
  const float* const* O = pointers + 4 * items;

  gemm_batched_f32(false, true, T, T, D, scale, Q, W, Kp, W, 0.0f, P, T, items, op);
  launch_causal_softmax(aux.f32(), doc, int(B), int(H), int(T), status_, stream_);
  gemm_batched_f32(false, false, T, D, T, 1.0f, P, T, Vp, W, 0.0f, O, H * D, items, op);
}

// Backward, one member g of every kv group at a time (so the dK/dV accumulations of the
// G query heads that share a kv head never race): dV += P^T dO; dP = dO V^T; dS = softmax
// backward; dQ = scale dS K; dK += scale dS^T Q.
void CudaBackend::attention_backward(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux,
                                     const Tensor& qkv, const Tensor* doc_start, const AttentionShape& s) {
  check_attention_shape(s, qkv, doc_start, "attention_backward");
  if (!any_bf16({&dqkv, &dout, &out, &qkv})) {
    attention_backward_f32(dqkv, dout, out, aux, qkv, doc_start, s, workspace(backward_scratch(attention_, s)));
    return;
  }
  const StagedWorkspace pieces = staged_backward(attention_, s);
  float* base = static_cast<float*>(workspace(pieces.layout.total()));
  const Tensor qkv32(base, DType::F32, Device::CUDA, qkv.shape);
  const Tensor dqkv32(base + qkv.numel(), DType::F32, Device::CUDA, dqkv.shape);
  const Tensor dout32(base + 2 * qkv.numel(), DType::F32, Device::CUDA, dout.shape);
  const Tensor out32(base + 2 * qkv.numel() + dout.numel(), DType::F32, Device::CUDA, out.shape);
  copy(qkv32, qkv);
  copy(dout32, dout);
  copy(out32, out);
  attention_backward_f32(dqkv32, dout32, out32, aux, qkv32, doc_start, s,
                         WorkspaceLayout::at<void>(base, pieces.scratch_at));
  copy(dqkv, dqkv32);
}

void CudaBackend::attention_backward_f32(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux,
                                         const Tensor& qkv, const Tensor* doc_start, const AttentionShape& s,
                                         void* scratch) {
  const char* op = "attention_backward";
  require_f32(dqkv, op, "dqkv");
  require_f32(dout, op, "dout");
  require_f32(aux, op, "aux");
  const int64_t B = s.batch, T = s.seq_len, H = s.n_head, KV = s.n_kv_head, D = s.head_dim, G = H / KV;
  const int64_t W = s.qkv_width();
  require_numel(dqkv, qkv.numel(), op, "dqkv");
  require_numel(dout, B * T * H * D, op, "dout");
  if (aux.numel() < int64_t(attention_aux_elems(s)))
    runtime_error(op, ": aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
  const int32_t* doc = doc_start ? doc_start->ptr<int32_t>() : nullptr;
  if (attention_ != AttentionKernel::Gemm) {
    require_f32(out, op, "out");
    require_numel(out, B * T * H * D, op, "out");
    float* delta = static_cast<float*>(scratch);
    launch_flash_attention_backward(attention_, dqkv.f32(), delta, dout.f32(), out.f32(), aux.f32(), qkv.f32(), doc,
                                    int(B), int(H), int(KV), int(T), int(D), stream_);
    return;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  const int64_t items = B * KV;
  const GemmBackwardWorkspace pieces(s);
  auto** pointers = WorkspaceLayout::at<const float*>(scratch, pieces.pointers_at);
  float* dprobs = WorkspaceLayout::at<float>(scratch, pieces.dprobs_at);

  GUM_CUDA_CHECK(cudaMemsetAsync(dqkv.data, 0, dqkv.nbytes(), stream_));
  const float* q = qkv.f32();
  float* dq = dqkv.f32();
  const float* const* P = pointers;
  const float* const* dO = pointers + items;
  const float* const* dV = pointers + 2 * items;
  const float* const* Vp = pointers + 3 * items;
  const float* const* dS = pointers + 4 * items;
  const float* const* Kp = pointers + 5 * items;
  const float* const* dQ = pointers + 6 * items;
  const float* const* Q = pointers + 7 * items;
  const float* const* dK = pointers + 8 * items;
  for (int g = 0; g < G; ++g) {
    // Items are (b, kv); query head h = kv * G + g.
    BatchPointerSpecs specs;
    specs.spec[0] = {aux.f32(), H * T * T, T * T, 1, int(G), g};
    specs.spec[1] = {dout.f32(), T * H * D, D, 1, int(G), g};
    specs.spec[2] = {dq + (H + KV) * D, T * W, D, 1, 1, 0};
    specs.spec[3] = {q + (H + KV) * D, T * W, D, 1, 1, 0};
    specs.spec[4] = {dprobs, KV * T * T, T * T, 1, 1, 0};
    specs.spec[5] = {q + H * D, T * W, D, 1, 1, 0};
    specs.spec[6] = {dq, T * W, D, 1, int(G), g};
    specs.spec[7] = {q, T * W, D, 1, int(G), g};
    specs.spec[8] = {dq + H * D, T * W, D, 1, 1, 0};
    specs.count = kBackwardSpecs;
    launch_fill_batch_pointers(pointers, specs, items, int(KV), stream_);

    gemm_batched_f32(true, false, T, D, T, 1.0f, P, T, dO, H * D, 1.0f, dV, W, items, op);
    gemm_batched_f32(false, true, T, T, D, 1.0f, dO, H * D, Vp, W, 0.0f, dS, T, items, op);
    launch_causal_softmax_backward(dprobs, aux.f32(), doc, int(B), int(H), int(KV), int(T), g, stream_);
    gemm_batched_f32(false, false, T, D, T, scale, dS, T, Kp, W, 0.0f, dQ, W, items, op);
    gemm_batched_f32(true, false, T, D, T, scale, dS, T, Q, W, 1.0f, dK, W, items, op);
  }
}

// Incremental decoding: the warp-per-row kernels above (append, then online softmax over the
// cache), whichever attention kernel is chosen: one query row per head is too thin for GEMMs.
void CudaBackend::cached_attention_forward(Tensor out, Tensor kv_cache, const Tensor& qkv, int past_len,
                                           const AttentionShape& s) {
  const int64_t capacity = op_checks::require_cached_attention_args(s, out, kv_cache, qkv, past_len, Device::CUDA,
                                                                    "cached_attention_forward");
  launch_cached_attention_forward(out.f32(), kv_cache.f32(), qkv.f32(), s.batch, s.seq_len, past_len,
                                  checked_int(capacity, "cached_attention_forward", "capacity"), s.n_head, s.n_kv_head,
                                  s.head_dim, stream_);
}

}  // namespace gum::cuda
