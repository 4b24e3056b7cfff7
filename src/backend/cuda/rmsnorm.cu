// RMSNorm forward (alone, or fused with the residual add before it) and backward (dx and dweight
// in one pass over the rows). Activations are [N, C] row-major in one storage type T, the weight
// in W (F32 or BF16 each, template parameters); arithmetic is fp32, row statistics in double.
#include <algorithm>

#include "cuda_backend.h"
#include "device_utils.cuh"
#include "reduce.h"

namespace gum::cuda {

namespace {

// Rows a forward block normalizes one after another: the weight's sectors are then read once per
// block for all of them (and the rstd values share sectors), not once per row.
constexpr int64_t kForwardRowsPerBlock = 4;
// Backward blocks: enough to fill a GPU (two per SM of an H100), few enough that the [G, C]
// dweight partials stay small, and at least kBackwardMinRows rows each so a block's weight read and
// dweight partial write are spread over several rows.
constexpr int64_t kBackwardBlocks = 264;
constexpr int64_t kBackwardMinRows = 4;
// A backward block's dweight partial is static shared memory (32 KB of the 48 KB a kernel may
// declare): rows up to 8192 channels (LLaMA-2 70B's hidden size).
constexpr int kMaxBackwardChannels = 8192;

// ---------------------------------------------------------------------------------------------
// RMSNorm (Zhang & Sennrich 2019): y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). One block
// row at a time, kForwardRowsPerBlock rows per block, V elements per access (device_utils.cuh);
// each row's mean square is accumulated in double
// like the CPU reference. With kAdd, x = a + b is formed on the way (rounded to T and stored to
// `sum`, exactly what add then rmsnorm_forward compute): per row, reads a, b, writes sum, then
// reads sum back (its own writes, from L1/L2) and writes out: 4 row transfers plus the sum's
// re-read, against 5 transfers and two launches for add + rmsnorm_forward.

template <typename T, typename W, int V, bool kAdd>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, T* sum, const T* x, const T* delta, const W* weight,
                                       int64_t N, int64_t C, float eps) {
  __shared__ double scratch[32];
  const int64_t row_end = min(N, (int64_t(blockIdx.x) + 1) * kForwardRowsPerBlock);
  for (int64_t n = int64_t(blockIdx.x) * kForwardRowsPerBlock; n < row_end; ++n) {
    const int64_t base = n * C;
    double ms = 0.0;
    for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {
      float v[V];
      load_vec(v, x, base + c);
      if constexpr (kAdd) {
        float d[V];
        load_vec(d, delta, base + c);
#pragma unroll
        for (int k = 0; k < V; ++k) v[k] = to_float(from_float<T>(v[k] + d[k]));
        store_vec(sum, base + c, v);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) ms += double(v[k]) * double(v[k]);
    }
    ms = block_sum(ms, scratch);
    const float r = static_cast<float>(1.0 / sqrt(ms / double(C) + double(eps)));
    if (threadIdx.x == 0) rstd[n] = r;
    const T* normed = kAdd ? sum : x;  // the same thread wrote these elements above
    for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {
      float v[V], w[V];
      load_vec(v, normed, base + c);
      load_vec(w, weight, c);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = v[k] * r * w[k];
      store_vec(out, base + c, v);
    }
  }
}

// Backward, one pass over the rows: block b takes rows b, b + G, ... (G = gridDim.x, fixed by N,
// so the sums are reproducible). Per row, with g = dout * w:
//   dx += r g - r^3 / C * x * sum_c(g x)   (accumulates into the residual gradient)
// and dweight's share dout * x * r is added to the block's partial in shared memory, where
// thread t owns the same columns in every row (no atomics). The partials [G, C] are then summed
// in block order by launch_column_finish: two launches instead of dx, column partials and column
// finish. Per row: dout and x are read twice (the dot product, then the update; the second read
// hits L1/L2 for rows of a few thousand channels), dx read and written once.
template <typename T, typename W, int V>
__global__ void rmsnorm_backward_kernel(T* dx, float* dweight_partials, const T* dout, const T* x, const W* weight,
                                        const float* rstd, int64_t N, int64_t C) {
  __shared__ double scratch[32];
  __shared__ float dweight_sum[kMaxBackwardChannels];  // the first C are used
  for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V)
#pragma unroll
    for (int k = 0; k < V; ++k) dweight_sum[c + k] = 0.0f;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int64_t base = n * C;
    const double r = rstd[n];
    double dot = 0.0;
    for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {
      float g[V], w[V], xv[V];
      load_vec(g, dout, base + c);
      load_vec(w, weight, c);
      load_vec(xv, x, base + c);
#pragma unroll
      for (int k = 0; k < V; ++k) dot += double(g[k]) * double(w[k]) * double(xv[k]);
    }
    dot = block_sum(dot, scratch);
    const double coef = r * r * r * dot / double(C);
    const float rf = static_cast<float>(r);
    for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {
      float g[V], w[V], xv[V], d[V];
      load_vec(g, dout, base + c);
      load_vec(w, weight, c);
      load_vec(xv, x, base + c);
      load_vec(d, dx, base + c);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        d[k] += static_cast<float>(r * (double(g[k]) * double(w[k])) - coef * double(xv[k]));
        dweight_sum[c + k] += g[k] * xv[k] * rf;
      }
      store_vec(dx, base + c, d);
    }
  }
  for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V)
