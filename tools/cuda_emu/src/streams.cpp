// Streams, events, stream capture and graphs of the CUDA emulator. Each stream keeps the work
// submitted to it (streams.h) in order; what happens to an item depends on the stream mode and on
// capture:
// - sync (default): it runs inside the call that submits it, so every stream order holds trivially.
// - deferred (GUM_CUDA_EMU_STREAMS=deferred): on a stream other than the legacy one it waits in the
//   stream's queue until something depends on it: a stream waiting for an event recorded after it
//   (when the waiting stream reaches the wait), a host synchronisation on the stream, its event or
//   the device, a call on the legacy stream (for blocking streams), cudaFree, the stream's
//   destruction. That is the latest moment a GPU may run it, so a consumer that skips the event
//   wait, or a host read before the synchronisation, reads stale (or 0xFF-poisoned) memory.
// - capture: between cudaStreamBeginCapture and cudaStreamEndCapture, items are recorded (and a
//   stream that waits for an event recorded in the capture joins it); the graph replays them in
//   capture order, which is one valid order of the captured dependencies.
// The rules follow the CUDA runtime API reference (cudaStreamBeginCapture,
// cudaThreadExchangeStreamCaptureMode, cudaStreamIsCapturing, cudaStreamEndCapture, the error
// codes 900-908): see docs/cuda_verification.md.
#include "streams.h"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "gum_cuda_emu/control.h"
#include "gum_cuda_emu/device.h"

namespace gum_emu {
struct Capture;
}

struct CUstream_st {
  unsigned flags = 0;
  std::deque<gum_emu::Work> queue;        // deferred mode: submitted, not yet run
  uint64_t submitted = 0, completed = 0;  // items of this stream, in submission order
  gum_emu::Capture* capture = nullptr;    // the capture this stream records into
};

struct CUevent_st {
  unsigned flags = 0;
  // The latest record outside a capture completes once `stream` has completed `position` items.
  cudaStream_t stream = nullptr;
  uint64_t position = 0;
  // A record inside a capture: after `captured_items` items of `captured_on` in that capture.
  gum_emu::Capture* capture = nullptr;
  cudaStream_t captured_on = nullptr;
  size_t captured_items = 0;
};

struct CUgraph_st {
  std::vector<gum_emu::Work> items;
};

struct CUgraphExec_st {
  std::shared_ptr<const std::vector<gum_emu::Work>> items;
};

