// Host API of the CUDA emulator. Device memory is host memory, one allocation per cudaMalloc (so
// AddressSanitizer sees every out-of-bounds access) filled with 0xFF (uninitialised floats read as
// NaN). Copies and memsets are work items of their stream (streams.cpp, which also holds the
// stream, event, capture and graph calls).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime_api.h"
#include "errors.h"
#include "gum_cuda_emu/control.h"
#include "streams.h"

namespace gum_emu {
namespace {

constexpr size_t kAllocationAlignment = 256;  // cudaMalloc's guarantee

struct ErrorState {
  std::mutex mutex;
  cudaError_t last = cudaSuccess;  // sticky until cudaGetLastError
  cudaError_t message_error = cudaSuccess;
  std::string message;  // of the latest raised error, kept after cudaGetLastError resets `last`
};

ErrorState& errors() {
  static ErrorState state;
  return state;
}

// GUM_CUDA_EMU_DEVICES (default 1) devices, all the same host memory: with one process per rank,
// `mpirun -np N` needs N devices as on a real node, while each process uses only its own.
int device_count() {
  static const int count = [] {
    const char* env = std::getenv("GUM_CUDA_EMU_DEVICES");
    const int n = env ? std::atoi(env) : 1;
    return n >= 1 ? n : 1;
  }();
  return count;
}

thread_local int current_device = 0;

cudaError_t invalid_value(const char* call) {
  raise_error(cudaErrorInvalidValue, std::string("gum_cuda_emu: ") + call + ": invalid argument");
  return cudaErrorInvalidValue;
}

}  // namespace

void raise_error(cudaError_t error, const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  ErrorState& e = errors();
  std::lock_guard<std::mutex> lock(e.mutex);
  e.last = error;
  e.message_error = error;
  e.message = message;
}

std::string last_error_message() {
  ErrorState& e = errors();
  std::lock_guard<std::mutex> lock(e.mutex);
  return e.message;
}

}  // namespace gum_emu

using gum_emu::invalid_value;

extern "C" {

cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return invalid_value("cudaDriverGetVersion");
  const char* env = std::getenv("GUM_CUDA_EMU_DRIVER_VERSION");
  *version = env ? std::atoi(env) : GUM_CUDA_EMU_RUNTIME_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return invalid_value("cudaRuntimeGetVersion");
  *version = GUM_CUDA_EMU_RUNTIME_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return invalid_value("cudaGetDeviceCount");
  *count = 0;
  int driver = 0;
  cudaDriverGetVersion(&driver);
  // Minor-version compatibility: any driver of the runtime's major version runs it.
  if (driver / 1000 < GUM_CUDA_EMU_RUNTIME_VERSION / 1000) {
    gum_emu::raise_error(cudaErrorInsufficientDriver, "CUDA driver version is insufficient for CUDA runtime version");
    return cudaErrorInsufficientDriver;
  }
  *count = gum_emu::device_count();
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= gum_emu::device_count()) {
    gum_emu::raise_error(cudaErrorInvalidDevice, "gum_cuda_emu: cudaSetDevice(" + std::to_string(device) +
                                                     "): " + std::to_string(gum_emu::device_count()) +
                                                     " emulated device(s) (GUM_CUDA_EMU_DEVICES)");
    return cudaErrorInvalidDevice;
  }
  gum_emu::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return invalid_value("cudaGetDevice");
  *device = gum_emu::current_device;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return invalid_value("cudaMemGetInfo");
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  *total_bytes = size_t(sysconf(_SC_PHYS_PAGES)) * page;
  *free_bytes = size_t(sysconf(_SC_AVPHYS_PAGES)) * page;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  gum_emu::ErrorState& e = gum_emu::errors();
  std::lock_guard<std::mutex> lock(e.mutex);
  const cudaError_t last = e.last;
  e.last = cudaSuccess;
  return last;
}

cudaError_t cudaPeekAtLastError() {
  gum_emu::ErrorState& e = gum_emu::errors();
  std::lock_guard<std::mutex> lock(e.mutex);
  return e.last;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver:
      return "cudaErrorInsufficientDriver";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched:
      return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorStreamCaptureUnjoined:
      return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureIsolation:
      return "cudaErrorStreamCaptureIsolation";
    case cudaErrorStreamCaptureImplicit:
      return "cudaErrorStreamCaptureImplicit";
    case cudaErrorCapturedEvent:
      return "cudaErrorCapturedEvent";
    case cudaErrorStreamCaptureWrongThread:
      return "cudaErrorStreamCaptureWrongThread";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  gum_emu::ErrorState& e = gum_emu::errors();
  {
    std::lock_guard<std::mutex> lock(e.mutex);
    // The pointer stays valid until the next raised error, like the message of a real failure.
    if (error != cudaSuccess && error == e.message_error) return e.message.c_str();
  }
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInsufficientDriver:
      return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorIllegalState:
      return "the operation is not permitted in this state";
    case cudaErrorStreamCaptureUnsupported:
      return "the operation is not permitted when the stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "the capture sequence was invalidated by a previous error";
    case cudaErrorStreamCaptureUnmatched:
      return "the capture was not begun on this stream";
    case cudaErrorStreamCaptureUnjoined:
      return "the capture has a fork not joined to the origin stream";
    case cudaErrorStreamCaptureIsolation:
      return "a dependency would cross the capture's boundary";
    case cudaErrorStreamCaptureImplicit:
      return "an implicit dependency of the legacy stream on a capture";
    case cudaErrorCapturedEvent:
      return "the event was last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread:
      return "the capture was ended on another thread";
  }
  return "unknown error";
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return invalid_value("cudaMalloc");
  *ptr = nullptr;
  if (cudaError_t e = gum_emu::check_capture_allows("cudaMalloc")) return e;
  void* p = nullptr;
  if (posix_memalign(&p, gum_emu::kAllocationAlignment, bytes ? bytes : 1) != 0) {
    gum_emu::raise_error(cudaErrorMemoryAllocation,
                         "gum_cuda_emu: cudaMalloc of " + std::to_string(bytes) + " bytes: out of memory");
    return cudaErrorMemoryAllocation;
  }
  std::memset(p, 0xFF, bytes);
  *ptr = p;
  gum_emu::count_allocation();
  gum_emu::register_allocation(p, bytes);
  return cudaSuccess;
}

