// Linear layers: out = x W^T (+ bias) by cuBLAS (gemm.cpp), then a broadcast kernel for the
// bias; backward: two GEMMs and the column sums of reduce.h for dbias.
#include "cuda_backend.h"
#include "device_utils.cuh"
#include "reduce.h"

namespace gum::cuda {

namespace {

__global__ void add_bias_rows_kernel(FloatPtr out, FloatPtr bias, int64_t rows, int64_t cols) {
  GUM_GRID_STRIDE_LOOP(i, rows * cols) store(out, i, load(out, i) + load(bias, i % cols));
}

// out[r, c] += bias[c] for a [rows, cols] matrix.
void launch_add_bias_rows(FloatPtr out, FloatPtr bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  add_bias_rows_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(out, bias, rows, cols);
  GUM_CUDA_CHECK_LAUNCH("add_bias_rows_kernel");
}

}  // namespace

void CudaBackend::linear_forward(Tensor out, const Tensor& x, const Tensor& weight, const Tensor* bias) {
  const char* op = "linear_forward";
  require_device(x, op, "x");
  require_device(weight, op, "weight");
  require_device(out, op, "out");
  const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
  if (weight.cols() != I) runtime_error(op, ": weight ", weight.shape.str(), " does not take inputs of width ", I);
  require_numel(out, N * O, op, "out");
  gemm_rowmajor(false, true, N, O, I, 1.0f, x.data, x.dtype, I, weight.data, weight.dtype, I, 0.0f, out.data, out.dtype,
                O, op);
  if (bias) {
    require_numel(*bias, O, op, "bias");
    launch_add_bias_rows(float_ptr(out, op, "out"), float_ptr(*bias, op, "bias"), N, O, stream_);
  }
}

void CudaBackend::linear_backward(Tensor dx, Tensor dweight, Tensor* dbias, const Tensor& dout, const Tensor& x,
                                  const Tensor& weight, bool accumulate_dx) {
  const char* op = "linear_backward";
  require_device(dx, op, "dx");
  require_device(dweight, op, "dweight");
  require_device(dout, op, "dout");
  require_device(x, op, "x");
  require_device(weight, op, "weight");
  const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
  if (weight.cols() != I) runtime_error(op, ": weight ", weight.shape.str(), " does not take inputs of width ", I);
  require_numel(dx, N * I, op, "dx");
  require_numel(dout, N * O, op, "dout");
  require_numel(dweight, O * I, op, "dweight");
  // dx = dout W (+ dx); dW += dout^T x.
  gemm_rowmajor(false, false, N, I, O, 1.0f, dout.data, dout.dtype, O, weight.data, weight.dtype, I,
                accumulate_dx ? 1.0f : 0.0f, dx.data, dx.dtype, I, op);
  gemm_rowmajor(true, false, O, I, N, 1.0f, dout.data, dout.dtype, O, x.data, x.dtype, I, 1.0f, dweight.data,
                dweight.dtype, I, op);
  if (dbias) {
    require_f32(*dbias, op, "dbias");
    require_numel(*dbias, O, op, "dbias");
    float* partials = static_cast<float*>(workspace(column_reduce_partials_size(N, O) * sizeof(float)));
    launch_column_reduce(dbias->f32(), float_ptr(dout, op, "dout"), N, O, partials, stream_);
  }
}

}  // namespace gum::cuda
