// SwiGLU, forward and backward: out = silu(gate) * up over gate_up [N, 2F].
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// SwiGLU (Shazeer 2020): gate_up [N, 2F] = (gate | up), out = silu(gate) * up; backward uses
// d silu(g)/dg = sig * (1 + g * (1 - sig)) and overwrites. One pass each: a thread takes V
// consecutive columns f of a row (storage type T, V elements per access), so forward reads
// gate and up once and writes out once (3 F values per row), backward reads gate, up and dout
// and writes dgate and dup (5 F values per row): what the op's inputs and outputs require.

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T, int V>
__global__ void swiglu_forward_kernel(T* out, const T* gate_up, int64_t N, int64_t F) {
  GUM_GRID_STRIDE_LOOP(pack, N * F / V) {
    const int64_t i = pack * V, n = i / F, f = i % F;
    float g[V], u[V];
    load_vec(g, gate_up, n * 2 * F + f);
    load_vec(u, gate_up, n * 2 * F + F + f);
#pragma unroll
    for (int k = 0; k < V; ++k) g[k] = g[k] * sigmoid(g[k]) * u[k];
    store_vec(out, i, g);
  }
}

template <typename T, int V>
__global__ void swiglu_backward_kernel(T* dgate_up, const T* dout, const T* gate_up, int64_t N, int64_t F) {
  GUM_GRID_STRIDE_LOOP(pack, N * F / V) {
    const int64_t i = pack * V, n = i / F, f = i % F;
    float g[V], u[V], go[V], dg[V], du[V];
    load_vec(g, gate_up, n * 2 * F + f);
    load_vec(u, gate_up, n * 2 * F + F + f);
    load_vec(go, dout, i);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float sig = sigmoid(g[k]);
      dg[k] = go[k] * u[k] * sig * (1.0f + g[k] * (1.0f - sig));
      du[k] = go[k] * g[k] * sig;
    }
    store_vec(dgate_up, n * 2 * F + f, dg);
    store_vec(dgate_up, n * 2 * F + F + f, du);
  }
}

}  // namespace

void CudaBackend::swiglu_forward(Tensor out, const Tensor& gate_up) {
  const char* op = "swiglu_forward";
  if (gate_up.cols() % 2 != 0) runtime_error(op, ": gate_up ", gate_up.shape.str(), " has an odd width");
  const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
  require_numel(out, N * F, op, "out");
  if (out.dtype != gate_up.dtype) runtime_error(op, ": out and gate_up must share a dtype");
  const FloatPtr o = float_ptr(out, op, "out"), in = float_ptr(gate_up, op, "gate_up");
  if (N * F <= 0) return;
  with_dtype(in, [&](auto t) {
    using T = decltype(t);
    const int V = vector_width<T>(F, {o.data, in.data});
    auto launch = [&](auto swiglu_forward_kernel) {
      swiglu_forward_kernel<<<grid_for(N * F / V), kThreads, 0, stream_>>>(static_cast<T*>(o.data),
                                                                           static_cast<const T*>(in.data), N, F);
      GUM_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
    };
    if (V == kPackWidth<T>)
      launch(swiglu_forward_kernel<T, kPackWidth<T>>);
    else
      launch(swiglu_forward_kernel<T, 1>);
  });
}

void CudaBackend::swiglu_backward(Tensor dgate_up, const Tensor& dout, const Tensor& gate_up) {
  const char* op = "swiglu_backward";
  if (gate_up.cols() % 2 != 0) runtime_error(op, ": gate_up ", gate_up.shape.str(), " has an odd width");
  const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
  require_numel(dgate_up, N * 2 * F, op, "dgate_up");
  require_numel(dout, N * F, op, "dout");
  if (dgate_up.dtype != gate_up.dtype || dout.dtype != gate_up.dtype)
    runtime_error(op, ": dgate_up, dout and gate_up must share a dtype");
  const FloatPtr d = float_ptr(dgate_up, op, "dgate_up"), go = float_ptr(dout, op, "dout"),
                 in = float_ptr(gate_up, op, "gate_up");
  if (N * F <= 0) return;
  with_dtype(in, [&](auto t) {
    using T = decltype(t);
    const int V = vector_width<T>(F, {d.data, go.data, in.data});
    auto launch = [&](auto swiglu_backward_kernel) {
      swiglu_backward_kernel<<<grid_for(N * F / V), kThreads, 0, stream_>>>(
          static_cast<T*>(d.data), static_cast<const T*>(go.data), static_cast<const T*>(in.data), N, F);
      GUM_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
    };
    if (V == kPackWidth<T>)
      launch(swiglu_backward_kernel<T, kPackWidth<T>>);
    else
      launch(swiglu_backward_kernel<T, 1>);
  });
}

}  // namespace gum::cuda
