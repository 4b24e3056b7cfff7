// The CUDA emulator (tools/cuda_emu) on small kernels written for it: barriers, warp collectives
// and their error reports, schedules, poisoned memory, launch limits. The backend's real kernels
// are covered by tests/cuda, which runs on the emulator when there is no GPU.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "emu_test_util.h"
#include "gum_cuda_emu/control.h"

namespace {

using namespace gum_emu_test;

// The block reduction shape of the backend (device_utils.cuh): shuffles, then the first warp
// reduces the per-warp partials through shared memory inside `if (warp == 0)`.
__device__ float block_sum(float v, float* scratch, bool second_barrier) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) scratch[warp] = v;
  if (second_barrier) __syncthreads();
  if (warp == 0) {
    float total = lane < warps ? scratch[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
    if (lane == 0) scratch[0] = total;
  }
  __syncthreads();
  return scratch[0];
}

__global__ void row_sum_kernel(float* out, const float* x, int cols, bool second_barrier) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += x[blockIdx.x * cols + c];
  const float total = block_sum(acc, scratch, second_barrier);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

TEST_CASE("emulator: a block reduction through shuffles and shared memory is exact in every schedule") {
  const int rows = 5, cols = 1000;
  std::vector<float> x(rows * cols);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 7) - 3);  // small integers: sums exact
  DeviceBuffer<float> dx(x.size()), out(rows);
  dx.upload(x);
  for (const char* spec : {"forward", "reverse", "random:7"}) {
    ScheduleScope scope(spec);
    LAUNCH(row_sum_kernel, rows, 256)(out.data, dx.data, cols, true);
    REQUIRE(launch_error().first == cudaSuccess);
    const std::vector<float> sums = out.host();
    for (int r = 0; r < rows; ++r) {
      float expected = 0.0f;
      for (int c = 0; c < cols; ++c) expected += x[r * cols + c];
      INFO("schedule " << spec << ", row " << r);
      CHECK(sums[r] == expected);
    }
  }
}

TEST_CASE("emulator: a missing barrier gives a wrong sum in the forward schedule") {
  // Without the barrier between the partials' writes and warp 0's reads, warp 0 runs ahead in
  // forward order and reads the poisoned (NaN) scratch of the warps behind it.
  const int cols = 256;
  DeviceBuffer<float> dx(cols), out(1);
  dx.upload(std::vector<float>(cols, 1.0f));
  ScheduleScope scope("forward");
  LAUNCH(row_sum_kernel, 1, 256)(out.data, dx.data, cols, false);
  REQUIRE(launch_error().first == cudaSuccess);
  CHECK_FALSE(out.host()[0] == float(cols));
}

constexpr int kFirstBarrierLine = __LINE__ + 3;  // the second __syncthreads is two lines below it
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

TEST_CASE("emulator: a divergent barrier is an error naming kernel, block, thread and both lines") {
  DeviceBuffer<int> out(64);
  ScheduleScope scope("forward");  // block (0,0,0) runs first
  LAUNCH(divergent_barrier_kernel, dim3(2, 1, 1), 64)(out.data);
  const auto [error, message] = launch_error();
  CHECK(error == cudaErrorLaunchFailure);
  INFO(message);
  CHECK(message.find("kernel divergent_barrier_kernel") != std::string::npos);
  CHECK(message.find("block (0,0,0)") != std::string::npos);
  CHECK(message.find("divergent __syncthreads") != std::string::npos);
  CHECK(message.find("test_emulator.cpp:" + std::to_string(kFirstBarrierLine)) != std::string::npos);
  CHECK(message.find("test_emulator.cpp:" + std::to_string(kFirstBarrierLine + 2)) != std::string::npos);
  CHECK(gum_emu::last_error_message() == message);
}

__global__ void exited_lane_kernel(float* out) {
  if (threadIdx.x % 2) return;  // odd lanes leave before the full-mask reduction
  float v = 1.0f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

__global__ void mask_disagreement_kernel(int* out) {
  const unsigned mask = threadIdx.x < 16 ? 0xffffffffu : 0x0000ffffu;
  out[threadIdx.x] = __ballot_sync(mask, 1);
}

__global__ void warp_op_against_barrier_kernel(int* out) {
  if (threadIdx.x == 3) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __any_sync(0xffffffffu, 1);
  }
}

TEST_CASE("emulator: warp collectives with an exited lane, a disagreeing mask or a lane at a barrier are errors") {
  DeviceBuffer<float> f(32);
  DeviceBuffer<int> i(32);
  LAUNCH(exited_lane_kernel, 1, 32)(f.data);
  auto [error, message] = launch_error();
  CHECK(error == cudaErrorLaunchFailure);
  CHECK(message.find("__shfl_xor_sync") != std::string::npos);
  CHECK(message.find("lane 1 has exited") != std::string::npos);

  LAUNCH(mask_disagreement_kernel, 1, 32)(i.data);
  std::tie(error, message) = launch_error();
  CHECK(error == cudaErrorLaunchFailure);
  CHECK(message.find("lanes disagree") != std::string::npos);

  LAUNCH(warp_op_against_barrier_kernel, 1, 32)(i.data);
  std::tie(error, message) = launch_error();
  CHECK(error == cudaErrorLaunchFailure);
  CHECK(message.find("waits at __syncthreads") != std::string::npos);
  CHECK(message.find("deadlock") != std::string::npos);
}