namespace gum_emu {

constexpr size_t kNotJoined = std::numeric_limits<size_t>::max();

struct Capture {
  cudaStreamCaptureMode mode;
  std::thread::id thread;
  cudaStream_t origin;
  std::vector<Work> items;
  std::string invalidated_by;  // the call that invalidated it; empty while valid
  // Per stream in the capture: items it recorded, and how many of them the origin stream waited
  // for (an event recorded on it, waited for by the origin); kNotJoined until the origin waits.
  struct Member {
    size_t items = 0, joined = kNotJoined;
  };
  std::map<cudaStream_t, Member> members;
};

namespace {

enum class Mode { kSync, kDeferred };

Mode parse_mode(const std::string& spec) {
  if (spec == "sync") return Mode::kSync;
  if (spec == "deferred") return Mode::kDeferred;
  throw std::invalid_argument("GUM_CUDA_EMU_STREAMS: '" + spec + "' is not a stream mode (sync, deferred)");
}

struct State {
  State() {
    const char* env = std::getenv("GUM_CUDA_EMU_STREAMS");
    mode = parse_mode(env && *env ? env : "sync");
  }
  std::recursive_mutex mutex;
  Mode mode;
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  std::set<Capture*> captures;
};

State& state() {
  static State s;
  return s;
}

using Lock = std::lock_guard<std::recursive_mutex>;

bool is_blocking(cudaStream_t s) { return (s->flags & cudaStreamNonBlocking) == 0; }

cudaError_t fail(cudaError_t error, const std::string& message) {
  raise_error(error, "gum_cuda_emu: " + message);
  return error;
}

void invalidate(Capture* c, const char* call) {
  if (c->invalidated_by.empty()) c->invalidated_by = call;
}

// Runs the queued items of `s` until `position` of them have completed (all by default).
void drain_stream(cudaStream_t s, uint64_t position = std::numeric_limits<uint64_t>::max()) {
  while (!s->queue.empty() && s->completed < position) {
    Work work = std::move(s->queue.front());
    s->queue.pop_front();
    work.run();
    ++s->completed;
  }
}

void drain_blocking_streams() {
  for (cudaStream_t s : state().streams)
    if (is_blocking(s)) drain_stream(s);
}

// The captures of blocking streams, which the legacy stream would depend on implicitly.
Capture* blocking_capture() {
  for (Capture* c : state().captures)
    for (const auto& [s, member] : c->members)
      if (is_blocking(s)) return c;
  return nullptr;
}

cudaError_t implicit_dependency(Capture* c, const char* call) {
  invalidate(c, call);
  return fail(cudaErrorStreamCaptureImplicit,
              std::string(call) +
                  " on the legacy stream while a blocking stream captures (an implicit dependency on the capture)");
}

bool event_complete(cudaEvent_t e) { return e->stream == nullptr || e->stream->completed >= e->position; }

// The items a stream waiting for `e` must see completed (the record's position), as a work item:
// it drains the recording stream that far when the waiting stream reaches it.
Work wait_for(cudaEvent_t e) {
  const cudaStream_t on = e->stream;
  const uint64_t position = e->position;
  return Work{"cudaStreamWaitEvent",
              [on, position] {
                State& st = state();
                Lock lock(st.mutex);
                if (on != nullptr && st.streams.count(on)) drain_stream(on, position);
              },
              /*host_launch=*/false};
}

void end_capture_of_events(Capture* c) {
  for (cudaEvent_t e : state().events)
    if (e->capture == c) e->capture = nullptr;  // no record outside the capture: complete
}

}  // namespace

void set_stream_mode(const std::string& spec) {
  State& st = state();
  Lock lock(st.mutex);
  const Mode mode = parse_mode(spec);
  for (cudaStream_t s : st.streams) drain_stream(s);
  st.mode = mode;
}

std::string stream_mode() {
  State& st = state();
  Lock lock(st.mutex);
  return st.mode == Mode::kSync ? "sync" : "deferred";
}

cudaError_t submit(cudaStream_t stream, Work work) {
  State& st = state();
  Lock lock(st.mutex);
  if (stream == nullptr) {
    if (Capture* c = blocking_capture()) return implicit_dependency(c, work.what);
    if (work.host_launch) count_host_launch();
    drain_blocking_streams();
    work.run();
    return cudaSuccess;
  }
  if (Capture* c = stream->capture) {
    if (!c->invalidated_by.empty())
      return fail(cudaErrorStreamCaptureInvalidated,
                  std::string(work.what) + ": the stream's capture was invalidated by " + c->invalidated_by);
    c->items.push_back(std::move(work));
    ++c->members[stream].items;
    return cudaSuccess;
  }
  if (work.host_launch) count_host_launch();
  ++stream->submitted;
  if (st.mode == Mode::kDeferred) {
    stream->queue.push_back(std::move(work));
    return cudaSuccess;
  }
  work.run();
  ++stream->completed;
  return cudaSuccess;
}

void submit_launch(const LaunchConfig& config, void (*body)(void*), void* context_ptr, void (*destroy)(void*)) {
  std::shared_ptr<void> context(context_ptr, destroy);
  const cudaError_t error =
      submit(config.stream, Work{config.kernel, [config, body, context] { run_grid(config, body, context.get()); }});
  (void)error;  // raised already, for cudaGetLastError, as a launch reports it
}

void drain(cudaStream_t stream) {
  State& st = state();
  Lock lock(st.mutex);
  if (stream == nullptr)
    drain_blocking_streams();
  else
    drain_stream(stream);
}

void drain_all() {
  State& st = state();
  Lock lock(st.mutex);
  for (cudaStream_t s : st.streams) drain_stream(s);
}

bool capturing(cudaStream_t stream) {
  State& st = state();
  Lock lock(st.mutex);
  return stream != nullptr && stream->capture != nullptr;
}

cudaError_t check_capture_allows(const char* call) {
  State& st = state();
  Lock lock(st.mutex);
  const std::thread::id self = std::this_thread::get_id();
  std::string modes;
  for (Capture* c : st.captures) {
    const bool own = c->thread == self;
    if ((own && c->mode != cudaStreamCaptureModeRelaxed) || (!own && c->mode == cudaStreamCaptureModeGlobal)) {
      invalidate(c, call);
      modes =
          c->mode == cudaStreamCaptureModeGlobal ? "cudaStreamCaptureModeGlobal" : "cudaStreamCaptureModeThreadLocal";
    }
  }
  if (modes.empty()) return cudaSuccess;
  return fail(cudaErrorStreamCaptureUnsupported, std::string(call) + " is not permitted while a stream capture (" +
                                                     modes + ") is active; the capture is invalidated");
}

}  // namespace gum_emu

