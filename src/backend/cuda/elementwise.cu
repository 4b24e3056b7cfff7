// Elementwise ops: fill, dtype conversion, add, axpby, scale, Philox normal fill. Flat tensors
// walked by grid-stride loops; each element is owned by one thread, so nothing here depends on
// scheduling.
#include "../op_checks.h"
#include "cuda_backend.h"
#include "device_utils.cuh"
#include "gum/core/philox.h"

namespace gum::cuda {

namespace {

__global__ void fill_kernel(FloatPtr dst, int64_t n, float value) { GUM_GRID_STRIDE_LOOP(i, n) store(dst, i, value); }

__global__ void fill_f64_kernel(double* dst, int64_t n, double value) { GUM_GRID_STRIDE_LOOP(i, n) dst[i] = value; }

__global__ void convert_kernel(FloatPtr dst, FloatPtr src, int64_t n) {
  GUM_GRID_STRIDE_LOOP(i, n) store(dst, i, load(src, i));
}

// out (storage type T, like a) may alias a or b: each element is read before it is written by
// the same thread. b's storage type U may differ (bf16_weights adds a bf16 compensation to fp32
// weights). Packs of V elements, then the n % V elements of the tail one per thread.
template <typename T, typename U, int V>
__global__ void add_kernel(T* out, const T* a, const U* b, int64_t n) {
  GUM_GRID_STRIDE_LOOP(pack, n / V) {
    float x[V], y[V];
    load_vec(x, a, pack * V);
    load_vec(y, b, pack * V);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] += y[k];
    store_vec(out, pack * V, x);
  }
  const int64_t tail = n / V * V + int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < n) out[tail] = from_float<T>(to_float(a[tail]) + to_float(b[tail]));
}

__global__ void axpby_kernel(FloatPtr y, float a, FloatPtr x, float b, int64_t n) {
  GUM_GRID_STRIDE_LOOP(i, n) store(y, i, a * load(x, i) + b * load(y, i));
}

// The factor is `s`, or *device_s when given (scale_by: computed on the device, never on the host).
__global__ void scale_kernel(FloatPtr x, float s, const float* device_s, int64_t n) {
  const float factor = device_s ? *device_s : s;
  GUM_GRID_STRIDE_LOOP(i, n) store(x, i, load(x, i) * factor);
}

// Element i takes Philox stream element i (include/gum/core/philox.h), as on the CPU.
// __fmul_rn/__fadd_rn keep nvcc from fusing mean + std * z into an FMA the CPU does not do.
__global__ void fill_normal_kernel(FloatPtr dst, int64_t n, uint64_t seed, uint64_t philox_stream, float mean,
                                   float std) {
  GUM_GRID_STRIDE_LOOP(i, n) {
    const float z = philox_normal(seed, philox_stream, static_cast<uint64_t>(i));
    store(dst, i, __fadd_rn(mean, __fmul_rn(std, z)));
  }
}

__global__ void round_stochastic_kernel(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                                        uint64_t philox_stream) {
  GUM_GRID_STRIDE_LOOP(i, n) {
    dst[i] = f32_to_bf16_stochastic(src[i], philox_bits(seed, philox_stream, static_cast<uint64_t>(i)));
  }
}

void launch_fill(FloatPtr dst, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, value);
  GUM_CUDA_CHECK_LAUNCH("fill_kernel");
}

// dst = src converting F32 <-> BF16 (same dtypes are a cudaMemcpy, not this kernel).
void launch_convert(FloatPtr dst, FloatPtr src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  GUM_CUDA_CHECK_LAUNCH("convert_kernel");
}

void launch_add(FloatPtr out, FloatPtr a, FloatPtr b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  with_dtype(a, [&](auto t) {
    with_dtype(b, [&](auto u) {
      using T = decltype(t);
      using U = decltype(u);
      constexpr int P = kPackWidth<T>;
      // grid_for gives at least one block of kThreads > V threads, enough for the tail.
      auto launch = [&](auto add_kernel, int V) {
        add_kernel<<<grid_for(n / V), kThreads, 0, stream>>>(static_cast<T*>(out.data), static_cast<const T*>(a.data),
                                                             static_cast<const U*>(b.data), n);
        GUM_CUDA_CHECK_LAUNCH("add_kernel");
      };
      if (aligned16({out.data, a.data, b.data}))
        launch(add_kernel<T, U, P>, P);
      else
        launch(add_kernel<T, U, 1>, 1);
    });
  });
}

