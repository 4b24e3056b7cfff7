#pragma once
// Streams of the CUDA emulator (streams.cpp), as the runtime calls and the library shims use them.
// One kind of work item serves every stream mode: a kernel launch with its arguments bound by
// value, a library call, a copy, a memset, an event wait or a graph launch. It runs inside the call
// that submits it (GUM_CUDA_EMU_STREAMS=sync, the default), waits in its stream's queue until
// something depends on it (deferred), or is recorded into the stream's capture.
#include <functional>

#include "cuda_runtime_api.h"

namespace gum_emu {

struct Work {
  const char* what;  // the call that submitted it, for error messages
  std::function<void()> run;
  bool host_launch = true;  // counted in Stats::host_launches (an event wait is not)
};

// Submits `work` on `stream`. The legacy stream (0) runs it at once, after the queued work of
// every blocking stream (CUDA's legacy-stream semantics). On a capturing stream it is recorded;
// a capture already invalidated returns cudaErrorStreamCaptureInvalidated and drops it, and the
// legacy stream while a blocking stream captures returns cudaErrorStreamCaptureImplicit.
cudaError_t submit(cudaStream_t stream, Work work);

// Runs every queued item of `stream` (the legacy stream: of every blocking stream), as a host
// wait on it or a call that must see its results does.
void drain(cudaStream_t stream);
void drain_all();

// Whether `stream` is recording into a capture.
bool capturing(cudaStream_t stream);

// For the calls stream capture forbids (cudaMalloc, cudaFree, a synchronous copy or memset, the
// synchronisations): cudaErrorStreamCaptureUnsupported, naming `call`, when a capture prohibits
// the calling thread from them (its own capture not begun in relaxed mode, or another thread's
// in global mode); that capture is invalidated. cudaSuccess otherwise.
cudaError_t check_capture_allows(const char* call);

}  // namespace gum_emu
