// CudaBackend: device setup, memory, elementwise/transformer/optimizer ops (argument checks,
// then a kernel launcher from kernels.h), and the two factory functions backend.cpp calls.
// GEMM, SVD, QR and attention live in cuda_linalg.cpp.
#include "cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "gum/core/error.h"
#include "library_check.h"
#include "../op_checks.h"

namespace gum {

// Declared in src/backend/backend.cpp under GUM_HAVE_CUDA. Called only at run time (never during
// static initialisation), and any CUDA error, e.g. no driver, means "no GPU".
int cuda_runtime_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // reset the runtime's last-error state so later calls start clean
    return 0;
  }
  return count;
}

std::unique_ptr<Backend> make_cuda_backend(int device_index) {
  return std::make_unique<cuda::CudaBackend>(device_index);
}

namespace cuda {

// ---------------------------------------------------------------------------------------------
// Argument checks.

void require_device(const Tensor& t, const char* op, const char* what) {
  op_checks::require_device(t, Device::CUDA, op, what);
}

void require_f32(const Tensor& t, const char* op, const char* what) {
  op_checks::require_dtype(t, DType::F32, Device::CUDA, op, what);
}

void require_i32(const Tensor& t, const char* op, const char* what) {
  op_checks::require_dtype(t, DType::I32, Device::CUDA, op, what);
}

void require_numel(const Tensor& t, int64_t expected, const char* op, const char* what) {
  op_checks::require_numel(t, expected, op, what);
}

FloatPtr float_ptr(const Tensor& t, const char* op, const char* what) {
  require_device(t, op, what);
  if (t.dtype != DType::F32 && t.dtype != DType::BF16)
    runtime_error(op, ": ", what, " must be F32 or BF16, got ", dtype_name(t.dtype));
  return FloatPtr{t.data, t.dtype == DType::BF16};
}

namespace {

const int32_t* i32_ptr(const Tensor& t, const char* op, const char* what) {
  require_i32(t, op, what);
  return t.ptr<int32_t>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Lifetime.

CudaBackend::CudaBackend(int device_index) : device_index_(device_index) {
  const int count = cuda_runtime_device_count();
  if (device_index < 0 || device_index >= count)
    usage_error("cuda backend: device ", device_index, " does not exist (", count, " usable GPUs)");
  if (const char* mode = std::getenv("GUM_CUDA_ATTENTION")) {
    const std::string value = mode;
    if (value == "flash")
      flash_attention_ = true;
    else if (value != "gemm" && !value.empty())
      usage_error("GUM_CUDA_ATTENTION='", value, "' is not an attention implementation (valid: gemm, flash)");
  }
  GUM_CUDA_CHECK(cudaSetDevice(device_index));
  GUM_CUDA_CHECK(cudaStreamCreate(&stream_));
  GUM_CUBLAS_CHECK(cublasCreate(&cublas_));
  GUM_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // Plain fp32 math for F32 GEMMs (no TF32): the CPU comparison tests hold to 1e-5.
  GUM_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  GUM_CUSOLVER_CHECK(cusolverDnCreate(&cusolver_));
  GUM_CUSOLVER_CHECK(cusolverDnSetStream(cusolver_, stream_));
  status_ = static_cast<int*>(device_malloc(sizeof(int), "status word"));
  GUM_CUDA_CHECK(cudaMemsetAsync(status_, 0, sizeof(int), stream_));
  reduce_buffer_ = static_cast<double*>(device_malloc((kReducePartials + 1) * sizeof(double), "reduction buffer"));
}

CudaBackend::~CudaBackend() {
  // Best effort, never throws: the process may be unwinding from a CUDA error already.
  cudaSetDevice(device_index_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [ptr, bytes] : allocations_) cudaFree(ptr);
  if (cusolver_) cusolverDnDestroy(cusolver_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

// ---------------------------------------------------------------------------------------------
// Memory.

void* CudaBackend::device_malloc(size_t bytes, const char* what) {
  void* ptr = nullptr;
  const size_t rounded = std::max<size_t>(256, (bytes + 255) / 256 * 256);
  const cudaError_t status = cudaMalloc(&ptr, rounded);
  if (status != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    runtime_error("cuda backend: cudaMalloc of ", bytes, " bytes for ", what, " failed (", cudaGetErrorString(status),
                  "); this backend holds ", current_bytes_, " bytes, the device has ", free_bytes, " of ", total_bytes,
                  " bytes free");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  allocations_[ptr] = rounded;
  current_bytes_ += rounded;
  peak_bytes_ = std::max(peak_bytes_, current_bytes_);
  return ptr;
}

void CudaBackend::device_free(void* ptr) {
  if (!ptr) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = allocations_.find(ptr);
    GUM_CHECK(it != allocations_.end(), "cuda backend: release of memory this backend did not allocate");
    current_bytes_ -= it->second;
    allocations_.erase(it);
  }
  GUM_CUDA_CHECK(cudaFree(ptr));  // waits for the work that may still use it
}

void* CudaBackend::allocate(size_t bytes) {
  void* ptr = device_malloc(bytes, "a tensor allocation");
  GUM_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_));
  return ptr;
}

void CudaBackend::release(void* ptr) { device_free(ptr); }

void* CudaBackend::workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  if (workspace_) {
    device_free(workspace_);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
  }
  workspace_ = device_malloc(bytes, "the op workspace");
  workspace_bytes_ = bytes;
  return workspace_;
}

size_t CudaBackend::peak_memory_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_bytes_;
}

void CudaBackend::copy_from_host(Tensor dst, const void* host_src) {
  require_device(dst, "copy_from_host", "dst");
  if (!dst.nbytes()) return;
  // From pageable memory the call returns once the source is staged, so the caller may reuse it.
  GUM_CUDA_CHECK(cudaMemcpyAsync(dst.data, host_src, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::copy_to_host(void* host_dst, const Tensor& src) {
  require_device(src, "copy_to_host", "src");
  if (src.nbytes()) GUM_CUDA_CHECK(cudaMemcpyAsync(host_dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  synchronize();
}

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
  launch_fill(float_ptr(dst, "fill", "dst"), dst.numel(), value, stream_);
}

void CudaBackend::synchronize() {
  GUM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_status();
}

void CudaBackend::check_device_status() {
  int status = 0;
  GUM_CUDA_CHECK(cudaMemcpy(&status, status_, sizeof(int), cudaMemcpyDeviceToHost));
  if (status == 0) return;
  GUM_CUDA_CHECK(cudaMemset(status_, 0, sizeof(int)));
  std::string what;
  if (status & kStatusTokenOutOfRange) what += " a token id outside [0, vocab) in embedding_forward/backward;";
  if (status & kStatusTargetOutOfRange) what += " a target id >= vocab in cross_entropy_forward/backward;";
  if (status & kStatusPositionOutOfRange) what += " a position outside the RoPE table in rope_forward/backward;";
  if (status & kStatusDocStartOutOfRange) what += " a doc_start outside [0, t] in attention_forward;";
  runtime_error("cuda backend: a kernel found invalid ids since the last synchronisation:", what,
                " the affected outputs are NaN");
}

// ---------------------------------------------------------------------------------------------
// Elementwise and reductions.

void CudaBackend::fill_normal(Tensor dst, uint64_t seed, uint64_t stream, float mean, float std) {
  launch_fill_normal(float_ptr(dst, "fill_normal", "dst"), dst.numel(), seed, stream, mean, std, stream_);
}

void CudaBackend::add(Tensor out, const Tensor& a, const Tensor& b) {
  require_numel(a, out.numel(), "add", "a");
  require_numel(b, out.numel(), "add", "b");
  launch_add(float_ptr(out, "add", "out"), float_ptr(a, "add", "a"), float_ptr(b, "add", "b"), out.numel(), stream_);
}

void CudaBackend::axpby(Tensor y, float a, const Tensor& x, float b) {
  require_numel(x, y.numel(), "axpby", "x");
  launch_axpby(float_ptr(y, "axpby", "y"), a, float_ptr(x, "axpby", "x"), b, y.numel(), stream_);
}

void CudaBackend::scale(Tensor x, float s) { launch_scale(float_ptr(x, "scale", "x"), s, x.numel(), stream_); }

double CudaBackend::reduce(const Tensor& x, bool squares, const char* op) {
  launch_sum(reduce_buffer_ + kReducePartials, reduce_buffer_, float_ptr(x, op, "x"), x.numel(), squares, stream_);
  double result = 0.0;
  GUM_CUDA_CHECK(
      cudaMemcpyAsync(&result, reduce_buffer_ + kReducePartials, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  synchronize();
  return result;
}

double CudaBackend::sum(const Tensor& x) { return reduce(x, false, "sum"); }
double CudaBackend::sum_squares(const Tensor& x) { return reduce(x, true, "sum_squares"); }

// ---------------------------------------------------------------------------------------------
// Transformer ops.

void CudaBackend::embedding_forward(Tensor out, const Tensor& tokens, const Tensor& table) {
  const char* op = "embedding_forward";
  const int64_t N = tokens.numel(), C = table.cols();
  require_numel(out, N * C, op, "out");
  launch_embedding_forward(float_ptr(out, op, "out"), i32_ptr(tokens, op, "tokens"), float_ptr(table, op, "table"), N,
                           C, table.rows(), status_, stream_);
}

void CudaBackend::embedding_backward(Tensor dtable, const Tensor& dout, const Tensor& tokens) {
  const char* op = "embedding_backward";
  const int64_t N = tokens.numel(), C = dtable.cols();
  require_numel(dout, N * C, op, "dout");
  launch_embedding_backward(float_ptr(dtable, op, "dtable"), float_ptr(dout, op, "dout"), i32_ptr(tokens, op, "tokens"),
                            N, C, dtable.rows(), status_, stream_);
}

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

void CudaBackend::rope(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s,
                       bool inverse, const char* op) {
  const int64_t N = positions.numel();
  require_numel(qkv, N * s.qkv_width(), op, "qkv");
  if (s.head_dim <= 0 || s.head_dim % 2 != 0) runtime_error(op, ": head_dim ", s.head_dim, " must be even");
  require_f32(cos_sin, op, "cos_sin");
  const int64_t max_positions = cos_sin.numel() / s.head_dim;  // [P, D/2, 2]
  require_numel(cos_sin, max_positions * s.head_dim, op, "cos_sin");
  launch_rope(float_ptr(qkv, op, "qkv"), i32_ptr(positions, op, "positions"), cos_sin.f32(), max_positions, N, s.n_head,
              s.n_kv_head, s.head_dim, inverse, status_, stream_);
}

void CudaBackend::rope_forward(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) {
  rope(qkv, positions, cos_sin, s, false, "rope_forward");
}

void CudaBackend::rope_backward(Tensor dqkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) {
  rope(dqkv, positions, cos_sin, s, true, "rope_backward");
}

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

void CudaBackend::cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(losses, N, op, "losses");
  require_numel(targets, N, op, "targets");
  launch_cross_entropy_forward(float_ptr(losses, op, "losses"), float_ptr(logits, op, "logits"),
                               i32_ptr(targets, op, "targets"), N, V, status_, stream_);
}

void CudaBackend::cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) {
  const char* op = "cross_entropy_backward";
  const int64_t N = logits.rows(), V = logits.cols();
  require_numel(dlogits, N * V, op, "dlogits");
  require_numel(targets, N, op, "targets");
  launch_cross_entropy_backward(float_ptr(dlogits, op, "dlogits"), float_ptr(logits, op, "logits"),
                                i32_ptr(targets, op, "targets"), N, V, scale, status_, stream_);
}

// ---------------------------------------------------------------------------------------------
// Optimizer ops.

void CudaBackend::adam(Tensor out, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args, bool write_direction,
                       const char* op) {
  const int64_t n = out.numel();
  require_numel(grad, n, op, "grad");
  require_f32(m, op, "m");
  require_f32(v, op, "v");
  require_numel(m, n, op, "m");
  require_numel(v, n, op, "v");
  if (args.step < 1) runtime_error(op, ": step must be >= 1 (1-based, for bias correction), got ", args.step);
  AdamParams p{};
  p.beta1 = args.beta1;
  p.beta2 = args.beta2;
  p.eps = args.eps;
  p.bias1 = 1.0 - std::pow(double(args.beta1), double(args.step));
  p.bias2 = 1.0 - std::pow(double(args.beta2), double(args.step));
  p.lr = args.lr;
  p.weight_decay = args.weight_decay;
  p.update_scale = args.update_scale;
  launch_adam(float_ptr(out, op, write_direction ? "direction" : "param"), float_ptr(grad, op, "grad"), m.f32(),
              v.f32(), n, p, write_direction, stream_);
}

void CudaBackend::adamw_update(Tensor param, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) {
  adam(param, grad, m, v, args, false, "adamw_update");
}

void CudaBackend::adam_direction(Tensor direction, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) {
  adam(direction, grad, m, v, args, true, "adam_direction");
}

}  // namespace cuda
}  // namespace gum