// Waits for all queued work first, as on a GPU (it may still use the memory).
cudaError_t cudaFree(void* ptr) {
  if (cudaError_t e = gum_emu::check_capture_allows("cudaFree")) return e;
  gum_emu::drain_all();
  if (ptr) {
    gum_emu::count_free();
    gum_emu::unregister_allocation(ptr);
  }
  std::free(ptr);
  return cudaSuccess;
}

namespace {
// The page-locked allocations (cudaMallocHost): start address -> bytes.
std::mutex pinned_mutex;
std::map<const void*, size_t> pinned;

bool is_pinned(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(pinned_mutex);
  auto it = pinned.upper_bound(p);
  if (it == pinned.begin()) return false;
  --it;
  const auto* begin = static_cast<const unsigned char*>(it->first);
  const auto* q = static_cast<const unsigned char*>(p);
  return q >= begin && q + bytes <= begin + it->second;
}
}  // namespace

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  if (!ptr) return invalid_value("cudaMallocHost");
  *ptr = std::malloc(bytes ? bytes : 1);
  if (!*ptr) return cudaErrorMemoryAllocation;
  std::lock_guard<std::mutex> lock(pinned_mutex);
  pinned[*ptr] = bytes;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  gum_emu::drain_all();  // queued copies may still use it
  if (ptr) {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    pinned.erase(ptr);
  }
  std::free(ptr);
  return cudaSuccess;
}

namespace {
// A copy as a work item: `src` is read when it runs.
gum_emu::Work copy_work(const char* call, void* dst, const void* src, size_t bytes) {
  return {call, [dst, src, bytes] {
            gum_emu::count_device_work();
            if (bytes) std::memcpy(dst, src, bytes);  // memcpy, not memmove: overlap is an error (ASan reports it)
          }};
}
}  // namespace

// A blocking copy is legacy-stream work the host waits for.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes && (!dst || !src)) return invalid_value("cudaMemcpy");
  if (cudaError_t e = gum_emu::check_capture_allows("cudaMemcpy")) return e;
  if (cudaError_t e = gum_emu::submit(nullptr, copy_work("cudaMemcpy", dst, src, bytes))) return e;
  if (kind != cudaMemcpyDeviceToDevice) gum_emu::count_host_sync();
  return cudaSuccess;
}

// An asynchronous copy into page-locked memory (cudaMallocHost) is only queued, like a launch;
// into pageable memory the host waits for it. From pageable memory the call returns once the
// source is staged, so outside a capture the bytes are copied at the call (a graph's copy reads
// the host buffer when it runs).
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes && (!dst || !src)) return invalid_value("cudaMemcpyAsync");
  const bool to_pageable = kind == cudaMemcpyDeviceToHost && !is_pinned(dst, bytes);
  const bool from_pageable = kind == cudaMemcpyHostToDevice && !is_pinned(src, bytes);
  gum_emu::Work work = copy_work("cudaMemcpyAsync", dst, src, bytes);
  if (from_pageable && !gum_emu::capturing(stream)) {
    const auto* bytes_in = static_cast<const unsigned char*>(src);
    auto staged = std::make_shared<std::vector<unsigned char>>(bytes_in, bytes_in + bytes);
    work.run = [staged, run = copy_work("cudaMemcpyAsync", dst, staged->data(), bytes).run] { run(); };
  }
  if (cudaError_t e = gum_emu::submit(stream, std::move(work))) return e;
  if (to_pageable && !gum_emu::capturing(stream)) {
    gum_emu::drain(stream);
    gum_emu::count_host_sync();
  }
  return cudaSuccess;
}

namespace {
gum_emu::Work memset_work(const char* call, void* ptr, int value, size_t bytes) {
  return {call, [ptr, value, bytes] {
            gum_emu::count_device_work();
            if (bytes) std::memset(ptr, value, bytes);
          }};
}
}  // namespace

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes && !ptr) return invalid_value("cudaMemset");
  if (cudaError_t e = gum_emu::check_capture_allows("cudaMemset")) return e;
  return gum_emu::submit(nullptr, memset_work("cudaMemset", ptr, value, bytes));
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !ptr) return invalid_value("cudaMemsetAsync");
  return gum_emu::submit(stream, memset_work("cudaMemsetAsync", ptr, value, bytes));
}

}  // extern "C"
