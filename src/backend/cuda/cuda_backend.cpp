// CudaBackend: device setup, memory, host copies, the device status word, the argument checks
// of op_args.h, and the factory functions backend.cpp calls. The ops live one family per file,
// kernels, launchers and CudaBackend methods together (elementwise.cu, rmsnorm.cu, attention.cu,
// gemm.cpp, ...).
#include "cuda_backend.h"

#include <algorithm>
#include <string>

#include "../op_checks.h"
#include "gum/core/error.h"
#include "library_check.h"
#include "reduce.h"

namespace gum {

namespace {
std::string version_text(int version) {  // 12040 -> "12.4"
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}
}  // namespace

// Declared in src/backend/backend.cpp under GUM_HAVE_CUDA. Called only at run time (never during
// static initialisation), and any CUDA error, e.g. no driver, means "no GPU"; *reason says why.
int cuda_runtime_device_count(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess) return count;
  cudaGetLastError();  // reset the runtime's last-error state so later calls start clean
  if (reason) {
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    if (status == cudaErrorInsufficientDriver)
      *reason = "the NVIDIA driver supports CUDA " + version_text(driver) + " but this gum_train was built with CUDA " +
                version_text(runtime) + ": update the driver, or build with a toolkit no newer than " +
                version_text(driver);
    else
      *reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(status);
  }
  return 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device_index, const BackendOptions& options) {
  cuda::AttentionKernel attention = cuda::AttentionKernel::Gemm;
  if (options.attention == "flash")
    attention = cuda::AttentionKernel::Flash;
  else if (options.attention == "flash_wmma")
    attention = cuda::AttentionKernel::FlashWmma;
  else if (options.attention != "gemm")
    usage_error("cuda backend: attention '", options.attention,
                "' is not an attention kernel (valid: gemm, flash, flash_wmma)");
  return std::make_unique<cuda::CudaBackend>(device_index, attention, options.allow_tf32);
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

const int32_t* i32_ptr(const Tensor& t, const char* op, const char* what) {
  require_i32(t, op, what);
  return t.ptr<int32_t>();
}

// ---------------------------------------------------------------------------------------------
// Lifetime.

CudaBackend::CudaBackend(int device_index, AttentionKernel attention, bool allow_tf32)
    : device_index_(device_index),
      attention_(attention),
      f32_compute_(allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) {
  const int count = cuda_runtime_device_count(nullptr);
  if (device_index < 0 || device_index >= count)
    usage_error("cuda backend: device ", device_index, " does not exist (", count, " usable GPUs)");
  GUM_CUDA_CHECK(cudaSetDevice(device_index));
  GUM_CUDA_CHECK(cudaStreamCreate(&stream_));
  GUM_CUBLAS_CHECK(cublasCreate(&cublas_));
  GUM_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // TF32 or not is each GEMM's compute type (f32_compute_), not the handle's math mode.
  GUM_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  GUM_CUSOLVER_CHECK(cusolverDnCreate(&cusolver_));
  GUM_CUSOLVER_CHECK(cusolverDnSetStream(cusolver_, stream_));
  status_ = static_cast<int*>(device_malloc(sizeof(int), "status word"));
  GUM_CUDA_CHECK(cudaMemsetAsync(status_, 0, sizeof(int), stream_));
  GUM_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&status_host_), sizeof(int)));
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
  cudaFreeHost(status_host_);
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

void* CudaBackend::grown(void*& buffer, size_t& size, size_t bytes, const char* what) {
  if (bytes <= size) return buffer;
  if (buffer) {
    device_free(buffer);
    buffer = nullptr;
    size = 0;
  }
  buffer = device_malloc(bytes, what);
  size = bytes;
  ++buffer_moves_;
  return buffer;
}

void* CudaBackend::workspace(size_t bytes) { return grown(workspace_, workspace_bytes_, bytes, "the op workspace"); }

size_t CudaBackend::training_workspace_bytes(const TrainingShapes& shapes) const {
  size_t bytes =
      std::max(rmsnorm_backward_workspace(shapes.rows, shapes.channels), attention_workspace(shapes.attention));
  if (shapes.bias_width > 0)  // linear_backward's dbias
    bytes = std::max(bytes, size_t(column_reduce_partials_size(shapes.rows, shapes.bias_width)) * sizeof(float));
  return bytes;
}

void* CudaBackend::attention_staging(size_t bytes) {
  return grown(staging_, staging_bytes_, bytes, "fp32 copies of bf16 attention operands");
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
  wait_for_device(host_dst, src.data, src.nbytes());
}

void CudaBackend::synchronize() { wait_for_device(nullptr, nullptr, 0); }

namespace {
// An instantiated CUDA graph, launched on the backend's stream; valid while the backend's
// scratch buffers stay where they were when it was recorded.
class CudaGraph final : public RecordedWork {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream, const uint64_t& buffer_moves)
      : exec_(exec), stream_(stream), buffer_moves_(buffer_moves), recorded_at_(buffer_moves) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  bool valid() const override { return buffer_moves_ == recorded_at_; }
  void replay() override {
    GUM_CHECK(valid(), "cuda backend: replay of a CUDA graph whose scratch buffers were reallocated since");
    GUM_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  const uint64_t& buffer_moves_;  // the backend's counter (the backend outlives what it records)
  uint64_t recorded_at_;
};
}  // namespace

// Global capture mode: an allocation or a host wait inside `work` fails the capture (and throws
// here, naming the call) instead of being left out of the graph.
std::unique_ptr<RecordedWork> CudaBackend::record(const std::function<void()>& work) {
  GUM_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
  try {
    work();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    cudaStreamEndCapture(stream_, &broken);  // ends the capture; the error is the one thrown
    if (broken) cudaGraphDestroy(broken);
    throw;
  }
  cudaGraph_t graph = nullptr;
  GUM_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  GUM_CUDA_CHECK(instantiated);
  return std::make_unique<CudaGraph>(exec, stream_, buffer_moves_);
}

// The status word is queued first, into page-locked memory (no wait), then the caller's bytes:
// the host waits once, for both (a trainer's logged step costs one round trip).
void CudaBackend::wait_for_device(void* host_dst, const void* src, size_t bytes) {
  GUM_CUDA_CHECK(cudaMemcpyAsync(status_host_, status_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  if (bytes) GUM_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  GUM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_status();
}

void CudaBackend::check_device_status() {
  const int status = *status_host_;
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

}  // namespace cuda
}  // namespace gum
