// The emulator's streams (tools/cuda_emu/src/streams.cpp): stream capture and graph replay, the
// calls a capture forbids, and the deferred stream mode that runs queued work only when something
// depends on it, so a missing event wait or host synchronisation reads stale memory.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "emu_test_util.h"
#include "gum_cuda_emu/control.h"

namespace {

using namespace gum_emu_test;

constexpr int kN = 300;  // two blocks of 256 threads, the second partial

__global__ void add_scaled_kernel(float* y, const float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

// The factor comes from device memory, so a graph replay reads the value written before it.
__global__ void scale_by_device_kernel(float* y, const float* factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] *= *factor;
}

__global__ void copy_kernel(float* out, const float* in, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

const dim3 kGrid((kN + 255) / 256), kBlock(256);

unsigned long long launches(const gum_emu::Stats& stats, const char* kernel) {
  auto it = stats.kernels.find(kernel);
  return it == stats.kernels.end() ? 0 : it->second.launches;
}

std::vector<float> iota_values(float start) {
  std::vector<float> v(kN);
  for (int i = 0; i < kN; ++i) v[i] = start + float(i);
  return v;
}

struct Stream {
  explicit Stream(unsigned flags = cudaStreamDefault) { REQUIRE(cudaStreamCreateWithFlags(&s, flags) == cudaSuccess); }
  ~Stream() { cudaStreamDestroy(s); }
  cudaStream_t s = nullptr;
};

struct Event {
  Event() { REQUIRE(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess); }
  ~Event() { cudaEventDestroy(e); }
  cudaEvent_t e = nullptr;
};

// The graph of `record` captured on `stream` (global mode), instantiated.
template <typename Record>
cudaGraphExec_t capture(cudaStream_t stream, Record record) {
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  record();
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  REQUIRE(graph != nullptr);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);  // the executable graph does not need it
  return exec;
}

TEST_CASE("streams: a captured graph replays to the eager result, once per launch") {
  for (const char* mode : {"sync", "deferred"}) {
    StreamModeScope scope(mode);
    INFO("stream mode " << mode);
    Stream stream;
    DeviceBuffer<float> x(kN), y(kN), y_eager(kN);
    x.upload(iota_values(1.0f));
    y.upload(iota_values(-5.0f));
    y_eager.upload(iota_values(-5.0f));

    // y = 0, y += 0.5 x, y += y, y += x: 2 x, and only in this order.
    auto work = [&](float* target) {
      REQUIRE(cudaMemsetAsync(target, 0, kN * sizeof(float), stream.s) == cudaSuccess);
      LAUNCH_ON(add_scaled_kernel, kGrid, kBlock, stream.s)(target, x.data, 0.5f, kN);
      LAUNCH_ON(add_scaled_kernel, kGrid, kBlock, stream.s)(target, target, 1.0f, kN);
      LAUNCH_ON(add_scaled_kernel, kGrid, kBlock, stream.s)(target, x.data, 1.0f, kN);
    };
    const gum_emu::Stats before = gum_emu::stats();
    cudaGraphExec_t exec = capture(stream.s, [&] { work(y.data); });
    const gum_emu::Stats captured = gum_emu::stats();
    // Nothing ran while capturing.
    CHECK(launches(captured, "add_scaled_kernel") == launches(before, "add_scaled_kernel"));
    CHECK(captured.host_launches == before.host_launches);
    REQUIRE(cudaStreamSynchronize(stream.s) == cudaSuccess);
    CHECK(y.host() == iota_values(-5.0f));

    const gum_emu::Stats start = gum_emu::stats();
    for (int replay = 1; replay <= 2; ++replay) {
      REQUIRE(cudaGraphLaunch(exec, stream.s) == cudaSuccess);
      work(y_eager.data);
      REQUIRE(cudaStreamSynchronize(stream.s) == cudaSuccess);
      INFO("replay " << replay);
      CHECK(y.host() == y_eager.host());  // same kernels, same order: bitwise equal
      const std::vector<float> result = y.host();
      for (int i = 0; i < kN; ++i) CHECK(result[i] == 2.0f * (1.0f + float(i)));
    }
    const gum_emu::Stats after = gum_emu::stats();
    CHECK(after.graph_launches - start.graph_launches == 2);
    // Two replays and two eager runs of 3 kernels each.
    CHECK(launches(after, "add_scaled_kernel") - launches(start, "add_scaled_kernel") == 12);
    // From the host: 2 graph launches, 2 x 4 eager items, and the 3 blocking copies of host() per
    // replay; a replay's own items are not the host's.
    CHECK(after.host_launches - start.host_launches == 2 + 2 * 4 + 2 * 3);
    REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);
  }
}