void launch_axpby(FloatPtr y, float a, FloatPtr x, float b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  axpby_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, a, x, b, n);
  GUM_CUDA_CHECK_LAUNCH("axpby_kernel");
}

void launch_scale(FloatPtr x, float s, const float* device_s, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, s, device_s, n);
  GUM_CUDA_CHECK_LAUNCH("scale_kernel");
}

void launch_fill_normal(FloatPtr dst, int64_t n, uint64_t seed, uint64_t philox_stream, float mean, float std,
                        cudaStream_t stream) {
  if (n <= 0) return;
  fill_normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, seed, philox_stream, mean, std);
  GUM_CUDA_CHECK_LAUNCH("fill_normal_kernel");
}

void launch_round_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed, uint64_t philox_stream,
                             cudaStream_t stream) {
  if (n <= 0) return;
  round_stochastic_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n, seed, philox_stream);
  GUM_CUDA_CHECK_LAUNCH("round_stochastic_kernel");
}

}  // namespace

void CudaBackend::copy(Tensor dst, const Tensor& src) {
  require_device(dst, "copy", "dst");
  require_device(src, "copy", "src");
  require_numel(dst, src.numel(), "copy", "dst");
  if (dst.dtype == src.dtype) {
    if (dst.data != src.data && src.nbytes())
      GUM_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  launch_convert(float_ptr(dst, "copy", "dst"), float_ptr(src, "copy", "src"), src.numel(), stream_);
}

void CudaBackend::fill(Tensor dst, float value) {
  if (dst.dtype != DType::F64 || dst.numel() == 0) {
    launch_fill(float_ptr(dst, "fill", "dst"), dst.numel(), value, stream_);
    return;
  }
  require_device(dst, "fill", "dst");
  fill_f64_kernel<<<grid_for(dst.numel()), kThreads, 0, stream_>>>(dst.ptr<double>(), dst.numel(), value);
  GUM_CUDA_CHECK_LAUNCH("fill_f64_kernel");
}

void CudaBackend::fill_normal(Tensor dst, uint64_t seed, uint64_t stream, float mean, float std) {
  launch_fill_normal(float_ptr(dst, "fill_normal", "dst"), dst.numel(), seed, stream, mean, std, stream_);
}

void CudaBackend::round_stochastic(Tensor dst, const Tensor& src, uint64_t seed, uint64_t stream) {
  op_checks::require_dtype(dst, DType::BF16, Device::CUDA, "round_stochastic", "dst");
  require_f32(src, "round_stochastic", "src");
  require_numel(src, dst.numel(), "round_stochastic", "src");
  launch_round_stochastic(dst.ptr<uint16_t>(), src.ptr<float>(), dst.numel(), seed, stream, stream_);
}

void CudaBackend::add(Tensor out, const Tensor& a, const Tensor& b) {
  require_numel(a, out.numel(), "add", "a");
  require_numel(b, out.numel(), "add", "b");
  if (out.dtype != a.dtype) runtime_error("add: out and a must share a dtype");
  launch_add(float_ptr(out, "add", "out"), float_ptr(a, "add", "a"), float_ptr(b, "add", "b"), out.numel(), stream_);
}

void CudaBackend::axpby(Tensor y, float a, const Tensor& x, float b) {
  require_numel(x, y.numel(), "axpby", "x");
  launch_axpby(float_ptr(y, "axpby", "y"), a, float_ptr(x, "axpby", "x"), b, y.numel(), stream_);
}

void CudaBackend::scale(Tensor x, float s) { launch_scale(float_ptr(x, "scale", "x"), s, nullptr, x.numel(), stream_); }

void CudaBackend::scale_by(Tensor x, const Tensor& scale) {
  require_f32(scale, "scale_by", "scale");
  require_numel(scale, 1, "scale_by", "scale");
  launch_scale(float_ptr(x, "scale_by", "x"), 0.0f, scale.ptr<float>(), x.numel(), stream_);
}

}  // namespace gum::cuda
