// RMSNorm forward and backward. Activations are [N, C] row-major, one block per row; arithmetic
// is fp32, inputs and outputs F32 or BF16 through FloatPtr.
#include "cuda_backend.h"
#include "device_utils.cuh"
#include "reduce.h"

namespace gum::cuda {

namespace {

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

void launch_rmsnorm_forward(FloatPtr out, float* rstd, FloatPtr x, FloatPtr weight, int64_t N, int64_t C, float eps,
                            cudaStream_t stream) {
  if (N <= 0) return;
  rmsnorm_forward_kernel<<<row_grid(N, "rmsnorm_forward"), kThreads, 0, stream>>>(out, rstd, x, weight, C, eps);
  GUM_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

// dx += ... only (dweight goes through launch_column_reduce with b = x and row_scale = rstd).
void launch_rmsnorm_backward_dx(FloatPtr dx, FloatPtr dout, FloatPtr x, FloatPtr weight, const float* rstd, int64_t N,
                                int64_t C, cudaStream_t stream) {
  if (N <= 0) return;
  rmsnorm_backward_dx_kernel<<<row_grid(N, "rmsnorm_backward"), kThreads, 0, stream>>>(dx, dout, x, weight, rstd, C);
  GUM_CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
}

}  // namespace

void CudaBackend::rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& weight, float eps) {
  const char* op = "rmsnorm_forward";
  const int64_t N = x.rows(), C = x.cols();
  require_numel(out, N * C, op, "out");
  require_f32(rstd, op, "rstd");
  require_numel(rstd, N, op, "rstd");
  require_numel(weight, C, op, "weight");
  launch_rmsnorm_forward(float_ptr(out, op, "out"), rstd.f32(), float_ptr(x, op, "x"), float_ptr(weight, op, "weight"),
                         N, C, eps, stream_);
}

void CudaBackend::rmsnorm_backward(Tensor dx, Tensor dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                                   const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  const int64_t N = x.rows(), C = x.cols();
  require_numel(dx, N * C, op, "dx");
  require_numel(dout, N * C, op, "dout");
  require_f32(dweight, op, "dweight");
  require_numel(dweight, C, op, "dweight");
  require_numel(weight, C, op, "weight");
  require_f32(rstd, op, "rstd");
  require_numel(rstd, N, op, "rstd");
  const FloatPtr dout_ptr = float_ptr(dout, op, "dout"), x_ptr = float_ptr(x, op, "x");
  launch_rmsnorm_backward_dx(float_ptr(dx, op, "dx"), dout_ptr, x_ptr, float_ptr(weight, op, "weight"), rstd.f32(), N,
                             C, stream_);
  // dweight[c] += sum_n dout[n,c] * x[n,c] * rstd[n]
  float* partials = static_cast<float*>(workspace(column_reduce_partials_size(N, C) * sizeof(float)));
  launch_column_reduce(dweight.f32(), dout_ptr, x_ptr, rstd.f32(), N, C, partials, stream_);
}

}  // namespace gum::cuda