TEST_CASE("streams: a graph keeps the arguments of its capture, and reads memory when it runs") {
  Stream stream;
  DeviceBuffer<float> x(kN), y(kN), factor(1);
  x.upload(iota_values(1.0f));
  y.upload(std::vector<float>(kN, 0.0f));
  factor.upload({3.0f});
  float a = 2.0f;
  cudaGraphExec_t exec = capture(stream.s, [&] {
    LAUNCH_ON(add_scaled_kernel, kGrid, kBlock, stream.s)(y.data, x.data, a, kN);
    LAUNCH_ON(scale_by_device_kernel, kGrid, kBlock, stream.s)(y.data, factor.data, kN);
  });
  a = 100.0f;              // a host value changed after the capture is not seen
  factor.upload({-1.0f});  // device memory written before the launch is
  x.upload(iota_values(10.0f));
  REQUIRE(cudaGraphLaunch(exec, stream.s) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream.s) == cudaSuccess);
  const std::vector<float> result = y.host();
  for (int i = 0; i < kN; ++i) {
    INFO("element " << i);
    CHECK(result[i] == -2.0f * (10.0f + float(i)));
  }
  cudaGraphExecDestroy(exec);
}

TEST_CASE("streams: each call a global-mode capture forbids fails naming itself and invalidates the capture") {
  DeviceBuffer<float> buffer(kN);
  std::vector<float> host(kN);
  Event event;
  struct Forbidden {
    const char* name;
    std::function<cudaError_t(cudaStream_t)> call;
  };
  void* allocation = nullptr;
  const std::vector<Forbidden> calls = {
      {"cudaMalloc", [&](cudaStream_t) { return cudaMalloc(&allocation, 64); }},
      {"cudaFree", [&](cudaStream_t) { return cudaFree(buffer.data); }},
      {"cudaMemcpy",
       [&](cudaStream_t) { return cudaMemcpy(host.data(), buffer.data, kN * sizeof(float), cudaMemcpyDeviceToHost); }},
      {"cudaMemset", [&](cudaStream_t) { return cudaMemset(buffer.data, 0, 4); }},
      {"cudaStreamSynchronize", [&](cudaStream_t s) { return cudaStreamSynchronize(s); }},
      {"cudaDeviceSynchronize", [&](cudaStream_t) { return cudaDeviceSynchronize(); }},
      {"cudaEventSynchronize", [&](cudaStream_t) { return cudaEventSynchronize(event.e); }},
  };
  for (const Forbidden& f : calls) {
    INFO(f.name);
    Stream stream;
    REQUIRE(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    LAUNCH_ON(copy_kernel, kGrid, kBlock, stream.s)(buffer.data, buffer.data, kN);
    REQUIRE(f.call(stream.s) == cudaErrorStreamCaptureUnsupported);
    const auto [error, message] = launch_error();
    CHECK(error == cudaErrorStreamCaptureUnsupported);
    CHECK(message.find(f.name) != std::string::npos);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    REQUIRE(cudaStreamIsCapturing(stream.s, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusInvalidated);
    // Work submitted after the failure is refused too.
    LAUNCH_ON(copy_kernel, kGrid, kBlock, stream.s)(buffer.data, buffer.data, kN);
    CHECK(launch_error().first == cudaErrorStreamCaptureInvalidated);
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&status);  // must be overwritten
    CHECK(cudaStreamEndCapture(stream.s, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(graph == nullptr);
    CHECK(launch_error().second.find(f.name) != std::string::npos);  // the message names the culprit
    REQUIRE(cudaStreamIsCapturing(stream.s, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusNone);
  }
  CHECK(allocation == nullptr);
}

TEST_CASE("streams: relaxed capture allows cudaMalloc, but never the legacy stream or a capturing stream's sync") {
  Stream stream;
  REQUIRE(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 64) == cudaSuccess);
  // The legacy stream would depend on the capturing (blocking) stream.
  CHECK(cudaMemsetAsync(p, 0, 64, nullptr) == cudaErrorStreamCaptureImplicit);
  CHECK(launch_error().second.find("cudaMemsetAsync") != std::string::npos);
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamEndCapture(stream.s, &graph) == cudaErrorStreamCaptureInvalidated);
  REQUIRE(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  CHECK(cudaStreamSynchronize(stream.s) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(stream.s, &graph) == cudaErrorStreamCaptureInvalidated);
  launch_error();
  CHECK(cudaFree(p) == cudaSuccess);
}

TEST_CASE("streams: a capture forks to another stream through an event and must join it back") {
  Stream main_stream, side;
  Event fork, join;
  DeviceBuffer<float> x(kN), y(kN), z(kN);
  x.upload(iota_values(1.0f));
  y.upload(std::vector<float>(kN, 0.0f));
  z.upload(std::vector<float>(kN, 0.0f));
  for (bool joined : {true, false}) {
    INFO((joined ? "joined" : "not joined"));
    REQUIRE(cudaStreamBeginCapture(main_stream.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(cudaEventRecord(fork.e, main_stream.s) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(side.s, fork.e, 0) == cudaSuccess);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    REQUIRE(cudaStreamIsCapturing(side.s, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusActive);
    LAUNCH_ON(copy_kernel, kGrid, kBlock, side.s)(z.data, x.data, kN);
    LAUNCH_ON(add_scaled_kernel, kGrid, kBlock, main_stream.s)(y.data, x.data, 1.0f, kN);
    REQUIRE(cudaEventRecord(join.e, side.s) == cudaSuccess);
    if (joined) REQUIRE(cudaStreamWaitEvent(main_stream.s, join.e, 0) == cudaSuccess);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(main_stream.s, &graph);
    REQUIRE(cudaStreamIsCapturing(side.s, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusNone);
    if (!joined) {
      CHECK(ended == cudaErrorStreamCaptureUnjoined);
      CHECK(graph == nullptr);
      launch_error();
      continue;
    }
    REQUIRE(ended == cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    REQUIRE(cudaGraphInstantiate(&exec, graph) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(exec, main_stream.s) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(main_stream.s) == cudaSuccess);
    CHECK(z.host() == iota_values(1.0f));
    CHECK(y.host() == iota_values(1.0f));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

TEST_CASE("streams: deferred mode reads stale memory across streams without an event wait, not with one") {
  StreamModeScope scope("deferred");
  Stream producer(cudaStreamNonBlocking), consumer(cudaStreamNonBlocking);
  Event written;
  DeviceBuffer<float> x(kN), staged(kN), out(kN);
  x.upload(iota_values(1.0f));
  float* pinned = nullptr;
  REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), kN * sizeof(float)) == cudaSuccess);
  for (bool wait : {false, true}) {
    INFO((wait ? "with cudaStreamWaitEvent" : "without"));
    REQUIRE(cudaMemset(staged.data, 0xFF, kN * sizeof(float)) == cudaSuccess);  // NaN: never written
    REQUIRE(cudaMemset(out.data, 0, kN * sizeof(float)) == cudaSuccess);
    LAUNCH_ON(copy_kernel, kGrid, kBlock, producer.s)(staged.data, x.data, kN);
    REQUIRE(cudaEventRecord(written.e, producer.s) == cudaSuccess);
    if (wait) REQUIRE(cudaStreamWaitEvent(consumer.s, written.e, 0) == cudaSuccess);
    LAUNCH_ON(copy_kernel, kGrid, kBlock, consumer.s)(out.data, staged.data, kN);
    REQUIRE(cudaMemcpyAsync(pinned, out.data, kN * sizeof(float), cudaMemcpyDeviceToHost, consumer.s) == cudaSuccess);
    // The copy into page-locked memory is queued: the host sees nothing before synchronising.
    for (int i = 0; i < kN; ++i) pinned[i] = -1.0f;
    REQUIRE(cudaStreamSynchronize(consumer.s) == cudaSuccess);
    int nan = 0, right = 0;
    for (int i = 0; i < kN; ++i) {
      nan += std::isnan(pinned[i]);
      right += pinned[i] == 1.0f + float(i);
    }
    CHECK(right == (wait ? kN : 0));
    CHECK(nan == (wait ? 0 : kN));
    REQUIRE(cudaStreamSynchronize(producer.s) == cudaSuccess);
  }
  cudaFreeHost(pinned);
}

TEST_CASE("streams: deferred mode stages pageable sources at the call and runs queued work on a query") {
  StreamModeScope scope("deferred");
  Stream stream;
  Event done;
  DeviceBuffer<float> y(kN);
  std::vector<float> source = iota_values(7.0f);
  REQUIRE(cudaMemcpyAsync(y.data, source.data(), kN * sizeof(float), cudaMemcpyHostToDevice, stream.s) == cudaSuccess);
  std::fill(source.begin(), source.end(), 0.0f);  // the caller may reuse a pageable source at once
  REQUIRE(cudaEventRecord(done.e, stream.s) == cudaSuccess);
  CHECK(cudaEventQuery(done.e) == cudaErrorNotReady);  // queued, then run: the GPU progresses
  CHECK(cudaEventQuery(done.e) == cudaSuccess);
  CHECK(y.host() == iota_values(7.0f));
}

}  // namespace
