// Transformer kernels: embedding, RMSNorm, RoPE, SwiGLU, cross-entropy (forward and backward
// side by side). Activations are [N, C] row-major; arithmetic is fp32 (double where the CPU
// reference accumulates in double), inputs and outputs F32 or BF16 through FloatPtr.
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// Embedding. Forward: one thread per output element, out[n, c] = table[tokens[n], c].
// A bad id cannot throw on the device: the row becomes NaN and the status word says why.

__global__ void embedding_forward_kernel(FloatPtr out, const int32_t* tokens, FloatPtr table, int64_t N, int64_t C,
                                         int64_t V, int* status) {
  GUM_GRID_STRIDE_LOOP(i, N * C) {
    const int64_t n = i / C, c = i % C;
    const int32_t token = tokens[n];
    if (token < 0 || token >= V) {
      if (c == 0) atomicOr(status, kStatusTokenOutOfRange);
      store(out, i, NAN);
    } else {
      store(out, i, load(table, int64_t(token) * C + c));
    }
  }
}

// Backward without float atomics: block b owns the vocabulary rows [b*R, (b+1)*R). It scans
// all tokens in order, compacts the positions that hit its rows into a shared list (ballot +
// prefix count, which keeps token order), and adds those dout rows into dtable. Thread c
// always handles channel c, so every dtable element is summed by one thread in token order:
// the same order as the CPU reference, hence the same bits.
constexpr int kEmbeddingRowsPerBlock = 64;
constexpr int kEmbeddingListCapacity = 2048;  // >= kThreads, so one chunk always fits after a flush

__device__ void embedding_flush(FloatPtr dtable, FloatPtr dout, const int32_t* list_position, const int32_t* list_token,
                                int count, int64_t C) {
  for (int e = 0; e < count; ++e) {
    const int64_t row = list_token[e], n = list_position[e];
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      store(dtable, row * C + c, load(dtable, row * C + c) + load(dout, n * C + c));
  }
}

__global__ void embedding_backward_kernel(FloatPtr dtable, FloatPtr dout, const int32_t* tokens, int64_t N, int64_t C,
                                          int64_t V, int* status) {
  __shared__ int32_t list_position[kEmbeddingListCapacity];
  __shared__ int32_t list_token[kEmbeddingListCapacity];
  __shared__ int warp_counts[32];
  const int64_t row_begin = int64_t(blockIdx.x) * kEmbeddingRowsPerBlock;
  const int64_t row_end = min(V, row_begin + kEmbeddingRowsPerBlock);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int list_size = 0;  // the same value in every thread
  for (int64_t chunk = 0; chunk < N; chunk += blockDim.x) {
    const int64_t n = chunk + threadIdx.x;
    int32_t token = -1;
    bool mine = false;
    if (n < N) {
      token = tokens[n];
      mine = token >= row_begin && token < row_end;
      if (blockIdx.x == 0 && (token < 0 || token >= V)) atomicOr(status, kStatusTokenOutOfRange);
    }
    const unsigned ballot = __ballot_sync(kFullMask, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_counts[w];
      total += warp_counts[w];
    }
    if (list_size + total > kEmbeddingListCapacity) {  // same decision in every thread
      embedding_flush(dtable, dout, list_position, list_token, list_size, C);
      list_size = 0;
      __syncthreads();  // the list is read by every thread before it is overwritten
    }
    if (mine) {
      const int slot = list_size + before + __popc(ballot & ((1u << lane) - 1u));
      list_position[slot] = static_cast<int32_t>(n);
      list_token[slot] = token;
    }
    list_size += total;
    __syncthreads();  // list entries visible; warp_counts free for the next chunk
  }
  embedding_flush(dtable, dout, list_position, list_token, list_size, C);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm (Zhang & Sennrich 2019): y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). One block
// per row; the mean square is accumulated in double like the CPU reference.