using gum_emu::fail;
using gum_emu::Lock;
using gum_emu::state;

extern "C" {

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (!stream) return fail(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: stream is NULL");
  Lock lock(state().mutex);
  *stream = new CUstream_st;
  (*stream)->flags = flags;
  state().streams.insert(*stream);
  return cudaSuccess;
}

// The stream's queued work still runs (CUDA returns at once and completes it on the device).
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return cudaSuccess;
  Lock lock(state().mutex);
  if (stream->capture) return fail(cudaErrorIllegalState, "cudaStreamDestroy: the stream is capturing");
  gum_emu::drain_stream(stream);
  for (cudaEvent_t e : state().events)
    if (e->stream == stream) e->stream = nullptr;
  state().streams.erase(stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (cudaError_t e = gum_emu::check_capture_allows("cudaStreamSynchronize")) return e;
  Lock lock(state().mutex);
  if (stream == nullptr) {
    if (gum_emu::Capture* c = gum_emu::blocking_capture())
      return gum_emu::implicit_dependency(c, "cudaStreamSynchronize");
  } else if (stream->capture) {  // waiting for a capturing stream conflicts with capture in every mode
    gum_emu::invalidate(stream->capture, "cudaStreamSynchronize");
    return fail(cudaErrorStreamCaptureUnsupported,
                "cudaStreamSynchronize on a capturing stream; the capture is invalidated");
  }
  gum_emu::drain(stream);
  gum_emu::count_host_sync();
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  if (cudaError_t e = gum_emu::check_capture_allows("cudaDeviceSynchronize")) return e;
  Lock lock(state().mutex);
  if (!state().captures.empty()) {  // the device includes the capturing streams
    for (gum_emu::Capture* c : state().captures) gum_emu::invalidate(c, "cudaDeviceSynchronize");
    return fail(cudaErrorStreamCaptureUnsupported,
                "cudaDeviceSynchronize while a stream captures; the capture is "
                "invalidated");
  }
  gum_emu::drain_all();
  gum_emu::count_host_sync();
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaStreamWaitEvent: event is NULL");
  Lock lock(state().mutex);
  if (gum_emu::Capture* c = event->capture) {
    if (stream == nullptr) return gum_emu::implicit_dependency(c, "cudaStreamWaitEvent");
    if (stream->capture == nullptr) {  // a fork: the stream joins the capture
      stream->capture = c;
      c->members[stream];
    } else if (stream->capture != c) {
      return fail(cudaErrorInvalidValue, "cudaStreamWaitEvent: the event belongs to another capture");
    }
    if (stream == c->origin && event->captured_on != stream)
      c->members[event->captured_on].joined = event->captured_items;
    return cudaSuccess;
  }
  if (stream != nullptr && stream->capture) {
    gum_emu::invalidate(stream->capture, "cudaStreamWaitEvent");
    return fail(cudaErrorStreamCaptureIsolation,
                "cudaStreamWaitEvent: a capturing stream waits for an event recorded outside the capture");
  }
  return gum_emu::submit(stream, gum_emu::wait_for(event));
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventCreateWithFlags: event is NULL");
  Lock lock(state().mutex);
  *event = new CUevent_st;
  (*event)->flags = flags;
  state().events.insert(*event);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventRecord: event is NULL");
  Lock lock(state().mutex);
  event->capture = nullptr;
  event->stream = nullptr;
  if (stream == nullptr) {  // after the legacy stream's work, which runs at once
    if (gum_emu::Capture* c = gum_emu::blocking_capture()) return gum_emu::implicit_dependency(c, "cudaEventRecord");
    gum_emu::drain_blocking_streams();
  } else if (gum_emu::Capture* c = stream->capture) {
    if (!c->invalidated_by.empty())
      return fail(cudaErrorStreamCaptureInvalidated,
                  "cudaEventRecord: the stream's capture was invalidated by " + c->invalidated_by);
    event->capture = c;
    event->captured_on = stream;
    event->captured_items = c->members[stream].items;
  } else {
    event->stream = stream;
    event->position = stream->submitted;
  }
  return cudaSuccess;
}

// A GPU makes progress while the host polls: a query of unfinished work runs it, and answers
// cudaErrorNotReady this once.
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventQuery: event is NULL");
  Lock lock(state().mutex);
  if (event->capture) return fail(cudaErrorCapturedEvent, "cudaEventQuery on an event recorded in a capture");
  if (gum_emu::event_complete(event)) return cudaSuccess;
  gum_emu::drain_stream(event->stream, event->position);
  return cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventSynchronize: event is NULL");
  if (cudaError_t e = gum_emu::check_capture_allows("cudaEventSynchronize")) return e;
  Lock lock(state().mutex);
  if (event->capture) return fail(cudaErrorCapturedEvent, "cudaEventSynchronize on an event recorded in a capture");
  if (event->stream) gum_emu::drain_stream(event->stream, event->position);
  gum_emu::count_host_sync();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return cudaSuccess;
  Lock lock(state().mutex);
  state().events.erase(event);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  Lock lock(state().mutex);
  if (stream == nullptr)
    return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture: the legacy stream cannot capture");
  if (stream->capture) return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: the stream is capturing already");
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue, "cudaStreamBeginCapture: unknown capture mode");
  auto* c = new gum_emu::Capture{mode, std::this_thread::get_id(), stream, {}, {}, {}};
  c->members[stream];
  stream->capture = c;
  state().captures.insert(c);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: graph is NULL");
  *graph = nullptr;
  Lock lock(state().mutex);
  if (stream == nullptr || stream->capture == nullptr)
    return fail(cudaErrorIllegalState, "cudaStreamEndCapture: the stream is not capturing");
  gum_emu::Capture* c = stream->capture;
  if (c->origin != stream) {
    gum_emu::invalidate(c, "cudaStreamEndCapture on a stream that joined the capture");
    return fail(cudaErrorStreamCaptureUnmatched, "cudaStreamEndCapture: the capture was not begun on this stream");
  }
  if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread,
                "cudaStreamEndCapture from another thread than the one that began it");
  std::unique_ptr<gum_emu::Capture> owned(c);
  state().captures.erase(c);
  gum_emu::end_capture_of_events(c);
  bool unjoined = false;
  for (auto& [s, member] : c->members) {
    s->capture = nullptr;
    if (s != stream && member.joined != member.items) unjoined = true;
  }
  if (!c->invalidated_by.empty())
    return fail(cudaErrorStreamCaptureInvalidated,
                "cudaStreamEndCapture: the capture was invalidated by " + c->invalidated_by);
  if (unjoined)
    return fail(cudaErrorStreamCaptureUnjoined,
                "cudaStreamEndCapture: a stream forked into the capture has work the origin stream never waited for");
  *graph = new CUgraph_st{std::move(c->items)};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  if (!status) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: status is NULL");
  Lock lock(state().mutex);
  if (stream == nullptr) {
    if (gum_emu::blocking_capture())
      return fail(cudaErrorStreamCaptureImplicit,
                  "cudaStreamIsCapturing on the legacy stream while a blocking stream "
                  "captures");
    *status = cudaStreamCaptureStatusNone;
  } else if (stream->capture == nullptr) {
    *status = cudaStreamCaptureStatusNone;
  } else {
    *status =
        stream->capture->invalidated_by.empty() ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusInvalidated;
  }
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!exec || !graph) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: exec or graph is NULL");
  *exec = new CUgraphExec_st{std::make_shared<const std::vector<gum_emu::Work>>(graph->items)};
  return cudaSuccess;
}

// The recorded items in capture order, as one item of `stream`: they see the memory as it is when
// the graph runs, with the arguments they were captured with.
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidValue, "cudaGraphLaunch: exec is NULL");
  return gum_emu::submit(stream, gum_emu::Work{"cudaGraphLaunch", [items = exec->items] {
                                                 gum_emu::count_graph_launch();
                                                 for (const gum_emu::Work& work : *items) work.run();
                                               }});
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;  // a queued launch holds its own reference to the items
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
