#pragma once
// What the emulator's own tests share: launches without the rewrite, device buffers, schedules
// and launch errors.
#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cuda_runtime.h"
#include "gum_cuda_emu/control.h"

namespace gum_emu_test {

#define LAUNCH(kernel, grid, block) ::gum_emu::launch(kernel, #kernel, __FILE__, __LINE__, grid, block)
#define LAUNCH_ON(kernel, grid, block, stream) \
  ::gum_emu::launch(kernel, #kernel, __FILE__, __LINE__, grid, block, 0, stream)

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : size(n) { REQUIRE(cudaMalloc(&data, n * sizeof(T)) == cudaSuccess); }
  ~DeviceBuffer() { cudaFree(data); }
  std::vector<T> host() const {
    std::vector<T> out(size);
    REQUIRE(cudaMemcpy(out.data(), data, size * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
  void upload(const std::vector<T>& values) {
    REQUIRE(values.size() == size);
    REQUIRE(cudaMemcpy(data, values.data(), size * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  T* data = nullptr;
  size_t size;
};

// Restores the schedule of the environment after a test that sets its own.
struct ScheduleScope {
  explicit ScheduleScope(const std::string& spec) : saved(gum_emu::schedule()) { gum_emu::set_schedule(spec); }
  ~ScheduleScope() { gum_emu::set_schedule(saved); }
  std::string saved;
};

// Restores the stream mode of the environment after a test that sets its own.
struct StreamModeScope {
  explicit StreamModeScope(const std::string& mode) : saved(gum_emu::stream_mode()) { gum_emu::set_stream_mode(mode); }
  ~StreamModeScope() { gum_emu::set_stream_mode(saved); }
  std::string saved;
};

// The error a launch left, with its message; resets the last-error state.
inline std::pair<cudaError_t, std::string> launch_error() {
  const cudaError_t error = cudaGetLastError();
  return {error, error == cudaSuccess ? std::string() : std::string(cudaGetErrorString(error))};
}

}  // namespace gum_emu_test