__global__ void rmsnorm_forward_kernel(FloatPtr out, float* rstd, FloatPtr x, FloatPtr weight, int64_t C, float eps) {
  __shared__ double scratch[32];
  const int64_t base = int64_t(blockIdx.x) * C;
  double ms = 0.0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double v = load(x, base + c);
    ms += v * v;
  }
  ms = block_sum(ms, scratch);
  const float r = static_cast<float>(1.0 / sqrt(ms / double(C) + double(eps)));
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store(out, base + c, load(x, base + c) * r * load(weight, c));
}

// With g = dout * w: dx += r g - r^3 / C * x * sum_c(g x) (accumulates into the residual gradient).
__global__ void rmsnorm_backward_dx_kernel(FloatPtr dx, FloatPtr dout, FloatPtr x, FloatPtr weight, const float* rstd,
                                           int64_t C) {
  __shared__ double scratch[32];
  const int64_t base = int64_t(blockIdx.x) * C;
  const double r = rstd[blockIdx.x];
  double dot = 0.0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dot += double(load(dout, base + c)) * double(load(weight, c)) * double(load(x, base + c));
  dot = block_sum(dot, scratch);
  const double coef = r * r * r * dot / double(C);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double g = double(load(dout, base + c)) * double(load(weight, c));
    store(dx, base + c, load(dx, base + c) + static_cast<float>(r * g - coef * double(load(x, base + c))));
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE (Su et al. 2021, RoFormer eq. 34), Hugging Face rotate_half pairing: element j of a head
// rotates with element j + D/2 by position * inv_freq[j]. One thread per (row, q/k head, j);
// v heads untouched. inverse = rotation by the negative angle (backward: R^T = R^-1).
// The _rn intrinsics forbid FMA contraction so the result has the CPU's bits.

__global__ void rope_kernel(FloatPtr qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions,
                            int64_t N, int H, int KV, int D, bool inverse, int* status) {
  const int half = D / 2, rotated_heads = H + KV;
  const int64_t width = int64_t(H + 2 * KV) * D;
  GUM_GRID_STRIDE_LOOP(i, N * rotated_heads * half) {
    const int j = static_cast<int>(i % half);
    const int64_t rest = i / half;
    const int head = static_cast<int>(rest % rotated_heads);
    const int64_t n = rest / rotated_heads;
    const int32_t position = positions[n];
    const int64_t first = n * width + int64_t(head) * D + j, second = first + half;
    if (position < 0 || position >= max_positions) {
      atomicOr(status, kStatusPositionOutOfRange);
      store(qkv, first, NAN);
      store(qkv, second, NAN);
      continue;
    }
    const float cos_a = cos_sin[(int64_t(position) * half + j) * 2];
    const float sin_raw = cos_sin[(int64_t(position) * half + j) * 2 + 1];
    const float sin_a = inverse ? -sin_raw : sin_raw;
    const float a = load(qkv, first), b = load(qkv, second);
    store(qkv, first, __fsub_rn(__fmul_rn(a, cos_a), __fmul_rn(b, sin_a)));
    store(qkv, second, __fadd_rn(__fmul_rn(b, cos_a), __fmul_rn(a, sin_a)));
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU (Shazeer 2020): gate_up [N, 2F] = (gate | up), out = silu(gate) * up, one thread per
// output element; backward uses d silu(g)/dg = sig * (1 + g * (1 - sig)) and overwrites.

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void swiglu_forward_kernel(FloatPtr out, FloatPtr gate_up, int64_t N, int64_t F) {
  GUM_GRID_STRIDE_LOOP(i, N * F) {
    const int64_t n = i / F, f = i % F;
    const float g = load(gate_up, n * 2 * F + f), u = load(gate_up, n * 2 * F + F + f);
    store(out, i, g * sigmoid(g) * u);
  }
}

__global__ void swiglu_backward_kernel(FloatPtr dgate_up, FloatPtr dout, FloatPtr gate_up, int64_t N, int64_t F) {
  GUM_GRID_STRIDE_LOOP(i, N * F) {
    const int64_t n = i / F, f = i % F;
    const float g = load(gate_up, n * 2 * F + f), u = load(gate_up, n * 2 * F + F + f), go = load(dout, i);
    const float sig = sigmoid(g);
    store(dgate_up, n * 2 * F + f, go * u * sig * (1.0f + g * (1.0f - sig)));
    store(dgate_up, n * 2 * F + F + f, go * g * sig);
  }
}

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

unsigned row_grid(int64_t rows, const char* op) {
  if (rows > 0x7fffffff) runtime_error(op, ": ", rows, " rows exceed the grid limit");
  return static_cast<unsigned>(rows);
}

}  // namespace

void launch_embedding_forward(FloatPtr out, const int32_t* tokens, FloatPtr table, int64_t N, int64_t C, int64_t V,
                              int* status, cudaStream_t stream) {
  if (N * C <= 0) return;
  embedding_forward_kernel<<<grid_for(N * C), kThreads, 0, stream>>>(out, tokens, table, N, C, V, status);
  GUM_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void launch_embedding_backward(FloatPtr dtable, FloatPtr dout, const int32_t* tokens, int64_t N, int64_t C, int64_t V,
                               int* status, cudaStream_t stream) {
  if (N <= 0 || C <= 0 || V <= 0) return;
  if (N > 0x7fffffff) runtime_error("embedding_backward: ", N, " tokens exceed the kernel's 32-bit positions");
  const unsigned blocks = static_cast<unsigned>((V + kEmbeddingRowsPerBlock - 1) / kEmbeddingRowsPerBlock);
  embedding_backward_kernel<<<blocks, kThreads, 0, stream>>>(dtable, dout, tokens, N, C, V, status);
  GUM_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

void launch_rmsnorm_forward(FloatPtr out, float* rstd, FloatPtr x, FloatPtr weight, int64_t N, int64_t C, float eps,
                            cudaStream_t stream) {
  if (N <= 0) return;
  rmsnorm_forward_kernel<<<row_grid(N, "rmsnorm_forward"), kThreads, 0, stream>>>(out, rstd, x, weight, C, eps);
  GUM_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void launch_rmsnorm_backward_dx(FloatPtr dx, FloatPtr dout, FloatPtr x, FloatPtr weight, const float* rstd, int64_t N,
                                int64_t C, cudaStream_t stream) {
  if (N <= 0) return;
  rmsnorm_backward_dx_kernel<<<row_grid(N, "rmsnorm_backward"), kThreads, 0, stream>>>(dx, dout, x, weight, rstd, C);
  GUM_CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
}

void launch_rope(FloatPtr qkv, const int32_t* positions, const float* cos_sin, int64_t max_positions, int64_t N, int H,
                 int KV, int D, bool inverse, int* status, cudaStream_t stream) {
  const int64_t work = N * (H + KV) * (D / 2);
  if (work <= 0) return;
  rope_kernel<<<grid_for(work), kThreads, 0, stream>>>(qkv, positions, cos_sin, max_positions, N, H, KV, D, inverse,
                                                       status);
  GUM_CUDA_CHECK_LAUNCH("rope_kernel");
}

void launch_swiglu_forward(FloatPtr out, FloatPtr gate_up, int64_t N, int64_t F, cudaStream_t stream) {
  if (N * F <= 0) return;
  swiglu_forward_kernel<<<grid_for(N * F), kThreads, 0, stream>>>(out, gate_up, N, F);
  GUM_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void launch_swiglu_backward(FloatPtr dgate_up, FloatPtr dout, FloatPtr gate_up, int64_t N, int64_t F,
                            cudaStream_t stream) {
  if (N * F <= 0) return;
  swiglu_backward_kernel<<<grid_for(N * F), kThreads, 0, stream>>>(dgate_up, dout, gate_up, N, F);
  GUM_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
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

}  // namespace gum::cuda