__global__ void warp_ops_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  int* o = out + threadIdx.x * 8;
  o[0] = __shfl_sync(0xffffffffu, lane * 10, 5);
  o[1] = __shfl_up_sync(0xffffffffu, lane, 3, 16);
  o[2] = __shfl_down_sync(0xffffffffu, lane, 3, 16);
  o[3] = __shfl_xor_sync(0xffffffffu, lane, 1);
  o[4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[5] = __any_sync(0xffffffffu, lane == 7);
  o[6] = __all_sync(0xffffffffu, lane < 31);
  __syncwarp();
  o[7] = lane < 16 ? __shfl_sync(0x0000ffffu, lane, 15) : __shfl_sync(0xffff0000u, lane, 16);
}

TEST_CASE("emulator: shuffles, votes and partial masks follow CUDA's definitions") {
  DeviceBuffer<int> out(64 * 8);
  LAUNCH(warp_ops_kernel, 1, 64)(out.data);
  REQUIRE(launch_error().first == cudaSuccess);
  const std::vector<int> o = out.host();
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; lane += 3) ballot |= 1u << lane;
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31, segment = lane / 16 * 16;
    INFO("thread " << t);
    CHECK(o[t * 8 + 0] == 50);
    CHECK(o[t * 8 + 1] == (lane - 3 >= segment ? lane - 3 : lane));  // below the segment: own value
    CHECK(o[t * 8 + 2] == (lane + 3 < segment + 16 ? lane + 3 : lane));
    CHECK(o[t * 8 + 3] == (lane ^ 1));
    CHECK(static_cast<unsigned>(o[t * 8 + 4]) == ballot);
    CHECK(o[t * 8 + 5] == 1);
    CHECK(o[t * 8 + 6] == 0);
    CHECK(o[t * 8 + 7] == (lane < 16 ? 15 : 16));
  }
}

__global__ void race_kernel(int* out) {
  __shared__ int slot[64];
  slot[threadIdx.x] = threadIdx.x;  // no barrier before reading a neighbour's slot
  out[threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}

TEST_CASE("emulator: schedules order blocks and fibers, shared memory is poisoned at every block start") {
  DeviceBuffer<int> out(64);
  {
    ScheduleScope scope("forward");  // thread t runs to its end before t + 1 writes: poison
    LAUNCH(race_kernel, 3, 64)(out.data);
    REQUIRE(launch_error().first == cudaSuccess);
    const std::vector<int> o = out.host();
    for (int t = 0; t < 63; ++t) CHECK(o[t] == -1);
    CHECK(o[63] == 0);
  }
  {
    ScheduleScope scope("reverse");  // every neighbour has already written
    LAUNCH(race_kernel, 3, 64)(out.data);
    REQUIRE(launch_error().first == cudaSuccess);
    const std::vector<int> o = out.host();
    for (int t = 0; t < 63; ++t) CHECK(o[t] == t + 1);
    CHECK(o[63] == -1);
  }
  CHECK_THROWS_AS(gum_emu::set_schedule("sideways"), std::invalid_argument);
}

__global__ void block_order_kernel(int* order, int* counter) {
  if (threadIdx.x == 0) order[blockIdx.x] = atomicAdd(counter, 1);
}

TEST_CASE("emulator: the random schedule permutes blocks reproducibly for a seed") {
  const int blocks = 50;
  DeviceBuffer<int> order(blocks), counter(1);
  auto run = [&](const char* spec) {
    ScheduleScope scope(spec);
    REQUIRE(cudaMemset(counter.data, 0, sizeof(int)) == cudaSuccess);
    LAUNCH(block_order_kernel, blocks, 32)(order.data, counter.data);
    REQUIRE(launch_error().first == cudaSuccess);
    return order.host();
  };
  std::vector<int> forward(blocks);
  for (int b = 0; b < blocks; ++b) forward[b] = b;
  CHECK(run("forward") == forward);
  const std::vector<int> a = run("random:11"), b = run("random:11"), c = run("random:12");
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != forward);
}

__global__ void noop_kernel(int*) {}