#pragma unroll
    for (int k = 0; k < V; ++k) dweight_partials[int64_t(blockIdx.x) * C + c + k] = dweight_sum[c + k];
}

int64_t backward_blocks(int64_t N) { return std::min((N + kBackwardMinRows - 1) / kBackwardMinRows, kBackwardBlocks); }

// out = rmsnorm(x), or with `delta`: sum = x + delta, out = rmsnorm(sum).
template <typename T, typename W>
void launch_rmsnorm_forward(T* out, float* rstd, T* sum, const T* x, const T* delta, const W* weight, int64_t N,
                            int64_t C, float eps, cudaStream_t stream) {
  const unsigned grid = row_grid((N + kForwardRowsPerBlock - 1) / kForwardRowsPerBlock, "rmsnorm_forward");
  const int V = vector_width<T>(C, {out, sum, x, delta, weight});
  auto launch = [&](auto rmsnorm_forward_kernel) {
    rmsnorm_forward_kernel<<<grid, kThreads, 0, stream>>>(out, rstd, sum, x, delta, weight, N, C, eps);
    GUM_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
  };
  constexpr int P = kPackWidth<T>;
  if (delta) {
    if (V == P)
      launch(rmsnorm_forward_kernel<T, W, P, true>);
    else
      launch(rmsnorm_forward_kernel<T, W, 1, true>);
  } else {
    if (V == P)
      launch(rmsnorm_forward_kernel<T, W, P, false>);
    else
      launch(rmsnorm_forward_kernel<T, W, 1, false>);
  }
}

template <typename T, typename W>
void launch_rmsnorm_backward(T* dx, float* dweight, float* partials, const T* dout, const T* x, const W* weight,
                             const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  const int64_t blocks = backward_blocks(N);
  const int V = vector_width<T>(C, {dx, dout, x, weight});
  auto launch = [&](auto rmsnorm_backward_kernel) {
    rmsnorm_backward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(dx, partials, dout, x, weight, rstd,
                                                                                    N, C);
    GUM_CUDA_CHECK_LAUNCH("rmsnorm_backward_kernel");
  };
  if (V == kPackWidth<T>)
    launch(rmsnorm_backward_kernel<T, W, kPackWidth<T>>);
  else
    launch(rmsnorm_backward_kernel<T, W, 1>);
  launch_column_finish(dweight, partials, blocks, C, stream);
}

// Calls f(T{}, W{}) with the activations' and the weight's storage types.
template <typename F>
void with_dtypes(const FloatPtr& activations, const FloatPtr& weight, F&& f) {
  with_dtype(activations, [&](auto t) { with_dtype(weight, [&](auto w) { f(t, w); }); });
}

