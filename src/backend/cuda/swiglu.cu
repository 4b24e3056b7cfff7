// SwiGLU, forward and backward: out = silu(gate) * up over gate_up [N, 2F].
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

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

}  // namespace

void CudaBackend::swiglu_forward(Tensor out, const Tensor& gate_up) {
  const char* op = "swiglu_forward";
  if (gate_up.cols() % 2 != 0) runtime_error(op, ": gate_up ", gate_up.shape.str(), " has an odd width");
  const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
  require_numel(out, N * F, op, "out");
  launch_swiglu_forward(float_ptr(out, op, "out"), float_ptr(gate_up, op, "gate_up"), N, F, stream_);
}

void CudaBackend::swiglu_backward(Tensor dgate_up, const Tensor& dout, const Tensor& gate_up) {
  const char* op = "swiglu_backward";
  if (gate_up.cols() % 2 != 0) runtime_error(op, ": gate_up ", gate_up.shape.str(), " has an odd width");
  const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
  require_numel(dgate_up, N * 2 * F, op, "dgate_up");
  require_numel(dout, N * F, op, "dout");
  launch_swiglu_backward(float_ptr(dgate_up, op, "dgate_up"), float_ptr(dout, op, "dout"),
                         float_ptr(gate_up, op, "gate_up"), N, F, stream_);
}

}  // namespace gum::cuda