TEST_CASE("emulator: launch limits and fresh device memory") {
  int* p = nullptr;
  LAUNCH(noop_kernel, 1, 1025)(p);
  auto [error, message] = launch_error();
  CHECK(error == cudaErrorInvalidConfiguration);
  CHECK(message.find("noop_kernel") != std::string::npos);
  LAUNCH(noop_kernel, dim3(1, 65536), 32)(p);
  CHECK(launch_error().first == cudaErrorInvalidConfiguration);
  ::gum_emu::launch(noop_kernel, "noop_kernel", __FILE__, __LINE__, 1, 32, 49 * 1024, nullptr)(p);
  CHECK(launch_error().first == cudaErrorInvalidConfiguration);
  LAUNCH(noop_kernel, dim3(1, 65535), 1)(p);
  CHECK(launch_error().first == cudaSuccess);
  LAUNCH(noop_kernel, 1, dim3(32, 32))(p);
  CHECK(launch_error().first == cudaSuccess);

  DeviceBuffer<float> fresh(10);
  for (float v : fresh.host()) CHECK(std::isnan(v));
  CHECK(cudaGetLastError() == cudaSuccess);
}

}  // namespace

__global__ void add_one_kernel(float* x) { x[blockIdx.x * blockDim.x + threadIdx.x] += 1.0f; }

TEST_CASE("emulator: the work counters count launches, allocations and one host round trip per wait on queued work") {
  const gum_emu::Stats before = gum_emu::stats();
  DeviceBuffer<float> x(64);
  x.upload(std::vector<float>(64, 0.0f));  // a blocking copy: the host waits for it, one round trip
  LAUNCH(add_one_kernel, dim3(2), dim3(32))(x.data);
  LAUNCH(add_one_kernel, dim3(2), dim3(32))(x.data);
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);  // waits for the two launches: one round trip
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);         // nothing queued since: free
  REQUIRE(x.host() == std::vector<float>(64, 2.0f));       // a readback: one more
  const gum_emu::Stats after = gum_emu::stats();
  REQUIRE(after.allocations - before.allocations == 1);
  const auto launches = [](const gum_emu::Stats& s) {
    const auto it = s.kernels.find("add_one_kernel");
    return it == s.kernels.end() ? gum_emu::KernelCount{} : it->second;
  };
  REQUIRE(launches(after).launches - launches(before).launches == 2);
  REQUIRE(launches(after).threads - launches(before).threads == 128);
  REQUIRE(after.host_syncs - before.host_syncs == 3);
}

TEST_CASE("emulator: an asynchronous copy into page-locked memory is queued, a copy into pageable memory waits") {
  DeviceBuffer<float> x(4);
  x.upload(std::vector<float>(4, 1.0f));
  float* pinned = nullptr;
  REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), 4 * sizeof(float)) == cudaSuccess);
  const gum_emu::Stats before = gum_emu::stats();
  LAUNCH(add_one_kernel, dim3(1), dim3(4))(x.data);
  REQUIRE(cudaMemcpyAsync(pinned, x.data, 4 * sizeof(float), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
  CHECK(gum_emu::stats().host_syncs == before.host_syncs);  // queued behind the launch
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);   // the one wait, for both
  CHECK(gum_emu::stats().host_syncs == before.host_syncs + 1);
  CHECK(std::vector<float>(pinned, pinned + 4) == std::vector<float>(4, 2.0f));
  // Into pageable memory the call itself waits; part of a page-locked block is still page-locked.
  float pageable[4] = {};
  LAUNCH(add_one_kernel, dim3(1), dim3(4))(x.data);
  REQUIRE(cudaMemcpyAsync(pageable, x.data, 4 * sizeof(float), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
  CHECK(gum_emu::stats().host_syncs == before.host_syncs + 2);
  LAUNCH(add_one_kernel, dim3(1), dim3(4))(x.data);
  REQUIRE(cudaMemcpyAsync(pinned + 2, x.data, 2 * sizeof(float), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
  CHECK(gum_emu::stats().host_syncs == before.host_syncs + 2);
  CHECK(pageable[0] == 3.0f);
  CHECK(pinned[2] == 4.0f);
  REQUIRE(cudaFreeHost(pinned) == cudaSuccess);
}

// Each warp writes its half of a tile and reads the other half after only a __syncwarp: a missing
// __syncthreads. The warp whose collective completes first runs ahead, as it may on the GPU, and
// reads the other half before it is written (fresh shared memory reads as NaN).
__global__ void missing_block_barrier_kernel(float* out) {
  __shared__ float tile[64];
  tile[threadIdx.x] = float(threadIdx.x);
  __syncwarp();
  out[threadIdx.x] = tile[63 - threadIdx.x];
}

TEST_CASE("emulator: a warp past its collective runs ahead of the others, so a missing __syncthreads shows") {
  for (const char* spec : {"forward", "reverse"}) {
    INFO(spec);
    ScheduleScope schedule(spec);
    DeviceBuffer<float> out(64);
    LAUNCH(missing_block_barrier_kernel, 1, 64)(out.data);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<float> values = out.host();
    // The warp that ran ahead (warp 0 forward, warp 1 reverse) read NaN; the other the right values.
    const int ahead = std::string(spec) == "forward" ? 0 : 32, behind = 32 - ahead;
    for (int i = 0; i < 32; ++i) {
      CHECK(std::isnan(values[size_t(ahead + i)]));
      CHECK(values[size_t(behind + i)] == float(63 - behind - i));
    }
  }
}