void require_same_dtype(const Tensor& t, const Tensor& like, const char* op, const char* what) {
  if (t.dtype != like.dtype)
    runtime_error(op, ": ", what, " is ", dtype_name(t.dtype), " but x is ", dtype_name(like.dtype),
                  " (the activations of one call share a dtype)");
}

}  // namespace

void CudaBackend::rmsnorm(Tensor out, Tensor rstd, Tensor* sum, const Tensor& x, const Tensor* delta,
                          const Tensor& weight, float eps, const char* op) {
  const int64_t N = x.rows(), C = x.cols();
  require_numel(out, N * C, op, "out");
  require_same_dtype(out, x, op, "out");
  if (sum) {
    require_numel(*sum, N * C, op, "sum");
    require_numel(*delta, N * C, op, "b");
    require_same_dtype(*sum, x, op, "sum");
    require_same_dtype(*delta, x, op, "b");
  }
  require_f32(rstd, op, "rstd");
  require_numel(rstd, N, op, "rstd");
  require_numel(weight, C, op, "weight");
  const FloatPtr x_ptr = float_ptr(x, op, "x"), w_ptr = float_ptr(weight, op, "weight");
  void* out_data = float_ptr(out, op, "out").data;
  void* sum_data = sum ? float_ptr(*sum, op, "sum").data : nullptr;
  const void* delta_data = delta ? float_ptr(*delta, op, "b").data : nullptr;
  if (N <= 0) return;
  with_dtypes(x_ptr, w_ptr, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    launch_rmsnorm_forward(static_cast<T*>(out_data), rstd.f32(), static_cast<T*>(sum_data),
                           static_cast<const T*>(x_ptr.data), static_cast<const T*>(delta_data),
                           static_cast<const W*>(w_ptr.data), N, C, eps, stream_);
  });
}

void CudaBackend::rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& weight, float eps) {
  rmsnorm(out, rstd, nullptr, x, nullptr, weight, eps, "rmsnorm_forward");
}

void CudaBackend::add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, const Tensor& a, const Tensor& b,
                                      const Tensor& weight, float eps) {
  rmsnorm(out, rstd, &sum, a, &b, weight, eps, "add_rmsnorm_forward");
}

size_t CudaBackend::rmsnorm_backward_workspace(int64_t rows, int64_t channels) {
  return size_t(backward_blocks(rows) * channels) * sizeof(float);  // dweight partials
}

void CudaBackend::rmsnorm_backward(Tensor dx, Tensor dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                                   const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  const int64_t N = x.rows(), C = x.cols();
  require_numel(dx, N * C, op, "dx");
  require_numel(dout, N * C, op, "dout");
  require_same_dtype(dx, x, op, "dx");
  require_same_dtype(dout, x, op, "dout");
  require_f32(dweight, op, "dweight");
  require_numel(dweight, C, op, "dweight");
  require_numel(weight, C, op, "weight");
  require_f32(rstd, op, "rstd");
  require_numel(rstd, N, op, "rstd");
  if (C > kMaxBackwardChannels)
    runtime_error(op, ": ", C, " channels exceed the ", kMaxBackwardChannels,
                  " whose dweight partials fit a block's shared memory");
  const FloatPtr dx_ptr = float_ptr(dx, op, "dx"), dout_ptr = float_ptr(dout, op, "dout"),
                 x_ptr = float_ptr(x, op, "x"), w_ptr = float_ptr(weight, op, "weight");
  if (N <= 0) return;
  float* partials = static_cast<float*>(workspace(rmsnorm_backward_workspace(N, C)));
  with_dtypes(x_ptr, w_ptr, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    launch_rmsnorm_backward(static_cast<T*>(dx_ptr.data), dweight.f32(), partials, static_cast<const T*>(dout_ptr.data),
                            static_cast<const T*>(x_ptr.data), static_cast<const W*>(w_ptr.data), rstd.f32(), N, C,
                            stream_);
  });
}

}  // namespace gum::cuda
