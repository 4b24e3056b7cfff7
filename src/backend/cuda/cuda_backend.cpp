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
  return std::make_unique<cuda::CudaBackend>(device_index, attention, options.allow_tf32, options.side_stream);
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

CudaBackend::CudaBackend(int device_index, AttentionKernel attention, bool allow_tf32, bool side_stream)
    : device_index_(device_index),
      attention_(attention),
      f32_compute_(allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) {
  const int count = cuda_runtime_device_count(nullptr);
  if (device_index < 0 || device_index >= count)
    usage_error("cuda backend: device ", device_index, " does not exist (", count, " usable GPUs)");
  GUM_CUDA_CHECK(cudaSetDevice(device_index));
  GUM_CUDA_CHECK(cudaStreamCreate(&main_stream_));
  stream_ = main_stream_;
  if (side_stream) GUM_CUDA_CHECK(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
  create_library_handles(main_stream_, cublas_, cusolver_);
  // A handle's internal workspace must not serve two streams at once: the side stream has its own.
  if (side_stream_) create_library_handles(side_stream_, side_.cublas, side_.cusolver);
  status_ = static_cast<int*>(device_malloc(sizeof(int), "status word"));
  GUM_CUDA_CHECK(cudaMemsetAsync(status_, 0, sizeof(int), stream_));
  GUM_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&status_host_), sizeof(int)));
  reduce_buffer_ = static_cast<double*>(device_malloc((kReducePartials + 1) * sizeof(double), "reduction buffer"));
  if (side_stream_)
    side_.reduce_buffer =
        static_cast<double*>(device_malloc((kReducePartials + 1) * sizeof(double), "side reduction buffer"));
}

void CudaBackend::create_library_handles(cudaStream_t stream, cublasHandle_t& cublas, cusolverDnHandle_t& cusolver) {
  GUM_CUBLAS_CHECK(cublasCreate(&cublas));
  GUM_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  // TF32 or not is each GEMM's compute type (f32_compute_), not the handle's math mode.
  GUM_CUBLAS_CHECK(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));
  GUM_CUSOLVER_CHECK(cusolverDnCreate(&cusolver));
  GUM_CUSOLVER_CHECK(cusolverDnSetStream(cusolver, stream));
}

CudaBackend::~CudaBackend() {
  // Best effort, never throws: the process may be unwinding from a CUDA error already.
  cudaSetDevice(device_index_);
  if (main_stream_) cudaStreamSynchronize(main_stream_);
  if (side_stream_) cudaStreamSynchronize(side_stream_);
  for (auto& [ptr, bytes] : allocations_) cudaFree(ptr);
  for (cudaEvent_t event : events_) cudaEventDestroy(event);
  for (cusolverDnHandle_t handle : {cusolver_, side_.cusolver})
    if (handle) cusolverDnDestroy(handle);
  for (cublasHandle_t handle : {cublas_, side_.cublas})
    if (handle) cublasDestroy(handle);
  if (side_stream_) cudaStreamDestroy(side_stream_);
  if (main_stream_) cudaStreamDestroy(main_stream_);
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

void* CudaBackend::workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  if (workspace_) {
    device_free(workspace_);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
  }
  workspace_ = device_malloc(bytes, "the op workspace");
  workspace_bytes_ = bytes;
  ++buffer_moves_;
  return workspace_;
}

size_t CudaBackend::training_workspace_bytes(const TrainingShapes& shapes) const {
  size_t bytes = std::max(rmsnorm_backward_workspace(shapes.rows, shapes.channels),
                          attention_workspace(shapes.attention, shapes.activations == DType::BF16));
  if (shapes.rows > 0)  // the gradient norm's partials (sum_squares_checked)
    bytes = std::max(bytes, size_t(kCheckedPartials) * sizeof(double));
  if (shapes.bias_width > 0)  // linear_backward's dbias
    bytes = std::max(bytes, size_t(column_reduce_partials_size(shapes.rows, shapes.bias_width)) * sizeof(float));
  for (const FactorizationShape& f : shapes.factorizations)
    bytes = std::max(bytes, f.kind == FactorizationShape::Svd ? svd_workspace(f.rows, f.cols).layout.total()
                                                              : qr_workspace(f.rows, f.cols).layout.total());
  return bytes;
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
// the host waits once, for both (a trainer's logged step costs one round trip). The status word
// belongs to the main stream, whose kernels set it: side work's reads leave it alone.
void CudaBackend::wait_for_device(void* host_dst, const void* src, size_t bytes) {
  if (!in_side_work_)
    GUM_CUDA_CHECK(cudaMemcpyAsync(status_host_, status_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  if (bytes) GUM_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  GUM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (!in_side_work_) check_device_status();
}

// ---------------------------------------------------------------------------------------------
// Side work: the side stream waits for an event recorded on the main stream, runs with its own
// scratch, and records an event the main stream waits for when wait_side_work is called.

void CudaBackend::swap_scratch() {
  std::swap(workspace_, side_.workspace);
  std::swap(workspace_bytes_, side_.workspace_bytes);
  std::swap(reduce_buffer_, side_.reduce_buffer);
  std::swap(cublas_, side_.cublas);
  std::swap(cusolver_, side_.cusolver);
}

uint64_t CudaBackend::take_event() {
  if (free_events_.empty()) {
    cudaEvent_t event = nullptr;
    GUM_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    events_.push_back(event);
    return events_.size() - 1;
  }
  const uint64_t ticket = free_events_.back();
  free_events_.pop_back();
  return ticket;
}

void CudaBackend::begin_side_work() {
  if (!side_stream_) return;
  GUM_CHECK(!in_side_work_, "cuda backend: begin_side_work inside side work");
  const uint64_t ready = take_event();
  GUM_CUDA_CHECK(cudaEventRecord(events_[ready], main_stream_));
  GUM_CUDA_CHECK(cudaStreamWaitEvent(side_stream_, events_[ready], 0));
  free_events_.push_back(ready);  // the wait holds the record it saw: the event may be recorded again
  stream_ = side_stream_;
  in_side_work_ = true;
  swap_scratch();
}

uint64_t CudaBackend::end_side_work() {
  if (!side_stream_) return 0;
  GUM_CHECK(in_side_work_, "cuda backend: end_side_work outside side work");
  const uint64_t done = take_event();
  GUM_CUDA_CHECK(cudaEventRecord(events_[done], side_stream_));
  stream_ = main_stream_;
  in_side_work_ = false;
  swap_scratch();
  return done;
}

void CudaBackend::wait_side_work(uint64_t ticket) {
  if (!side_stream_) return;
  GUM_CHECK(ticket < events_.size(), "cuda backend: side work ticket ", ticket, " was never issued");
  GUM_CUDA_CHECK(cudaStreamWaitEvent(main_stream_, events_[ticket], 0));
  free_events_.push_back(ticket);
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
